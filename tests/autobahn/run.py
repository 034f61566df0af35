"""Runs the Autobahn|Testsuite cases 1-7, 9 and 10 (kosoku drives Autobahn's
own case files) against an echo endpoint and checks the verdicts.

usage: run.py ws://127.0.0.1:PORT/echo EXPECTED.json [--write]

Exit 0 when every case is OK, NON-STRICT or INFORMATIONAL (for the message
exchange and the close) and every case of EXPECTED.json ran; verdicts that
differ from EXPECTED.json are reported. With --write, EXPECTED.json is
(re)written from this run first.
"""

import asyncio
import json
import os
import sys
import time

from kosoku import FailureError, run_fuzzingclient

CASES = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*"]
ACCEPTED = {"OK", "NON-STRICT", "INFORMATIONAL"}


def verdict(value):
    """`Behavior.NON_STRICT` -> `NON-STRICT`."""
    return str(value).split(".")[-1].replace("_", "-")


async def main(url, expected_path, write):
    started = time.monotonic()
    try:
        results = await run_fuzzingclient(url, CASES, concurrency=2)
    except FailureError as failure:
        results = failure.results
    seen = {r.case_id: [verdict(r.behavior), verdict(r.behavior_close)] for r in results}
    elapsed = time.monotonic() - started
    bad = {case: v for case, v in seen.items() if not set(v) <= ACCEPTED}
    counts = {}
    for behavior, _ in seen.values():
        counts[behavior] = counts.get(behavior, 0) + 1
    print(f"autobahn: {len(seen)} cases in {elapsed:.1f} s: {counts}")
    if write:
        with open(expected_path, "w") as out:
            json.dump(dict(sorted(seen.items(), key=lambda kv: [int(p) for p in kv[0].split(".")])), out, indent=1)
            out.write("\n")
    with open(expected_path) as f:
        expected = json.load(f)
    for case, v in sorted(bad.items()):
        print(f"autobahn: case {case}: {v[0]} (close: {v[1]})")
    missing = sorted(set(expected) - set(seen))
    for case in missing:
        print(f"autobahn: case {case}: expected {expected[case]}, but it did not run")
    # A few cases land on OK or NON-STRICT depending on timing (e.g. 4.1.3:
    # whether the echo of a message goes out before the close for a bad
    # frame that follows it). Both pass; a flip is reported, not failed.
    for case in sorted(set(seen) & set(expected)):
        if seen[case] != expected[case]:
            print(f"autobahn: note: case {case}: expected {expected[case]}, got {seen[case]}")
    return 1 if bad or missing else 0


if __name__ == "__main__":
    code = asyncio.run(main(sys.argv[1], sys.argv[2], "--write" in sys.argv[3:]))
    # The verdicts are in. Leave without the interpreter's finalization:
    # under load, kosoku's native part sometimes aborts there (SIGABRT, no
    # message, after every case ran and was checked), which failed the run
    # for nothing about the server.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
