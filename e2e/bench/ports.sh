# Shared by the benchmark scripts: free loopback ports.
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
# A broker port with port-2 (VIP channel) and port+1 (HA) free too.
brokerport() {
  while :; do
    p=$(freeport)
    python3 - "$p" <<'PY' && { echo "$p"; return; }
import socket, sys
p = int(sys.argv[1])
for q in (p - 2, p + 1):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", q))
    except OSError:
        sys.exit(1)
    finally:
        s.close()
PY
  done
}
# Starts a ferrocket name server and broker: fr_start BIN STORE_DIR FLUSH_DISK_TYPE LOGDIR.
# Sets nsp (the name server's port), appends both pids to the caller's `pids` array and
# returns once the broker printed its ready line (or after 10 s).
fr_start() {
  local bin=$1 store=$2 flush=$3 logs=$4 bp
  nsp=$(freeport); bp=$(brokerport)
  "$bin" namesrv --listen "127.0.0.1:$nsp" > "$logs/ns.out" 2>&1 & pids+=($!)
  mkdir -p "$store"
  FERROCKET_LOG=warn "$bin" broker --set "namesrvAddr=127.0.0.1:$nsp" --set "listenPort=$bp" \
    --set "brokerIP1=127.0.0.1" --set "storePathRootDir=$store" --set "flushDiskType=$flush" \
    > "$logs/broker.out" 2>&1 & pids+=($!)
  for _ in $(seq 100); do grep -q '^ready' "$logs/broker.out" 2>/dev/null && return 0; sleep 0.1; done
}
