"""How long to wait between reconnect attempts: a pure function of the
attempt and a random draw, so its bounds are tested without waiting."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, base: float, maximum: float, draw: float | None = None) -> float:
    """Seconds to wait before connection attempt `attempt` (0 for the first
    after a drop): "full jitter", a uniform draw in [0, min(maximum, base × 2^attempt)],
    so that clients dropped together (a node restarting closes all of them
    with 1012) do not come back together. `draw` in [0, 1) replaces the
    random draw, for tests."""
    # Capping the exponent keeps the float finite however long it goes on.
    bound = min(maximum, base * 2.0 ** min(attempt, 62))
    return bound * (random.random() if draw is None else draw)
