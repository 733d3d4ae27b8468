#!/usr/bin/env bash
# Replication benchmarks: one broker vs ASYNC_MASTER and SYNC_MASTER with two slaves (three
# local processes), and the same for the rocketmq-rust 1.0 peer when it is installed; then
# a planned switchover under load, and the failover time (kill -9 of the master to the new
# master accepting a send).
#   e2e/bench/replication.sh [seconds per run]
# MODES="single ASYNC_MASTER SYNC_MASTER SYNC_MASTER_ANYACK" PEER=1 SWITCHOVER=1 FAILOVER=1
# choose what runs (SYNC_MASTER acknowledges once every in-sync slave holds a send;
# SYNC_MASTER_ANYACK once one does, allAckInSyncStateSet=false).
set -euo pipefail
secs=${1:-15}
root=$(cd "$(dirname "$0")/../.." && pwd)
peer=${PEER_SH:-$root/../shared/tools/peer.sh}
bin=$root/target/release/ferrocket
cargo build --release -q -p ferrocket --manifest-path "$root/Cargo.toml"
work=$(mktemp -d "${TMPDIR:-/tmp}/ferrocket-repl.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for d in "$work"/peer-*; do [ -d "$d" ] && "$peer" stop "$d" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
. "$(dirname "$0")/ports.sh"
export FERROCKET_LOG=warn

fr_broker() { # dir port role id epoch [extra --set ...]
  local dir=$1 port=$2 role=$3 id=$4 epoch=$5; shift 5
  mkdir -p "$dir"
  "$bin" broker --set "namesrvAddr=$NS" --set "listenPort=$port" --set brokerIP1=127.0.0.1 \
    --set brokerName=bench-a --set "storePathRootDir=$dir" --set "brokerRole=$role" \
    --set "brokerId=$id" --set "roleEpoch=$epoch" --set masterRole=SYNC_MASTER "$@" \
    > "$dir.out" 2>&1 & pids+=($!)
  for _ in $(seq 100); do grep -q '^ready' "$dir.out" 2>/dev/null && return 0; sleep 0.1; done
  echo "broker in $dir did not start" >&2; cat "$dir.out" >&2; return 1
}

max_lag() { # master addr, runs until killed; prints the largest haSlaveLagBytes seen
  local m=$1 max=0 v
  while :; do
    v=$("$bin" admin --namesrv "$NS" broker-status --broker "$m" 2>/dev/null | awk '$1=="haSlaveLagBytes"{print $2}')
    [ -n "$v" ] && [ "$v" -gt "$max" ] && max=$v && echo "$max" > "$work/lag"
    sleep 0.5
  done
}

load() { # label
  for spec in "32 1" "8 32"; do
    set -- $spec
    printf '%-34s c=%-3s batch=%-3s ' "$label" "$1" "$2"
    "$bin" bench --namesrv "$NS" produce --topic Bench --queues 8 --concurrency "$1" \
      --batch "$2" --duration "${secs}s" 2>/dev/null | sed 's/^produce //'
  done
}

fr_run() { # label mode (single|ASYNC_MASTER|SYNC_MASTER)
  label=$1; mode=$2
  local nsp; nsp=$(freeport); NS=127.0.0.1:$nsp
  "$bin" namesrv --listen "$NS" > "$work/ns.out" 2>&1 & pids+=($!)
  sleep 0.5
  local mp; mp=$(brokerport)
  local role=ASYNC_MASTER extra=()
  case $mode in
    SYNC_MASTER) role=SYNC_MASTER ;;
    # RocketMQ 4.x's rule (and RocketMQ 5's default): one slave's copy acknowledges.
    SYNC_MASTER_ANYACK) role=SYNC_MASTER; extra=(--set allAckInSyncStateSet=false) ;;
  esac
  fr_broker "$work/m" "$mp" "$role" 0 1 "${extra[@]}"
  if [ "$mode" != single ]; then
    fr_broker "$work/s1" "$(brokerport)" SLAVE 1 1 --set "haMasterAddress=127.0.0.1:$((mp + 1))"
    fr_broker "$work/s2" "$(brokerport)" SLAVE 2 1 --set "haMasterAddress=127.0.0.1:$((mp + 1))"
  fi
  sleep 2
  echo 0 > "$work/lag"
  max_lag "127.0.0.1:$mp" & local lagpid=$!
  load
  kill "$lagpid" 2>/dev/null || true
  [ "$mode" != single ] && printf '%-34s max slave lag during the runs: %s bytes\n' "$label" "$(cat "$work/lag")"
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=(); sleep 1
  rm -rf "$work/m" "$work/s1" "$work/s2"
}

for mode in ${MODES-single ASYNC_MASTER SYNC_MASTER SYNC_MASTER_ANYACK}; do
  case $mode in
    single) fr_run "ferrocket single broker" single ;;
    *) fr_run "ferrocket $mode + 2 slaves" "$mode" ;;
  esac
done

if [ "${PEER:-1}" != 1 ]; then
  :
elif [ -x "${PEER_ROOT:-$HOME/.cache/ferrocket-peer}/bin/rocketmq-broker-rust" ]; then
  # The peer as a single broker. Its slaves are not measured: the rocketmq-rust 1.0 broker
  # started with brokerRole=SLAVE exits at once here ("Service lifecycle operation
  # failed"), and a SYNC_MASTER without slaves acknowledges every send (5.x semantics,
  # inSyncReplicas=1), which would measure nothing about replication.
  nsp=$(freeport); mp=$(brokerport); NS=127.0.0.1:$nsp
  label="rocketmq-rust single broker"
  "$peer" start "$nsp" "$mp" "$work/peer-m" >/dev/null
  load
  "$peer" stop "$work/peer-m" >/dev/null 2>&1 || true
  sleep 2
  rm -rf "$work/peer-m" || true
else
  echo "rocketmq-rust peer not installed (../shared/tools/peer.sh install): peer rows skipped"
fi

if [ "${SWITCHOVER:-1}" = 1 ]; then
  # Planned switchover under 32 sync senders: `ferrocket admin switchover` fences the
  # master (brokerPermission=4), waits for the slave to catch up, moves the roles.
  nsp=$(freeport); NS=127.0.0.1:$nsp
  "$bin" namesrv --listen "$NS" > "$work/ns.out" 2>&1 & pids+=($!)
  sleep 0.5
  mp=$(brokerport); p1=$(brokerport); p2=$(brokerport)
  fr_broker "$work/m" "$mp" SYNC_MASTER 0 1
  fr_broker "$work/s1" "$p1" SLAVE 1 1 --set "haMasterAddress=127.0.0.1:$((mp + 1))"
  fr_broker "$work/s2" "$p2" SLAVE 2 1 --set "haMasterAddress=127.0.0.1:$((mp + 1))"
  sleep 2
  "$bin" bench --namesrv "$NS" produce --topic Switch --queues 8 --concurrency 32 \
    --duration 8s > "$work/sw-bench.out" 2>&1 & bpid=$!
  sleep 3
  t0=$(date +%s%N)
  "$bin" admin --namesrv "$NS" --json switchover --broker-name bench-a --to "127.0.0.1:$p1" > "$work/sw.json"
  t1=$(date +%s%N)
  wait "$bpid" || true
  echo "switchover under c=32 sync sends: command $(( (t1 - t0) / 1000000 )) ms; $(cat "$work/sw.json")"
  echo "switchover bench: $(grep -h -A1 '^produce' "$work/sw-bench.out" | tr -s ' \n' ' ')"
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=(); sleep 1
  rm -rf "$work/m" "$work/s1" "$work/s2"
fi

[ "${FAILOVER:-1}" = 1 ] || exit 0
# Failover: SYNC_MASTER + 2 slaves under a send loop; kill -9 the master; promote the slave
# with the highest confirmed offset and re-point the other (`ferrocket admin role`, the
# requests the operator sends); time until a send to the new master is acknowledged.
nsp=$(freeport); NS=127.0.0.1:$nsp
"$bin" namesrv --listen "$NS" > "$work/ns.out" 2>&1 & pids+=($!)
sleep 0.5
mp=$(brokerport); p1=$(brokerport); p2=$(brokerport)
fr_broker "$work/m" "$mp" SYNC_MASTER 0 1
mpid=${pids[-1]}
fr_broker "$work/s1" "$p1" SLAVE 1 1 --set "haMasterAddress=127.0.0.1:$((mp + 1))"
fr_broker "$work/s2" "$p2" SLAVE 2 1 --set "haMasterAddress=127.0.0.1:$((mp + 1))"
sleep 2
"$bin" bench --namesrv "$NS" produce --topic Fail --queues 8 --concurrency 32 --duration 3s >/dev/null 2>&1 || true
t0=$(date +%s%N)
kill -9 "$mpid"
c1=$("$bin" admin --namesrv "$NS" broker-status --broker "127.0.0.1:$p1" | awk '$1=="confirmOffset"{print $2}')
c2=$("$bin" admin --namesrv "$NS" broker-status --broker "127.0.0.1:$p2" | awk '$1=="confirmOffset"{print $2}')
if [ "$c1" -ge "$c2" ]; then best=$p1; other=$p2; oid=2; else best=$p2; other=$p1; oid=1; fi
"$bin" admin --namesrv "$NS" role --broker "127.0.0.1:$best" --role master --epoch 2 >/dev/null
"$bin" admin --namesrv "$NS" role --broker "127.0.0.1:$other" --role slave --master "127.0.0.1:$best" \
  --master-ha "127.0.0.1:$((best + 1))" --broker-id "$oid" --epoch 2 >/dev/null
until "$bin" admin --namesrv "$NS" send --topic Fail --body after-failover 2>/dev/null | grep -q SEND_OK; do sleep 0.05; done
t1=$(date +%s%N)
echo "failover: kill -9 of the master to an acknowledged send on the new master: $(( (t1 - t0) / 1000000 )) ms (operator grace not included; add failover.unreadyGraceSeconds)"
