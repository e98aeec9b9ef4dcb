#!/usr/bin/env bash
# `make verify-artifacts`: the artefacts that deploy are the artefacts tested. Builds the three
# functions exactly as a deploy does (scripts/sam-build.sh: `sam build`, arm64 for
# provided.al2023), checks each `.aws-sam/build/<Function>/bootstrap` is an arm64 ELF, then runs
# them under qemu-aarch64 against the bench's Lambda Runtime API, moto and a receiver that
# verifies signatures (relay-verify-artifacts, bench/src/artifacts.rs).
#
# Slow (a cross build with LTO, then emulation), so not part of `make test`; run it before
# resolving any change to dependencies or build settings. Extra arguments go to the driver.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SYSROOT=/usr/aarch64-linux-gnu

fail() { echo "verify-artifacts.sh: $*" >&2; exit 1; }

start=$(date +%s)
scripts/install-qemu.sh
scripts/sam-build.sh
built=$(date +%s)

# e_ident: "\x7fELF", class 2 (64-bit), data 1 (little-endian); e_machine at offset 18, 0xb7
# little-endian = EM_AARCH64 (183).
for fn in IngestFunction DispatcherFunction LiveAuthFunction; do
  bin=".aws-sam/build/$fn/bootstrap"
  [[ -f "$bin" ]] || fail "no artefact at $bin (sam build did not produce it)"
  ident=$(od -An -tx1 -N6 "$bin" | tr -d ' \n')
  machine=$(od -An -tx1 -j18 -N2 "$bin" | tr -d ' \n')
  [[ "$ident" == 7f454c460201 && "$machine" == b700 ]] ||
    fail "$bin is not a 64-bit little-endian arm64 ELF (header $ident, e_machine $machine)"
  echo "verify-artifacts.sh: $bin is an arm64 ELF ($(stat -c %s "$bin") bytes)"
done

echo "verify-artifacts.sh: building and running the driver (relay-verify-artifacts)"
cargo run --locked --quiet -p relay-bench --bin relay-verify-artifacts -- \
  --ingest .aws-sam/build/IngestFunction/bootstrap \
  --dispatcher .aws-sam/build/DispatcherFunction/bootstrap \
  --live-auth .aws-sam/build/LiveAuthFunction/bootstrap \
  --launcher "$(command -v qemu-aarch64) -L $SYSROOT" \
  "$@"
end=$(date +%s)
echo "verify-artifacts.sh: passed in $((end - start)) s (sam build $((built - start)) s)"
