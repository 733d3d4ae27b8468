#!/usr/bin/env bash
# Raft (DLedger mode) benchmarks, same run: one broker, SYNC_MASTER + 2 slaves, and a
# 3-node Raft group (all ferrocket processes on this machine, sharing its cores with the
# load): `ferrocket bench produce` at concurrency 32 (sync sends) and 8 × batches of 32,
# 1 KiB bodies; then the time from `kill -9` of the Raft leader to the first send the new
# leader acknowledges (RUNS times, median printed).
#   e2e/bench/raft.sh [seconds per run]      FLUSH=ASYNC_FLUSH|SYNC_FLUSH  RUNS=5
#   MODES="single SYNC_MASTER RAFT"  SPECS="32,1 8,32" (concurrency,batch)  ELECTION=1
#   HANDOVER=1: also time `admin raft transfer-leader` and SIGTERM of the leader
#   PAUSE=2ms: each producer pauses this long after each send (`bench produce --pause`)
set -euo pipefail
secs=${1:-15}
. "$(dirname "$0")/lib.sh" raft
flush=${FLUSH:-ASYNC_FLUSH}

fr_broker() { # dir port [extra --set ...]; the pid is the last of `pids`
  local dir=$1 port=$2; shift 2
  mkdir -p "$dir"
  "$bin" broker --set "namesrvAddr=$NS" --set "listenPort=$port" --set brokerIP1=127.0.0.1 \
    --set brokerName=bench-a --set "storePathRootDir=$dir" --set "flushDiskType=$flush" "$@" \
    > "$dir.out" 2>&1 & pids+=($!)
  for _ in $(seq 100); do grep -q '^ready' "$dir.out" 2>/dev/null && return 0; sleep 0.1; done
  echo "broker in $dir did not start" >&2; cat "$dir.out" >&2; return 1
}

start_ns() {
  local nsp; nsp=$(freeport); NS=127.0.0.1:$nsp
  "$bin" namesrv --listen "$NS" > "$work/ns.out" 2>&1 & pids+=($!)
  sleep 0.5
}

# The Raft group: ports in rp[], broker pids in rpid[].
raft_group() {
  local peers="" i
  rp=(); rpid=()
  for i in 0 1 2; do peers+="n$i-127.0.0.1:$(freeport);"; done
  for i in 0 1 2; do
    rp[$i]=$(brokerport)
    fr_broker "$work/n$i" "${rp[$i]}" --set enableDLegerCommitLog=true \
      --set dLegerGroup=bench-a --set "dLegerPeers=${peers%;}" --set "dLegerSelfId=n$i"
    rpid[$i]=${pids[-1]}
  done
}

# The index of the Raft member registered as master (brokerId 0), waiting for one.
raft_leader() {
  local i
  for _ in $(seq 200); do
    for i in "$@"; do
      "$bin" admin --namesrv "$NS" broker-status --broker "127.0.0.1:${rp[$i]}" 2>/dev/null \
        | awk '$1=="dLegerState"{s=$2} $1=="brokerId"{id=$2} END{exit !(s=="Leader" && id==0)}' \
        && { echo "$i"; return 0; }
    done
    sleep 0.05
  done
  return 1
}

load() { # label
  for spec in ${SPECS:-32,1 8,32}; do
    set -- ${spec/,/ }
    printf '%-30s c=%-3s batch=%-3s ' "$label" "$1" "$2"
    "$bin" bench --namesrv "$NS" produce --topic Bench --queues 8 --concurrency "$1" \
      --batch "$2" --duration "${secs}s" ${PAUSE:+--pause "$PAUSE"} 2>/dev/null | sed 's/^produce //'
  done
}

stop_all() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true # (bash reports the killed jobs on stderr)
  pids=(); sleep 1
  rm -rf "$work"/m "$work"/s1 "$work"/s2 "$work"/n0 "$work"/n1 "$work"/n2
}

echo "flushDiskType=$flush, $(nproc) cores, $(date -u +%F)"
for mode in ${MODES-single SYNC_MASTER RAFT}; do
  start_ns
  case $mode in
    single)
      label="single broker"
      fr_broker "$work/m" "$(brokerport)" ;;
    SYNC_MASTER)
      label="SYNC_MASTER + 2 slaves"
      mp=$(brokerport)
      fr_broker "$work/m" "$mp" --set brokerRole=SYNC_MASTER --set brokerId=0 --set roleEpoch=1
      fr_broker "$work/s1" "$(brokerport)" --set brokerRole=SLAVE --set brokerId=1 \
        --set roleEpoch=1 --set "haMasterAddress=127.0.0.1:$((mp + 1))"
      fr_broker "$work/s2" "$(brokerport)" --set brokerRole=SLAVE --set brokerId=2 \
        --set roleEpoch=1 --set "haMasterAddress=127.0.0.1:$((mp + 1))" ;;
    RAFT)
      label="Raft, 3 nodes"
      raft_group
      raft_leader 0 1 2 >/dev/null ;;
  esac
  sleep 2
  load
  if [ "$mode" = RAFT ]; then
    l=$(raft_leader 0 1 2)
    "$bin" admin --namesrv "$NS" broker-status --broker "127.0.0.1:${rp[$l]}" 2>/dev/null \
      | awk '$1 ~ /^dLeger(LastLogIndex|CommittedOffset|Term)$/ {printf "%s=%s ", $1, $2} END{print ""}'
    echo "disk of the leader: $(du -sh "$work/n$l/commitlog" | cut -f1) CommitLog, $(du -sh "$work/n$l/dledger" | cut -f1) entry log (dledger/)"
  fi
  stop_all
done

if [ "${ELECTION:-1}" = 1 ]; then
times=()
for run in $(seq "${RUNS:-5}"); do
  start_ns
  raft_group
  l=$(raft_leader 0 1 2)
  "$bin" admin --namesrv "$NS" topic create --topic Fail --queues 4 >/dev/null 2>&1 || true
  sleep 4 # the followers copy the topic from the leader (metadata sync)
  kill -9 "${rpid[$l]}"
  t0=$(date +%s%N)
  others=(); for i in 0 1 2; do [ "$i" != "$l" ] && others+=("$i"); done
  n=$(raft_leader "${others[@]}")
  t1=$(date +%s%N)
  until "$bin" admin --namesrv "$NS" send --topic Fail --body after 2>/dev/null | grep -q SEND_OK; do
    sleep 0.02
  done
  t2=$(date +%s%N)
  echo "election run $run: kill -9 of n$l -> n$n leads (registered, brokerId 0) $(( (t1 - t0) / 1000000 )) ms, first acknowledged send $(( (t2 - t0) / 1000000 )) ms"
  times+=($(( (t2 - t0) / 1000000 )))
  stop_all
done
printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END{print "election: median kill -9 to acknowledged send " a[int((NR+1)/2)] " ms over " NR " runs"}'
fi

# Leadership moved on purpose: `admin raft transfer-leader` and SIGTERM of the leader
# (it hands over before it stops), each timed to the first send the new leader
# acknowledges; compare with the kill -9 figure above.
[ "${HANDOVER:-1}" = 1 ] || exit 0
first_ack() { # t0 (ns): ms from t0 to the first SEND_OK
  until "$bin" admin --namesrv "$NS" send --topic Fail --body after 2>/dev/null | grep -q SEND_OK; do
    sleep 0.02
  done
  echo $(( ($(date +%s%N) - $1) / 1000000 ))
}
tt=(); st=()
for run in $(seq "${RUNS:-5}"); do
  start_ns
  raft_group
  l=$(raft_leader 0 1 2)
  "$bin" admin --namesrv "$NS" topic create --topic Fail --queues 4 >/dev/null 2>&1 || true
  sleep 4
  to=$(( (l + 1) % 3 ))
  t0=$(date +%s%N)
  "$bin" admin --namesrv "$NS" raft transfer-leader --broker-name bench-a --to "n$to" >/dev/null
  tt+=($(first_ack "$t0"))
  sleep 2 # past the new leader's lease
  l=$(raft_leader 0 1 2)
  t0=$(date +%s%N)
  kill -TERM "${rpid[$l]}"
  st+=($(first_ack "$t0"))
  echo "handover run $run: transfer-leader -> first acknowledged send ${tt[-1]} ms; SIGTERM of the leader -> ${st[-1]} ms"
  stop_all
done
med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
echo "handover: median transfer-leader to acknowledged send $(med "${tt[@]}") ms, SIGTERM of the leader to acknowledged send $(med "${st[@]}") ms over ${#tt[@]} runs"

