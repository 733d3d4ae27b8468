#!/usr/bin/env bash
# ACL's cost, same run: one broker with no ACL (`off`), one with plain ACL 1.0
# (`v1`: aclEnable=true, every request signed by the bench and checked: HMAC-SHA1 over
# the header values and the body) and one with ACL 2.0 (`v2`: authenticationEnabled
# and authorizationEnabled, the bench signing as a Normal user whose policy allows
# Pub and Create on Topic:Bench), `ferrocket bench produce` at c=32 sync sends and
# 8 x batches of 32, 1 KiB bodies.
#   e2e/bench/acl.sh [seconds per run]      FLUSH=ASYNC_FLUSH|SYNC_FLUSH  SPECS="32,1 8,32"
#   MODES="off v1 v2"
set -euo pipefail
secs=${1:-10}
. "$(dirname "$0")/lib.sh" acl
flush=${FLUSH:-ASYNC_FLUSH}
make_acl

echo "flushDiskType=$flush, $(nproc) cores, $(date -u +%F)"
printf 'bench-app-secret-1' > "$work/app-secret"
printf 'root-secret-1' > "$work/root-secret"
for mode in ${MODES:-off v1 v2}; do
  nsp=$(freeport); NS=127.0.0.1:$nsp
  "$bin" namesrv --listen "$NS" > "$work/ns.out" 2>&1 & pids+=($!)
  sleep 0.5
  port=$(brokerport)
  conf=(--set "aclEnable=$([ "$mode" = v1 ] && echo true || echo false)" --set "aclFile=$work/plain_acl.yml")
  [ "$mode" = v2 ] && conf+=(--set authenticationEnabled=true --set authorizationEnabled=true
    --set 'initAuthenticationUser={"username":"root","password":"root-secret-1"}')
  "$bin" broker --set "namesrvAddr=$NS" --set "listenPort=$port" --set brokerIP1=127.0.0.1 \
    --set brokerName=bench-a --set "storePathRootDir=$work/store-$mode" --set "flushDiskType=$flush" \
    "${conf[@]}" > "$work/b-$mode.out" 2>&1 & pids+=($!)
  for _ in $(seq 100); do grep -q '^ready' "$work/b-$mode.out" 2>/dev/null && break; sleep 0.1; done
  sleep 2
  sign=()
  case $mode in
    v1) sign=(--access-key bench-admin --secret-file "$work/secret") ;;
    v2)
      root=(admin --namesrv "$NS" --access-key root --secret-file "$work/root-secret" auth)
      "$bin" "${root[@]}" user-create --username bench-app --password-file "$work/app-secret" >/dev/null
      "$bin" "${root[@]}" acl-create --subject User:bench-app --resources Topic:Bench \
        --actions Pub,Create --decision Allow >/dev/null
      sign=(--access-key bench-app --secret-file "$work/app-secret") ;;
  esac
  for spec in ${SPECS:-32,1 8,32}; do
    set -- ${spec/,/ }
    printf 'acl=%-4s c=%-3s batch=%-3s ' "$mode" "$1" "$2"
    "$bin" bench --namesrv "$NS" produce --topic Bench --queues 8 --concurrency "$1" \
      --batch "$2" --duration "${secs}s" "${sign[@]}" 2>/dev/null | sed 's/^produce //'
  done
  refused=$(grep -c "refused a request" "$work/b-$mode.out" || true)
  echo "acl=$mode: requests refused by the ACL during the run: $refused"
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=(); sleep 1
done
