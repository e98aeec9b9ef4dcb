#!/usr/bin/env bash
# The project's one test command (`make test`; `.ci/run` runs exactly this).
# Installs the pinned Python tools, then: formatting, clippy, every Rust test (the
# integration tests start their own moto SQS servers on free loopback ports), the
# three template checks, and the Node tests of the examples (npm ci from the lockfile).
# Any failure fails the run; nothing is skipped.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# Tests kill their moto servers when they finish; this catches any left by a crashed test of
# this run only (marked through the environment they inherit), not another run's or a bench's.
export RELAY_TEST_RUN="$$"
cleanup() {
  local pid
  for pid in $(pgrep -f "$ROOT/.venv/bin/moto_server" 2>/dev/null); do
    if tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx "RELAY_TEST_RUN=$RELAY_TEST_RUN"; then
      kill "$pid" 2>/dev/null || true
    fi
  done
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }

step "tools (pinned Python packages into .venv)"
scripts/tools.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked

step "template checks"
scripts/check-template.sh

step "examples (Node): sender and receiver route, against the relay binary built above"
cargo build --locked -p relay-cli
RELAY_BIN="$ROOT/target/debug/relay" examples/run-tests.sh
