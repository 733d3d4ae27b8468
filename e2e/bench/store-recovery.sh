#!/usr/bin/env bash
# Recovery time after kill -9 with about 1 GiB of CommitLog.
#   e2e/bench/store-recovery.sh [GIB] [flush]
# Appends 1 KiB messages with `ferrocket bench store` until GIB GiB are acknowledged,
# SIGKILLs it, then opens the directory with `ferrocket bench recover` (which reports
# the scan, truncation, re-dispatch and time). Needs a release build.
set -euo pipefail
gib=${1:-1}
flush=${2:-async}
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$root/target/release/ferrocket
[ -x "$bin" ] || cargo build --release -p ferrocket --manifest-path "$root/Cargo.toml"
dir=$(mktemp -d "${TMPDIR:-/tmp}/ferrocket-recovery.XXXXXX")
trap 'rm -rf "$dir"' EXIT
want=$(( gib * 1024 * 1024 ))   # messages of 1 KiB
"$bin" bench store --dir "$dir" --keep --flush "$flush" --duration 600s --appenders 16 \
  2> "$dir.progress" &
pid=$!
while kill -0 "$pid" 2>/dev/null; do
  total=$(tail -n 1 "$dir.progress" 2>/dev/null | awk '{print $NF}')
  if [ -n "$total" ] && [ "$total" -ge "$want" ] 2>/dev/null; then
    kill -9 "$pid"; break
  fi
  sleep 0.2
done
wait "$pid" 2>/dev/null || true
echo "killed after $(tail -n 1 "$dir.progress" | awk '{print $NF}') acknowledged messages"
rm -f "$dir.progress"
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
"$bin" bench recover --dir "$dir"
