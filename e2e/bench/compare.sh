#!/usr/bin/env bash
# ferrocket vs the rocketmq-rust 1.0 broker (the peer), same machine, same run, same load.
#   e2e/bench/compare.sh [seconds per run]
# Needs the peer: ../shared/tools/peer.sh install (about 15 minutes, once).
# For each flush mode (ASYNC_FLUSH, SYNC_FLUSH) it starts a fresh name server + broker of
# each system and runs `ferrocket bench produce` (1 KiB bodies): sync sends at concurrency
# 1 and 32, batches of 32 from 8 producers; then `ferrocket bench consume`.
set -euo pipefail
secs=${1:-10}
root=$(cd "$(dirname "$0")/../.." && pwd)
peer=${PEER_SH:-$root/../shared/tools/peer.sh}
bin=$root/target/release/ferrocket
cargo build --release -q -p ferrocket --manifest-path "$root/Cargo.toml"
cargo build --release -q -p ferrocket-interop --example stock_bench --manifest-path "$root/Cargo.toml"
stock=$root/target/release/examples/stock_bench
work=$(mktemp -d "${TMPDIR:-/tmp}/ferrocket-compare.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  "$peer" stop "$work/peer" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
. "$(dirname "$0")/ports.sh"

load() { # label namesrv
  local label=$1 ns=$2
  for spec in "sync 1 1" "sync 32 1" "sync 8 32"; do
    set -- $spec
    printf '%-28s c=%-3s batch=%-3s ' "$label" "$2" "$3"
    "$bin" bench --namesrv "$ns" produce --topic Bench --queues 8 --mode "$1" \
      --concurrency "$2" --batch "$3" --duration "${secs}s" 2>/dev/null | sed 's/^produce //'
  done
  if [ -x "$stock" ]; then
    for spec in "1 1" "32 1" "8 32"; do
      set -- $spec
      printf '%-28s ' "$label"
      "$stock" "$ns" StockBench "$1" "$secs" "$2" 2>/dev/null | tail -n 1
    done
  fi
  printf '%-28s consume                 ' "$label"
  FERROCKET_LOG=warn "$bin" bench --namesrv "$ns" consume --topic Bench --group compare_cg --duration "${secs}s" 2>>"$work/consume.err" | sed 's/^consume //' || true
  tail -n 3 "$work/consume.err" >&2 || true
}

for flush in ASYNC_FLUSH SYNC_FLUSH; do
  # ferrocket
  fr_start "$bin" "$work/fr-$flush" "$flush" "$work"
  load "ferrocket $flush" "127.0.0.1:$nsp"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; pids=(); sleep 1
  rm -rf "$work/fr-$flush"
  # peer
  nsp=$(freeport); bp=$(brokerport)
  "$peer" start "$nsp" "$bp" "$work/peer" "flushDiskType=$flush" >/dev/null
  load "rocketmq-rust $flush" "127.0.0.1:$nsp"
  "$peer" stop "$work/peer"; sleep 2
  rm -rf "$work/peer" || true
done
