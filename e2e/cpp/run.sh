#!/usr/bin/env bash
# The official C++ client (librocketmq 2.x, which the legacy Python, Go, PHP and Node.js
# clients wrap) against real ferrocket processes, through the unmodified `rocketmq` 0.4.4
# wheel from the Python package index (it bundles librocketmq.so; its Producer,
# PushConsumer and PullConsumer are thin ctypes wrappers).
#
# Creates its own venv (under target/, reused across runs). Where pip cannot install the
# wheel it prints one line saying so and exits 0; every other failure fails the run.
#   e2e/cpp/run.sh [path/to/ferrocket]   (default: target/debug/ferrocket, built if missing)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BIN="${1:-$ROOT/target/debug/ferrocket}"
VENV="${CPP_CLIENT_VENV:-$ROOT/target/cpp-client-venv}"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import rocketmq.client' >/dev/null 2>&1; then
  rm -rf "$VENV"
  if ! "$PY" -m venv "$VENV" >/dev/null 2>&1 ||
     ! "$VENV/bin/pip" install -q "rocketmq==0.4.4" >/dev/null 2>&1 ||
     ! "$VENV/bin/python" -c 'import rocketmq.client' >/dev/null 2>&1; then
    echo "e2e/cpp: skipped: cannot install the rocketmq 0.4.4 wheel (librocketmq) with pip here"
    exit 0
  fi
fi
[ -x "$BIN" ] || cargo build -q -p ferrocket --bin ferrocket --manifest-path "$ROOT/Cargo.toml"

work=$(mktemp -d "${TMPDIR:-/tmp}/ferrocket-cpp.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work" || true
}
trap cleanup EXIT
# Every port picked by the OS, read back from the ready lines.
FERROCKET_LOG=warn "$BIN" namesrv --listen 127.0.0.1:0 > "$work/ns.out" 2> "$work/ns.err" & pids+=($!)
for _ in $(seq 100); do grep -q '^ready' "$work/ns.out" 2>/dev/null && break; sleep 0.1; done
ns=$(awk '/^ready/ {print $3; exit}' "$work/ns.out")
FERROCKET_LOG=warn "$BIN" broker --set "namesrvAddr=$ns" --set listenPort=0 \
  --set brokerIP1=127.0.0.1 --set "storePathRootDir=$work/store" \
  --set diskSpaceCleanForciblyRatio=100 --set diskSpaceWarningLevelRatio=100 \
  > "$work/broker.out" 2> "$work/broker.err" & pids+=($!)
for _ in $(seq 100); do grep -q '^ready' "$work/broker.out" 2>/dev/null && break; sleep 0.1; done
grep -q '^ready' "$work/broker.out" || { echo "e2e/cpp: the broker did not start"; cat "$work/broker.err"; exit 1; }

if ! "$VENV/bin/python" "$ROOT/e2e/cpp/cpp_client.py" "$ns"; then
  echo "--- broker log"; tail -n 30 "$work/broker.err"
  exit 1
fi

# A second name server and broker with RocketMQ's plain ACL on (e2e/cpp/cpp_acl.py).
cat > "$work/plain_acl.yml" <<'YML'
accounts:
  - accessKey: admin-account
    secretKey: admin-secret-1
    admin: true
  - accessKey: app-account
    secretKey: app-secret-1
    defaultTopicPerm: DENY
    defaultGroupPerm: SUB
    topicPerms:
      - AclTopic=PUB|SUB
      - ReadOnly=SUB
YML
printf 'admin-secret-1' > "$work/admin.secret"
FERROCKET_LOG=warn "$BIN" namesrv --listen 127.0.0.1:0 > "$work/ns2.out" 2> "$work/ns2.err" & pids+=($!)
for _ in $(seq 100); do grep -q '^ready' "$work/ns2.out" 2>/dev/null && break; sleep 0.1; done
ns2=$(awk '/^ready/ {print $3; exit}' "$work/ns2.out")
FERROCKET_LOG=warn "$BIN" broker --set "namesrvAddr=$ns2" --set listenPort=0 \
  --set brokerIP1=127.0.0.1 --set "storePathRootDir=$work/store-acl" \
  --set aclEnable=true --set "aclFile=$work/plain_acl.yml" \
  --set diskSpaceCleanForciblyRatio=100 --set diskSpaceWarningLevelRatio=100 \
  > "$work/broker2.out" 2> "$work/broker2.err" & pids+=($!)
for _ in $(seq 100); do grep -q '^ready' "$work/broker2.out" 2>/dev/null && break; sleep 0.1; done
grep -q '^ready' "$work/broker2.out" || { echo "e2e/cpp: the ACL broker did not start"; cat "$work/broker2.err"; exit 1; }
admin() { "$BIN" admin --namesrv "$ns2" --access-key admin-account --secret-file "$work/admin.secret" "$@"; }
for _ in $(seq 100); do admin cluster >/dev/null 2>&1 && admin cluster 2>/dev/null | grep -q 127.0.0.1 && break; sleep 0.1; done
admin topic create --topic AclTopic --queues 4 >/dev/null
admin topic create --topic ReadOnly --queues 4 >/dev/null
if ! "$VENV/bin/python" "$ROOT/e2e/cpp/cpp_acl.py" "$ns2"; then
  echo "--- ACL broker log"; tail -n 30 "$work/broker2.err"
  exit 1
fi
