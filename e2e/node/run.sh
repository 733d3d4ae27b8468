#!/usr/bin/env bash
# The Node.js `ali-ons` client (unmodified, from the npm registry) against real ferrocket
# processes: sends, a tag consumer and an SQL92 consumer.
# Installs it under target/ (reused across runs). Where npm cannot install it, it prints
# one line saying so and exits 0; every other failure fails the run.
#   e2e/node/run.sh [path/to/ferrocket]   (default: target/debug/ferrocket, built if missing)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BIN="${1:-$ROOT/target/debug/ferrocket}"
DIR="${NODE_CLIENT_DIR:-$ROOT/target/node-client}"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "e2e/node: skipped: node and npm are not installed here"
  exit 0
fi
if [ ! -d "$DIR/node_modules/ali-ons" ] || [ ! -d "$DIR/node_modules/urllib" ]; then
  mkdir -p "$DIR"
  if ! (cd "$DIR" && npm install --no-audit --no-fund --silent ali-ons@3.12.0 urllib@2 >/dev/null 2>&1); then
    echo "e2e/node: skipped: cannot install ali-ons with npm here"
    exit 0
  fi
fi
[ -x "$BIN" ] || cargo build -q -p ferrocket --bin ferrocket --manifest-path "$ROOT/Cargo.toml"

work=$(mktemp -d "${TMPDIR:-/tmp}/ferrocket-node.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work" || true
}
trap cleanup EXIT
FERROCKET_LOG=warn "$BIN" namesrv --listen 127.0.0.1:0 --kv-config-path "$work/kv.json" > "$work/ns.out" 2> "$work/ns.err" & pids+=($!)
for _ in $(seq 100); do grep -q '^ready' "$work/ns.out" 2>/dev/null && break; sleep 0.1; done
ns=$(awk '/^ready/ {print $3; exit}' "$work/ns.out")
FERROCKET_LOG=warn "$BIN" broker --set "namesrvAddr=$ns" --set listenPort=0 \
  --set brokerIP1=127.0.0.1 --set "storePathRootDir=$work/store" --set enablePropertyFilter=true \
  --set diskSpaceCleanForciblyRatio=100 --set diskSpaceWarningLevelRatio=100 \
  > "$work/broker.out" 2> "$work/broker.err" & pids+=($!)
for _ in $(seq 100); do grep -q '^ready' "$work/broker.out" 2>/dev/null && break; sleep 0.1; done
grep -q '^ready' "$work/broker.out" || { echo "e2e/node: the broker did not start"; cat "$work/broker.err"; exit 1; }
"$BIN" admin --namesrv "$ns" topic create --topic OnsTopic --queues 4 >/dev/null

if ! NODE_PATH="$DIR/node_modules" node "$ROOT/e2e/node/ons_client.js" "$ns" 2> "$work/client.err" | grep -v '^\[' ; then
  echo "--- client log"; tail -n 20 "$work/client.err"
  echo "--- broker log"; tail -n 30 "$work/broker.err"
  exit 1
fi
