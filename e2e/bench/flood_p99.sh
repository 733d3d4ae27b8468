#!/bin/bash
# Issue 14 figure: a well-behaved producer's p99 alone, then during flood_loop.py.
# Usage: flood_p99.sh FERROCKET_BINARY LABEL   (writes into ${TMPDIR:-/tmp}/flood-LABEL)
set -u
BIN=$1; L=$2; D=${TMPDIR:-/tmp}/flood-$L; rm -rf "$D"; mkdir -p "$D"
HERE=$(cd "$(dirname "$0")" && pwd)
NS=$((20000+RANDOM%5000)); BP=$((NS+10000))
"$BIN" dev --data-dir "$D/data" --namesrv-port $NS --broker-port $BP > "$D/broker.log" 2>&1 &
P=$!
for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$BP) 2>/dev/null && break; sleep 0.2; done
sleep 3
"$BIN" bench produce --namesrv 127.0.0.1:$NS --concurrency 4 --duration 3s >/dev/null 2>&1
"$BIN" bench produce --namesrv 127.0.0.1:$NS --concurrency 4 --duration 8s --json > "$D/quiet.json" 2>/dev/null
python3 "$HERE/flood_loop.py" $BP 14 &
F=$!
sleep 3
"$BIN" bench produce --namesrv 127.0.0.1:$NS --concurrency 4 --duration 8s --json > "$D/flood.json" 2>/dev/null
grep VmHWM /proc/$P/status
wait $F
kill $P; wait $P 2>/dev/null
python3 - "$D" "$L" <<'PY'
import json, sys
d, label = sys.argv[1], sys.argv[2]
for k in ('quiet', 'flood'):
    j = json.load(open(f'{d}/{k}.json'))
    print(label, k, round(j['msgs_per_sec']), 'msg/s, errors', j['errors'], j['latency_ms'])
PY
