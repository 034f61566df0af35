#!/usr/bin/env bash
# The Python client's test command: builds roomcast (unless ROOMCAST_BIN
# names a binary), installs the package with its test tools, type-checks it
# and runs its stories against the real broker.
#
# Usage: clients/python/test.sh           (from anywhere)
#        ROOMCAST_BIN=/path/to/roomcast clients/python/test.sh
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"

run() {
    echo "+ $*"
    "$@"
}

if [[ -z ${ROOMCAST_BIN:-} ]]; then
    run cargo build --bin roomcast
    export ROOMCAST_BIN=$repo/target/debug/roomcast
fi

# pip, also where Debian marks the system Python as externally managed
# (PEP 668), as scripts/test.sh does.
flags=(-q --disable-pip-version-check)
stdlib=$(python3 -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')
if [[ -z ${VIRTUAL_ENV:-} && -e $stdlib/EXTERNALLY-MANAGED ]]; then
    flags+=(--break-system-packages)
fi
run python3 -m pip install "${flags[@]}" -e "clients/python[test]"

cd clients/python
run python3 -m mypy
# pytest exits 5 when it collects no tests: that is a failure here too.
run python3 -m pytest -q
