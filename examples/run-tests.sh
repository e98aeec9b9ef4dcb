#!/usr/bin/env bash
# Tests of the two drop-in examples (chat-whatsapp sender, chatbot-atimo route), including the
# sender against the real relay: build it first with `cargo build -p relay-cli` (or set RELAY_BIN).
# The queue-outage test also needs moto: `make tools` (or set MOTO_SERVER).
# Installs the pinned npm dependencies (npm ci) only when node_modules is missing or
# package-lock.json changed since the last install.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "examples/run-tests.sh: node and npm are required (Node.js 20.10 or newer): install Node.js, then run this again" >&2
  exit 1
fi
if ! node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=10)?0:1)'; then
  echo "examples/run-tests.sh: Node.js $(node --version) is too old: the tests need 20.10 or newer" >&2
  exit 1
fi

lock_hash="$(node -e 'const c=require("crypto"),f=require("fs");process.stdout.write(c.createHash("sha256").update(f.readFileSync("package-lock.json")).digest("hex"))')"
stamp="node_modules/.package-lock.sha256"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$lock_hash" ]]; then
  npm ci --no-audit --no-fund --ignore-scripts
  printf '%s' "$lock_hash" > "$stamp"
fi

npm test
