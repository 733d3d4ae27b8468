#!/usr/bin/env bash
# Plain ACL's cost, same run: one broker with aclEnable=false, then one with
# aclEnable=true (every request signed by the bench and checked: HMAC-SHA1 over the
# header values and the body), `ferrocket bench produce` at c=32 sync sends and 8 x
# batches of 32, 1 KiB bodies.
#   e2e/bench/acl.sh [seconds per run]      FLUSH=ASYNC_FLUSH|SYNC_FLUSH  SPECS="32,1 8,32"
set -euo pipefail
secs=${1:-10}
. "$(dirname "$0")/lib.sh" acl
flush=${FLUSH:-ASYNC_FLUSH}
make_acl

echo "flushDiskType=$flush, $(nproc) cores, $(date -u +%F)"
for acl in false true; do
  nsp=$(freeport); NS=127.0.0.1:$nsp
  "$bin" namesrv --listen "$NS" > "$work/ns.out" 2>&1 & pids+=($!)
  sleep 0.5
  port=$(brokerport)
  "$bin" broker --set "namesrvAddr=$NS" --set "listenPort=$port" --set brokerIP1=127.0.0.1 \
    --set brokerName=bench-a --set "storePathRootDir=$work/store-$acl" --set "flushDiskType=$flush" \
    --set "aclEnable=$acl" --set "aclFile=$work/plain_acl.yml" > "$work/b-$acl.out" 2>&1 & pids+=($!)
  for _ in $(seq 100); do grep -q '^ready' "$work/b-$acl.out" 2>/dev/null && break; sleep 0.1; done
  sleep 2
  sign=()
  [ "$acl" = true ] && sign=(--access-key bench-admin --secret-file "$work/secret")
  for spec in ${SPECS:-32,1 8,32}; do
    set -- ${spec/,/ }
    printf 'aclEnable=%-5s c=%-3s batch=%-3s ' "$acl" "$1" "$2"
    "$bin" bench --namesrv "$NS" produce --topic Bench --queues 8 --concurrency "$1" \
      --batch "$2" --duration "${secs}s" "${sign[@]}" 2>/dev/null | sed 's/^produce //'
  done
  refused=$(grep -c "ACL refused" "$work/b-$acl.out" || true)
  echo "aclEnable=$acl: requests refused by the ACL during the run: $refused"
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=(); sleep 1
done
