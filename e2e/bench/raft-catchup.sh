#!/usr/bin/env bash
# Raft (DLedger mode): how fast a member that was down catches up, same run, two ways:
#   log       snapshotThreshold=100000000: the leader sends it every entry it missed
#   snapshot  snapshotThreshold=100: the log is purged behind snapshots, the member is
#             sent the snapshot and fetches the CommitLog bytes it lacks (FETCH)
# A follower is killed (-9), `ferrocket bench produce` writes for SECS seconds
# (c=32, batches of 32, 1 KiB), the follower restarts, and the time from its restart
# to holding the leader's CommitLog end is printed with the bytes it had to take.
#   e2e/bench/raft-catchup.sh [seconds of load]      MODES="log snapshot"
set -euo pipefail
secs=${1:-10}
. "$(dirname "$0")/lib.sh" catchup

fr_broker() { # dir port [extra --set ...]
  local dir=$1 port=$2; shift 2
  mkdir -p "$dir"
  "$bin" broker --set "namesrvAddr=$NS" --set "listenPort=$port" --set brokerIP1=127.0.0.1 \
    --set brokerName=bench-a --set "storePathRootDir=$dir" "$@" >> "$dir.out" 2>&1 & pids+=($!)
  for _ in $(seq 200); do grep -q '^ready' "$dir.out" 2>/dev/null && return 0; sleep 0.05; done
  echo "broker in $dir did not start" >&2; cat "$dir.out" >&2; return 1
}

status() { # member field
  "$bin" admin --namesrv "$NS" broker-status --broker "127.0.0.1:${rp[$1]}" 2>/dev/null \
    | awk -v f="$2" '$1==f{print $2}'
}

leader() {
  for _ in $(seq 400); do
    for i in 0 1 2; do
      [ -n "${rpid[$i]:-}" ] || continue
      [ "$(status "$i" dLegerState)" = Leader ] && [ "$(status "$i" brokerId)" = 0 ] \
        && { echo "$i"; return 0; }
    done
    sleep 0.05
  done
  return 1
}

echo "$(nproc) cores, $(date -u +%F), ${secs}s of load while the follower is down"
for mode in ${MODES:-log snapshot}; do
  case $mode in log) th=100000000 ;; snapshot) th=100 ;; esac
  nsp=$(freeport); NS=127.0.0.1:$nsp
  "$bin" namesrv --listen "$NS" > "$work/ns.out" 2>&1 & pids+=($!)
  sleep 0.5
  peers=""; for i in 0 1 2; do peers+="n$i-127.0.0.1:$(freeport);"; done
  rp=(); rpid=(); args=()
  for i in 0 1 2; do
    rp[$i]=$(brokerport)
    args[$i]="--set enableDLegerCommitLog=true --set dLegerGroup=bench-a --set dLegerPeers=${peers%;} --set dLegerSelfId=n$i --set snapshotThreshold=$th"
    # shellcheck disable=SC2086
    fr_broker "$work/n$i" "${rp[$i]}" ${args[$i]}
    rpid[$i]=${pids[-1]}
  done
  l=$(leader)
  f=$(( (l + 1) % 3 ))
  "$bin" admin --namesrv "$NS" topic create --topic Bench --queues 8 >/dev/null 2>&1 || true
  sleep 3
  kill -9 "${rpid[$f]}"; rpid[$f]=""
  had=$(du -sb "$work/n$f/commitlog" | cut -f1)
  "$bin" bench --namesrv "$NS" produce --topic Bench --queues 8 --concurrency 8 --batch 32 \
    --duration "${secs}s" 2>/dev/null | sed "s/^produce /$mode: load: /"
  target=$(status "$l" commitLogMaxOffset)
  t0=$(date +%s%N)
  # shellcheck disable=SC2086
  fr_broker "$work/n$f" "${rp[$f]}" ${args[$f]}
  rpid[$f]=${pids[-1]}
  deadline=$(( $(date +%s) + ${DEADLINE:-300} ))
  until [ "$(status "$f" commitLogMaxOffset)" -ge "$target" ] 2>/dev/null; do
    if [ "$(date +%s)" -gt "$deadline" ]; then
      echo "$mode: the follower did not catch up within ${DEADLINE:-300}s (at $(status "$f" commitLogMaxOffset) of $target)" >&2
      sed 's/\x1b\[[0-9;]*m//g' "$work/n$f.out" | grep -v "^ready" | tail -20 >&2
      exit 1
    fi
    sleep 0.05
  done
  t1=$(date +%s%N)
  ms=$(( (t1 - t0) / 1000000 ))
  mib=$(( target / 1048576 ))
  echo "$mode: the restarted follower holds the leader's end ($mib MiB; it had $(( had / 1048576 )) MiB on disk) $ms ms after its restart (process start included): $(( target / 1048576 * 1000 / (ms > 0 ? ms : 1) )) MiB/s"
  grep -h "emptying\|snapshot" "$work/n$f.out" | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-160 | tail -2 || true
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=(); sleep 1
  rm -rf "$work"/n0 "$work"/n1 "$work"/n2 "$work"/*.out
done
