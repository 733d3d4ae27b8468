#!/usr/bin/env bash
# Two builds of ferrocket measured in the same run, interleaved row by row, so a change
# can be checked for regressions against the commit before it:
#   e2e/bench/before-after.sh OLD_BIN NEW_BIN [seconds per run]
# Build each, e.g.:
#   git worktree add /tmp/old <commit>; (cd /tmp/old && CARGO_TARGET_DIR=/tmp/t cargo build --release -p ferrocket)
# Rows: the store alone (`bench store`, 1 KiB bodies, ASYNC/SYNC_FLUSH, 1/16/64 appenders)
# and a broker (`dev`-style name server + broker, `bench produce`, c=1, c=32, batches of
# 32 from 8 producers) under ASYNC_FLUSH and SYNC_FLUSH. Load from NEW_BIN's bench client
# against both brokers, so only the broker differs.
set -euo pipefail
old=$1 new=$2 secs=${3:-5}
work=$(mktemp -d "${TMPDIR:-/tmp}/ferrocket-ba.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
. "$(dirname "$0")/ports.sh"

echo "## store (bench store, ${secs}s each; old then new per row)"
for flush in async sync; do
  for a in 1 16 64; do
    for which in old new; do
      bin=${!which}
      printf '%-4s ' "$which"
      "$bin" bench store --dir "$work/s" --flush "$flush" --appenders "$a" --duration "${secs}s" 2>/dev/null
      rm -rf "$work/s"
    done
  done
done

echo "## broker (bench produce from the new client, ${secs}s each; old then new per row)"
for flush in ASYNC_FLUSH SYNC_FLUSH; do
  for spec in "1 1" "32 1" "8 32"; do
    set -- $spec
    for which in old new; do
      bin=${!which}
      fr_start "$bin" "$work/b" "$flush" "$work"
      printf '%-4s %-11s c=%-3s batch=%-3s ' "$which" "$flush" "$1" "$2"
      "$new" bench --namesrv "127.0.0.1:$nsp" produce --topic Bench --queues 8 --mode sync \
        --concurrency "$1" --batch "$2" --duration "${secs}s" 2>/dev/null | sed 's/^produce //'
      for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
      for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
      pids=()
      rm -rf "$work/b"
    done
  done
done
