#!/usr/bin/env bash
# Install the pinned Python tools (moto_server, sam, cfn-lint, aws-sam-translator)
# into ./.venv from infra/requirements-tools.txt (a full `pip freeze` lock).
#
# Idempotent: .venv/.tools-stamp holds the sha256 of the requirements file; when it
# matches and the tools are there, the script exits at once.
# Needs Python 3.11 to 3.14, not 3.14.1 (the lock's requires-python: networkx 3.6.1 >=3.11,
# !=3.14.1; cfn-lint 1.58.0 <3.15); checked first, before anything is installed.
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
NEED="Python 3.11 to 3.14 (not 3.14.1)"
command -v "$PYTHON" >/dev/null 2>&1 || fail "'$PYTHON' not found (need $NEED; set PYTHON=...)"

py_version() { "$1" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null || echo "of unknown version"; }
py_fits() {
  "$1" -c 'import sys; v = sys.version_info[:3]; sys.exit(0 if (3, 11) <= v[:2] <= (3, 14) and v != (3, 14, 1) else 1)' 2>/dev/null
}
# The interpreter pip will run under: the existing .venv's, else $PYTHON.
if [[ -x "$VENV/bin/python" ]]; then
  py_fits "$VENV/bin/python" ||
    fail ".venv has Python $(py_version "$VENV/bin/python"); the pinned tools need $NEED: delete .venv and run again (PYTHON=python3.12 scripts/tools.sh to pick the interpreter)"
else
  py_fits "$PYTHON" ||
    fail "'$PYTHON' is Python $(py_version "$PYTHON"); the pinned tools need $NEED: set PYTHON=python3.12 (or another in that range)"
fi

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
