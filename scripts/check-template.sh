#!/usr/bin/env bash
# Validate template.yaml three ways, offline (no AWS account, no Docker):
#   1. sam validate --lint                (SAM CLI's translator check + cfn-lint on the SAM template)
#   2. cfn-lint template.yaml             (all rules, SAM resources checked against SAM schemas)
#   3. SAM transform -> cfn-lint          (lints the plain CloudFormation that is really deployed:
#                                          catches bad Runtime, FunctionResponseTypes, ScalingConfig
#                                          values etc. that 1 and 2 miss inside SAM resources)
# Any warning fails the check as well as any error.
# Usage: scripts/check-template.sh [TEMPLATE]      (default: template.yaml at the repo root)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
TEMPLATE="${1:-$ROOT/template.yaml}"

for t in sam cfn-lint python; do
  if [[ ! -x "$VENV/bin/$t" ]]; then
    echo "check-template: $VENV/bin/$t not found: run scripts/tools.sh" >&2
    exit 1
  fi
done
[[ -f "$TEMPLATE" ]] || { echo "check-template: no template at $TEMPLATE" >&2; exit 1; }

# Offline and quiet: a region is required, credentials are never used, no telemetry.
export AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-testing}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-testing}"
export SAM_CLI_TELEMETRY=0 SAM_CLI_CONTACT_SERVER=0

# The transformed template is kept (gitignored) so error line numbers can be looked up.
out="$ROOT/.aws-sam/check-template/transformed.json"
mkdir -p "$(dirname "$out")"
failed=()

echo "== [1/3] sam validate --lint"
if ! "$VENV/bin/sam" validate --lint --region us-east-1 --template-file "$TEMPLATE"; then
  failed+=("sam validate --lint")
fi

echo "== [2/3] cfn-lint $(basename "$TEMPLATE")"
if ! "$VENV/bin/cfn-lint" -- "$TEMPLATE"; then
  failed+=("cfn-lint")
fi

echo "== [3/3] SAM transform (scripts/sam_transform.py) + cfn-lint on the result"
if "$VENV/bin/python" "$ROOT/scripts/sam_transform.py" "$TEMPLATE" "$out" --region us-east-1 2>&1; then
  if ! "$VENV/bin/cfn-lint" -- "$out"; then
    failed+=("cfn-lint on the transformed template (${out#"$ROOT"/})")
  fi
else
  failed+=("SAM transform")
fi

if ((${#failed[@]})); then
  echo "check-template: FAILED: $(IFS=,; echo "${failed[*]}" | sed 's/,/, /g')" >&2
  exit 1
fi
echo "check-template: ok (3/3 checks passed)"
