#!/usr/bin/env bash
# `make bench`: build the release binaries (timed), make sure moto is installed, then run the
# whole suite. Results: bench-results/results.md and results.json. Extra arguments go to the
# harness (e.g. `bench/run.sh --quick` for a smoke run of the harness itself).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/tools.sh >/dev/null   # moto_server for the ingest cold start (idempotent, pinned)

echo "bench: cargo build --release (ingest, dispatcher, live-auth, relay, bench binaries)"
start_ns=$(date +%s%N)
cargo build --release --locked -p ingest -p dispatcher -p live-auth -p relay-cli -p relay-bench
build_ms=$(( ($(date +%s%N) - start_ns) / 1000000 ))

exec target/release/relay-bench --build-seconds "$((build_ms / 1000)).$(printf %03d $((build_ms % 1000)))" "$@"
