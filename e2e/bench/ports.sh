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
