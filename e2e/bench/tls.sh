#!/usr/bin/env bash
# TLS's cost, same run: a name server and a broker in tls.server.mode=permissive (one
# port serves both), `ferrocket bench produce` plain and then over TLS, at c=32 sync
# sends and 8 x batches of 32, 1 KiB bodies. The certificate is made with openssl.
#   e2e/bench/tls.sh [seconds per run]      SPECS="32,1 8,32"
set -euo pipefail
secs=${1:-10}
. "$(dirname "$0")/lib.sh" tls
make_certs || { echo "e2e/bench/tls.sh: skipped: no openssl to make a certificate"; exit 0; }
nsp=$(freeport); NS=127.0.0.1:$nsp
"$bin" namesrv --listen "$NS" --tls-mode permissive --tls-cert "$work/cert.pem" \
  --tls-key "$work/key.pem" > "$work/ns.out" 2>&1 & pids+=($!)
sleep 0.5
port=$(brokerport)
"$bin" broker --set "namesrvAddr=$NS" --set "listenPort=$port" --set brokerIP1=127.0.0.1 \
  --set brokerName=bench-a --set "storePathRootDir=$work/store" \
  --set tls.server.mode=permissive --set "tls.server.certPath=$work/cert.pem" \
  --set "tls.server.keyPath=$work/key.pem" > "$work/b.out" 2>&1 & pids+=($!)
for _ in $(seq 100); do grep -q '^ready' "$work/b.out" 2>/dev/null && break; sleep 0.1; done
sleep 2
echo "$(nproc) cores, $(date -u +%F), one broker, tls.server.mode=permissive"
for round in 1 2; do
  for tls in plain tls; do
    extra=()
    [ "$tls" = tls ] && extra=(--tls-trust "$work/ca.pem")
    for spec in ${SPECS:-32,1 8,32}; do
      set -- ${spec/,/ }
      printf 'round %s %-5s c=%-3s batch=%-3s ' "$round" "$tls" "$1" "$2"
      "$bin" bench --namesrv "$NS" produce --topic Bench --queues 8 --concurrency "$1" \
        --batch "$2" --duration "${secs}s" "${extra[@]}" 2>/dev/null | sed 's/^produce //'
    done
  done
done
# The handshake: a request on each of 500 new connections, plain then TLS, against a
# request on one reused connection (bench connect prints the difference of medians).
for round in 1 2; do
  for tls in plain tls; do
    extra=()
    [ "$tls" = tls ] && extra=(--tls-trust "$work/ca.pem")
    printf 'round %s ' "$round"
    "$bin" bench --namesrv "$NS" connect --addr "127.0.0.1:$port" --count 500 "${extra[@]}"
  done
done
