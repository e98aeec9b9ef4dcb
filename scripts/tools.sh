#!/usr/bin/env bash
# Install the pinned Python tools (moto_server, sam, cfn-lint, aws-sam-translator)
# into ./.venv from infra/requirements-tools.txt (a full `pip freeze` lock).
#
# Idempotent: .venv/.tools-stamp holds the sha256 of the requirements file; when it
# matches and the tools are there, the script exits at once.
# Usage: scripts/tools.sh            (PYTHON=python3.11 scripts/tools.sh to pick the interpreter)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
REQ="$ROOT/infra/requirements-tools.txt"
STAMP="$VENV/.tools-stamp"
PYTHON="${PYTHON:-python3}"
TOOLS=(moto_server sam cfn-lint)

fail() { echo "tools.sh: FAILED: $*" >&2; exit 1; }

[[ -f "$REQ" ]] || fail "missing $REQ"
command -v "$PYTHON" >/dev/null 2>&1 || fail "'$PYTHON' not found (need Python >= 3.9; set PYTHON=...)"

want="$(sha256sum "$REQ" | cut -d' ' -f1)"

tools_present() {
  local t
  for t in "${TOOLS[@]}"; do [[ -x "$VENV/bin/$t" ]] || return 1; done
}

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]] && tools_present; then
  echo "tools.sh: .venv up to date ($(basename "$REQ") sha256 ${want:0:12})"
  exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "tools.sh: creating $VENV with $("$PYTHON" --version 2>&1)"
  "$PYTHON" -m venv "$VENV" || fail "'$PYTHON -m venv $VENV' (on Debian: apt-get install python3-venv)"
fi

rm -f "$STAMP"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

echo "tools.sh: installing $(grep -c '==' "$REQ") pinned packages from infra/requirements-tools.txt"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
if ! "$VENV/bin/python" -m pip install --quiet -r "$REQ" >"$log" 2>&1; then
  tail -n 20 "$log" | cut -c1-300 >&2
  fail "pip install -r infra/requirements-tools.txt (last lines of pip's output above; is PyPI reachable?)"
fi

for t in "${TOOLS[@]}"; do
  [[ -x "$VENV/bin/$t" ]] || fail "$VENV/bin/$t missing after install"
done
"$VENV/bin/python" -m pip check >"$log" 2>&1 || { cat "$log" >&2; fail "pip check: inconsistent dependencies"; }

echo "$want" >"$STAMP"
echo "tools.sh: ok: $("$VENV/bin/sam" --version), cfn-lint $("$VENV/bin/cfn-lint" --version | awk '{print $2}'), moto $("$VENV/bin/python" -c 'import moto; print(moto.__version__)')"
