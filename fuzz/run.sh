#!/usr/bin/env bash
# `make fuzz`: runs every fuzz target (or those named) for FUZZ_SECONDS each, one after the
# other on one core, with cargo-fuzz and libFuzzer on the stable toolchain (`-s none`: the
# sanitizers need nightly; Rust code is memory-safe, the findings are panics and failed
# assertions, built with overflow checks and debug assertions on).
#
#   fuzz/run.sh [target...]          fuzz (default: all five); new inputs go to target/fuzz/work
#   fuzz/run.sh merge [target...]    minimise committed corpus + new inputs back into fuzz/corpus
#   fuzz/run.sh repro <target> <file>  run one input (a crash artifact) through its target
#
# A crash stops the run with the input saved under fuzz/libfuzzer/artifacts/<target>/ and the
# command to reproduce it. Installs its pinned cargo-fuzz if missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CARGO_FUZZ_VERSION=0.13.2
FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
ALL_TARGETS=(ingest_event ingest_batch signature retry_after sqs_records)
FUZZ_DIR=fuzz/libfuzzer
TARGET_DIR=target/fuzz
WORK="$TARGET_DIR/work"

dict_for() {
    case "$1" in
    signature) echo fuzz/dict/signature.dict ;;
    retry_after) echo fuzz/dict/retry_after.dict ;;
    *) echo fuzz/dict/envelope.dict ;;
    esac
}

ensure_tools() {
    if ! command -v c++ >/dev/null; then
        echo "fuzz: no C++ compiler (libFuzzer is C++): apt-get install g++" >&2
        exit 1
    fi
    if [[ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
        echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION (cargo install, about a minute)"
        cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
    fi
    # The fuzz project is its own workspace (so `cargo test --workspace` never builds
    # libFuzzer); it starts from the main lockfile so it fuzzes the versions the relay ships.
    cp Cargo.lock "$FUZZ_DIR/Cargo.lock"
}

cargo_fuzz() {
    local command="$1"
    shift
    cargo fuzz "$command" --sanitizer none --debug-assertions \
        --fuzz-dir "$FUZZ_DIR" --target-dir "$TARGET_DIR" "$@"
}

run_target() {
    local target="$1"
    mkdir -p "$WORK/$target"
    echo "== fuzz $target for ${FUZZ_SECONDS}s"
    # New inputs go to the first directory (scratch); the committed corpus is read only.
    # Without -jobs/-fork libFuzzer runs in this one process: one core.
    cargo_fuzz run "$target" "$WORK/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$FUZZ_SECONDS" -dict="$(dict_for "$target")" \
        -max_len=8192 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        2>&1 | tee "$WORK/$target.log" | grep -E '^(#[0-9]+\s+DONE|stat::|INFO: (Seed|Loaded))|panicked|ERROR' &&:
    local fuzz_status="${PIPESTATUS[0]}"
    # A crash leaves an artifact and a libFuzzer ERROR; any other failure (a build error, an
    # unknown target) is a failure too, never a pass.
    if grep -q 'ERROR: libFuzzer' "$WORK/$target.log"; then
        sed -n '/panicked/,/^$/p' "$WORK/$target.log" | head -20
        grep -A2 'Reproduce with' "$WORK/$target.log" || true
        echo "fuzz: $target found a failure; full log: $WORK/$target.log" >&2
        exit 1
    fi
    if [[ "$fuzz_status" != 0 ]]; then
        tail -20 "$WORK/$target.log" >&2
        echo "fuzz: cargo fuzz run $target failed (exit $fuzz_status); full log: $WORK/$target.log" >&2
        exit 1
    fi
}

merge_target() {
    local target="$1" fresh="$WORK/$target.merged"
    rm -rf "$fresh"
    mkdir -p "$fresh" "$WORK/$target"
    echo "== merge $target"
    # -merge=1 keeps, from the later directories, only inputs that add coverage to the first;
    # -use_counters=0 counts an edge once, not by hit-count buckets: a corpus of hundreds.
    cargo_fuzz run "$target" "$fresh" "fuzz/corpus/$target" "$WORK/$target" -- \
        -merge=1 -use_counters=0 -max_len=8192 2>&1 | tee "$WORK/$target.merge.log" |
        grep -E '^MERGE-OUTER: [0-9]+ new' &&:
    local merge_status="${PIPESTATUS[0]}"
    # The committed corpus is replaced only by a merge that finished.
    if [[ "$merge_status" != 0 ]]; then
        tail -20 "$WORK/$target.merge.log" >&2
        echo "fuzz: merge of $target failed (exit $merge_status); fuzz/corpus/$target left as it was" >&2
        exit 1
    fi
    # Seeds are kept whatever their coverage, under their names: they are the readable
    # examples of each input. libFuzzer names what it keeps by SHA-1; drop those copies.
    local seed
    for seed in fuzz/corpus/"$target"/seed-*; do
        rm -f "$fresh/$(sha1sum "$seed" | cut -d' ' -f1)"
        cp "$seed" "$fresh/"
    done
    rm -rf "fuzz/corpus/$target"
    mv "$fresh" "fuzz/corpus/$target"
    echo "   fuzz/corpus/$target: $(find "fuzz/corpus/$target" -type f | wc -l) inputs, $(du -sh "fuzz/corpus/$target" | cut -f1)"
}

case "${1:-}" in
merge)
    shift
    targets=("$@")
    [[ $# -gt 0 ]] || targets=("${ALL_TARGETS[@]}")
    ensure_tools
    for target in "${targets[@]}"; do merge_target "$target"; done
    ;;
repro)
    [[ $# -eq 3 ]] || { echo "usage: fuzz/run.sh repro <target> <input file>" >&2; exit 2; }
    ensure_tools
    cargo_fuzz run "$2" "$3"
    ;;
*)
    ensure_tools
    targets=("$@")
    [[ $# -gt 0 ]] || targets=("${ALL_TARGETS[@]}")
    cargo_fuzz build
    for target in "${targets[@]}"; do run_target "$target"; done
    echo "fuzz: no failure in ${#targets[@]} target(s); new inputs in $WORK (fuzz/run.sh merge keeps the useful ones)"
    ;;
esac
