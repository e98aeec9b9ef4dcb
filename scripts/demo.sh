#!/usr/bin/env bash
# `make run`: the whole relay on this machine, no AWS account, no Docker.
# Starts `relay receive` (a dev receiver on :3002, unless WEBHOOK_URL points elsewhere, e.g.
# your Next.js app), `relay local` (ingest on :9000 + in-process queue + dispatcher), sends one
# event of each type, then keeps running until Ctrl-C so you can send more.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# Development-only secrets (never use these in production). Override by exporting them.
export INGEST_SECRETS="${INGEST_SECRETS:-whsec_ZGV2LWluZ2VzdC1zZWNyZXQtY2hhbmdlLW1lIQ==}"
export WEBHOOK_SECRETS="${WEBHOOK_SECRETS:-whsec_ZGV2LXdlYmhvb2stc2VjcmV0LWNoYW5nZS1tZSE=}"
LISTEN="${LISTEN:-127.0.0.1:9000}"
RECEIVER_LISTEN="${RECEIVER_LISTEN:-127.0.0.1:3002}"

echo "== building relay (first build takes a few minutes)"
cargo build --locked -p relay-cli --quiet
RELAY="$ROOT/target/debug/relay"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

if [[ -z "${WEBHOOK_URL:-}" ]]; then
  export WEBHOOK_URL="http://$RECEIVER_LISTEN/api/webhook/chat-whatsapp"
  "$RELAY" receive --listen "$RECEIVER_LISTEN" &
  pids+=($!)
fi
"$RELAY" local --listen "$LISTEN" &
pids+=($!)

# Wait for ingest to answer.
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/${LISTEN%:*}/${LISTEN##*:}") 2>/dev/null && break
  sleep 0.1
done

echo
echo "== sending one event of each type (relay send signs them like chat-whatsapp)"
for event in status qr message; do
  "$RELAY" send --url "http://$LISTEN/events" --event "$event"
done

cat <<MSG

== the relay is running; Ctrl-C stops it
   send more:      $RELAY send --url http://$LISTEN/events --event message
   queue depths:   curl http://$LISTEN/local/queue
   try retries:    stop it, then RETRY_SCHEDULE=2,4,8 with 'relay receive --fail-with 500 --fail-times 2'
MSG
wait
