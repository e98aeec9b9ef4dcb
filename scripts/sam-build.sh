#!/usr/bin/env bash
# Builds the three functions (ingest, dispatcher, live-auth) the way a deploy does — `sam build` with cargo-lambda, arm64 for
# provided.al2023 — and reports the artefact sizes (binary and zip). Slow, so not part of
# `make test`; run it before `sam deploy` or to measure.
#
# Installs cargo-lambda and zig (pinned, infra/requirements-build.txt) into .venv-build and the
# SAM CLI (scripts/tools.sh) into .venv. Needs the Rust target aarch64-unknown-linux-gnu
# (`rustup target add aarch64-unknown-linux-gnu`; rustup fetches it from its own server).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD_VENV="$ROOT/.venv-build"
REQ="$ROOT/infra/requirements-build.txt"

fail() { echo "sam-build.sh: $*" >&2; exit 1; }

scripts/tools.sh
want="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [[ ! -f "$BUILD_VENV/.stamp" || "$(cat "$BUILD_VENV/.stamp")" != "$want" ]]; then
  echo "sam-build.sh: installing $(grep -c '==' "$REQ") pinned build tools into .venv-build"
  python3 -m venv "$BUILD_VENV" || fail "python3 -m venv failed (on Debian: apt-get install python3-venv)"
  "$BUILD_VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ" || fail "pip install -r $REQ failed"
  echo "$want" > "$BUILD_VENV/.stamp"
fi
if ! rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu; then
  echo "sam-build.sh: adding the Rust target aarch64-unknown-linux-gnu"
  rustup target add aarch64-unknown-linux-gnu || fail "rustup target add aarch64-unknown-linux-gnu failed"
fi

export PATH="$BUILD_VENV/bin:$ROOT/.venv/bin:$PATH"
export SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
echo "sam-build.sh: $(cargo lambda --version), zig $(python -m ziglang version 2>/dev/null || echo '?'), $(sam --version)"

start=$(date +%s)
sam build --template-file template.yaml
end=$(date +%s)

echo
echo "sam build took $((end - start)) s"
printf '%-22s %12s %12s\n' function "bootstrap" "zip"
for fn in IngestFunction DispatcherFunction LiveAuthFunction; do
  bin=".aws-sam/build/$fn/bootstrap"
  [[ -f "$bin" ]] || fail "no artefact at $bin"
  zip_size=$("$ROOT/.venv/bin/python" - "$bin" <<'PY'
import io, sys, zipfile
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
    z.write(sys.argv[1], "bootstrap")
print(len(buf.getvalue()))
PY
)
  printf '%-22s %12s %12s\n' "$fn" "$(stat -c %s "$bin")" "$zip_size"
  file "$bin" 2>/dev/null | sed 's/^/  /' || true
done
