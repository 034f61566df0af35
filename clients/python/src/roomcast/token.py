"""Where the client's token comes from, and when to ask for the next one.

A token is either given once (`token=`) or fetched by a `get_token`
callback: at connect, before it expires (then sent to the live connection
with `refresh`), and again after the server refused or expired it (HTTP
401, close 4001). The token is never logged; its `exp` is read without
verifying the signature, only to plan the refresh.
"""

from __future__ import annotations

import base64
import binascii
import inspect
import json
import time
from collections.abc import Awaitable, Callable

from .errors import RoomcastError, TokenUnavailable, Unauthorized

#: A callback that returns a fresh token, plain or async. Raise
#: `Unauthorized` from it to make the client stop for good.
TokenSource = Callable[[], Awaitable[str] | str]


def expiry(token: str) -> float | None:
    """The token's `exp` (seconds since the Unix epoch), if it is a JWT that has one."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, (int, float)) and not isinstance(exp, bool) else None


class TokenKeeper:
    """The current token and the way to a new one."""

    def __init__(self, token: str | None, source: TokenSource | None) -> None:
        self._token = token
        self._source = source

    @property
    def current(self) -> str | None:
        return self._token

    @property
    def refreshable(self) -> bool:
        return self._source is not None

    def replace(self, token: str) -> None:
        self._token = token

    async def fresh(self) -> str:
        """A new token from the source; raises `Unauthorized` without one."""
        if self._source is None:
            raise Unauthorized("the token was refused and there is no get_token to ask for another", None)
        try:
            got = self._source()
            token = await got if inspect.isawaitable(got) else got
        except RoomcastError:
            raise
        except Exception as failed:
            raise TokenUnavailable(f"get_token failed: {failed!r}") from failed
        if not isinstance(token, str) or not token:
            raise Unauthorized("get_token returned no token", None)
        return token

    async def for_connect(self, refused_before: bool) -> str | None:
        """The token to open a connection with: a new one from the source
        when there is none, when the last was refused, or when it is about
        to expire; the one given otherwise."""
        if self._source is not None:
            exp = expiry(self._token) if self._token else None
            if self._token is None or refused_before or (exp is not None and exp - time.time() < 1.0):
                self._token = await self.fresh()
        return self._token

    def refresh_delay(self, margin: float) -> float | None:
        """Seconds until the current token should be replaced: `margin`
        before its `exp`, or halfway through what is left if that is later
        (a token shorter-lived than the margin is not refreshed at once);
        None when it cannot be refreshed or has no `exp`."""
        if self._source is None or self._token is None:
            return None
        exp = expiry(self._token)
        if exp is None:
            return None
        left = exp - time.time()
        return max(0.0, left - margin, left / 2)
