#!/usr/bin/env bash
# ACL and TLS, alone and together, same run: a broker with aclEnable=false and one with
# aclEnable=true, both in tls.server.mode=permissive (so one port serves plain and TLS
# clients), each loaded plain and over TLS by `ferrocket bench produce` at c=32 sync
# sends and 8 x batches of 32, 1 KiB bodies (signing when ACL is on).
#   e2e/bench/acl-tls.sh [seconds per run]      SPECS="32,1 8,32"
set -euo pipefail
secs=${1:-10}
. "$(dirname "$0")/lib.sh" acl-tls
make_certs || { echo "e2e/bench/acl-tls.sh: skipped: no openssl to make a certificate"; exit 0; }
make_acl
echo "$(nproc) cores, $(date -u +%F), ASYNC_FLUSH, tls.server.mode=permissive"
for acl in false true; do
  nsp=$(freeport); NS=127.0.0.1:$nsp
  "$bin" namesrv --listen "$NS" --tls-mode permissive --tls-cert "$work/cert.pem" \
    --tls-key "$work/key.pem" > "$work/ns.out" 2>&1 & pids+=($!)
  sleep 0.5
  port=$(brokerport)
  "$bin" broker --set "namesrvAddr=$NS" --set "listenPort=$port" --set brokerIP1=127.0.0.1 \
    --set brokerName=bench-a --set "storePathRootDir=$work/store-$acl" \
    --set "aclEnable=$acl" --set "aclFile=$work/plain_acl.yml" \
    --set tls.server.mode=permissive --set "tls.server.certPath=$work/cert.pem" \
    --set "tls.server.keyPath=$work/key.pem" > "$work/b-$acl.out" 2>&1 & pids+=($!)
  for _ in $(seq 100); do grep -q '^ready' "$work/b-$acl.out" 2>/dev/null && break; sleep 0.1; done
  sleep 2
  sign=()
  [ "$acl" = true ] && sign=(--access-key bench-admin --secret-file "$work/secret")
  for tls in plain tls; do
    extra=()
    [ "$tls" = tls ] && extra=(--tls-trust "$work/ca.pem")
    for spec in ${SPECS:-32,1 8,32}; do
      set -- ${spec/,/ }
      printf 'acl=%-5s %-5s c=%-3s batch=%-3s ' "$acl" "$tls" "$1" "$2"
      "$bin" bench --namesrv "$NS" produce --topic Bench --queues 8 --concurrency "$1" \
        --batch "$2" --duration "${secs}s" "${sign[@]}" "${extra[@]}" 2>/dev/null | sed 's/^produce //'
    done
  done
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=(); sleep 1
done
