#!/usr/bin/env bash
# Issue 12 figures, ferrocket vs the rocketmq-rust 1.0 broker (the peer), same run:
#   e2e/bench/client-families.sh [seconds per run] [timer messages]
# 1. transactional sends (half message + oneway commit) at concurrency 32;
# 2. SQL92 pull throughput with 1 message in 10 selected, against a tag filter selecting
#    the same 1 in 10 (ferrocket needs enablePropertyFilter=true; so does the peer);
# 3. timer messages: N (default 1,000,000) scheduled 60 s ahead over the run, then
#    consumed: delivery lateness percentiles past the due time, and the broker's RSS.
# Needs the peer for the comparison rows: ../shared/tools/peer.sh install.
set -euo pipefail
secs=${1:-20}
timers=${2:-1000000}
root=$(cd "$(dirname "$0")/../.." && pwd)
peer=${PEER_SH:-$root/../shared/tools/peer.sh}
bin=$root/target/release/ferrocket
cargo build --release -q -p ferrocket --manifest-path "$root/Cargo.toml"
work=$(mktemp -d "${TMPDIR:-/tmp}/ferrocket-families.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  "$peer" stop "$work/peer" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
. "$(dirname "$0")/ports.sh"

fr_up() { # extra broker settings
  nsp=$(freeport); bp=$(brokerport)
  "$bin" namesrv --listen "127.0.0.1:$nsp" --kv-config-path "$work/kv.json" > "$work/ns.out" 2>&1 & pids+=($!)
  mkdir -p "$work/fr"
  local sets=()
  for kv in "$@"; do sets+=(--set "$kv"); done
  FERROCKET_LOG=warn "$bin" broker --set "namesrvAddr=127.0.0.1:$nsp" --set "listenPort=$bp" \
    --set "brokerIP1=127.0.0.1" --set "storePathRootDir=$work/fr" "${sets[@]}" \
    > "$work/broker.out" 2>&1 & pids+=($!)
  broker_pid=$!
  for _ in $(seq 100); do grep -q '^ready' "$work/broker.out" 2>/dev/null && return 0; sleep 0.1; done
}
fr_down() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; pids=(); sleep 1; rm -rf "$work/fr"; }
peer_up() { nsp=$(freeport); bp=$(brokerport); "$peer" start "$nsp" "$bp" "$work/peer" "$@" >/dev/null; broker_pid=$(cat "$work/peer/broker.pid"); }
peer_down() { "$peer" stop "$work/peer" || true; sleep 2; rm -rf "$work/peer"; }
have_peer() { local d="${PEER_ROOT:-$HOME/.cache/ferrocket-peer}/bin"; [ -x "$d/rocketmq-broker-rust" ] && [ -x "$d/rocketmq-namesrv-rust" ]; }
b() { "$bin" bench --namesrv "127.0.0.1:$nsp" "$@" 2>/dev/null | sed 's/^\(produce\|consume\) //'; }

tx() {
  printf '%-16s transactional c=32   ' "$1"; b produce --topic TxBench --transaction --concurrency 32 --duration "${secs}s"
  printf '%-16s plain         c=32   ' "$1"; b produce --topic PlainBench --concurrency 32 --duration "${secs}s"
}
filters() {
  b produce --topic FilterBench --filter-fields --concurrency 16 --duration "${secs}s" >/dev/null
  printf '%-16s consume SQL92 a = 3 (3 s of a backlog)   ' "$1"; b consume --topic FilterBench --group sql_cg --sql 'a = 3' --duration 3s
  printf '%-16s consume tag t3 (3 s of a backlog)       ' "$1"; b consume --topic FilterBench --group tag_cg --tags t3 --duration 3s
  printf '%-16s consume all (3 s of a backlog)         ' "$1"; b consume --topic FilterBench --group all_cg --duration 3s
}
timer_run() {
  # N messages over 60 s, each due 60 s after its send; consume for 130 s.
  local rate=$((timers / 60))
  printf '%-16s schedule %d (60 s ahead)   ' "$1" "$timers"
  b produce --topic TimerBench --deliver-after 60s --concurrency 32 --size 128 --duration 60s
  printf '%-16s after scheduling: VmRSS %s kB, RssAnon %s kB\n' "$1" "$(awk '/VmRSS/ {print $2}' /proc/$broker_pid/status)" "$(awk '/RssAnon/ {print $2}' /proc/$broker_pid/status)"
  printf '%-16s deliver + consume      ' "$1"; b consume --topic TimerBench --group timer_cg --duration 75s
  printf '%-16s after delivery: VmRSS %s kB, RssAnon %s kB\n' "$1" "$(awk '/VmRSS/ {print $2}' /proc/$broker_pid/status)" "$(awk '/RssAnon/ {print $2}' /proc/$broker_pid/status)"
  : "$rate"
}

fr_up; tx ferrocket; fr_down
have_peer && { peer_up; tx rocketmq-rust; peer_down; }
fr_up enablePropertyFilter=true; filters ferrocket; fr_down
have_peer && { peer_up enablePropertyFilter=true; filters rocketmq-rust; peer_down; }
if [ "$timers" -gt 0 ]; then
  fr_up; timer_run ferrocket; fr_down
  have_peer && { peer_up timerWheelEnable=true; timer_run rocketmq-rust; peer_down; }
fi
