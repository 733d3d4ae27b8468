#!/usr/bin/env bash
# End-to-end on a kind cluster: build and load the image, install the chart, apply the
# samples, wait for Ready, produce and consume through the name server, delete the master
# pod and check the group recovers, move the master with preferredMaster, clean up.
#
# Needs docker (a running engine), kind, kubectl and helm. Where any is missing it prints
# one line saying which and exits 0, so CI runs it everywhere (keeping it alive) and it
# runs unchanged where they exist.
#
#   e2e/kind/run.sh            # full run, deletes the cluster at the end
#   KEEP_CLUSTER=1 e2e/kind/run.sh
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
CLUSTER="${CLUSTER:-ferrocket-e2e}"
IMAGE="${IMAGE:-ferrocket/ferrocket:e2e}"
NS="${NS:-ferrocket-e2e}"
TIMEOUT="${TIMEOUT:-600s}"

missing=()
for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "${#missing[@]}" -eq 0 ] && ! docker info >/dev/null 2>&1; then
  missing+=("a running Docker engine")
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "e2e/kind: skipped: missing ${missing[*]} (needs docker, kind, kubectl, helm)"
  exit 0
fi

log() { printf '[e2e %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

cleanup() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    log "FAILED (rc=$rc); state:"
    kubectl -n "$NS" get all,nameservers,brokergroups,pvc 2>/dev/null || true
    kubectl -n "$NS" describe brokergroups 2>/dev/null | tail -40 || true
    kubectl -n "$NS" logs deploy/fr-ferrocket-operator --tail=100 2>/dev/null || true
  fi
  if [ -z "${KEEP_CLUSTER:-}" ]; then
    log "deleting cluster $CLUSTER"
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
  exit "$rc"
}
trap cleanup EXIT

log "creating kind cluster $CLUSTER"
kind get clusters 2>/dev/null | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --wait 120s

log "building $IMAGE"
docker build -t "$IMAGE" "$ROOT"
kind load docker-image "$IMAGE" --name "$CLUSTER"

log "installing the chart"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -
helm upgrade --install fr "$ROOT/charts/ferrocket" -n "$NS" \
  --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" \
  --set image.pullPolicy=Never --set watchNamespaces="{$NS}" --wait --timeout "$TIMEOUT"

log "applying the samples"
kubectl -n "$NS" apply -f "$ROOT/samples/nameserver.yaml" -f "$ROOT/samples/broker-group.yaml"
kubectl -n "$NS" wait nameserver/namesrv --for=condition=Available --timeout="$TIMEOUT"
kubectl -n "$NS" wait brokergroup/broker-a --for=condition=Available --timeout="$TIMEOUT"
kubectl -n "$NS" rollout status statefulset/broker-a --timeout="$TIMEOUT"
kubectl -n "$NS" get nameservers,brokergroups

NAMESRV="namesrv-0.namesrv-hs.$NS.svc:9876"
admin() {
  # A throwaway pod with the same image runs `ferrocket admin` inside the cluster.
  kubectl -n "$NS" run "admin-$RANDOM" --rm -i --restart=Never --image="$IMAGE" \
    --image-pull-policy=Never --command -- ferrocket admin --namesrv "$NAMESRV" "$@"
}

log "producing and consuming"
admin topic create --topic E2E --queues 4
for i in $(seq 1 20); do admin send --topic E2E --key "k$i" --body "message-$i" >/dev/null; done
got="$(admin consume --topic E2E --group e2e --from-first --count 20 --idle 10s | grep -c 'message-' || true)"
[ "$got" -ge 20 ] || { log "consumed $got of 20"; exit 1; }
log "consumed $got messages"

master="$(kubectl -n "$NS" get brokergroup broker-a -o jsonpath='{.status.master}')"
epoch="$(kubectl -n "$NS" get brokergroup broker-a -o jsonpath='{.status.epoch}')"
log "deleting the master pod $master (epoch $epoch)"
kubectl -n "$NS" delete pod "$master" --wait=false
sleep 5
kubectl -n "$NS" wait brokergroup/broker-a --for=condition=Available --timeout="$TIMEOUT"
kubectl -n "$NS" rollout status statefulset/broker-a --timeout="$TIMEOUT"
log "group recovered: master $(kubectl -n "$NS" get brokergroup broker-a -o jsonpath='{.status.master}') epoch $(kubectl -n "$NS" get brokergroup broker-a -o jsonpath='{.status.epoch}')"

# Either the pod came back within the grace period or a slave was promoted; both end with
# a master that acknowledges sends (a SyncMaster needs a following slave too).
# Sends BODY until a send is acknowledged (up to 2 minutes).
send_ok() {
  for _ in $(seq 1 24); do
    admin send --topic E2E --body "$1" 2>/dev/null | grep -q SEND_OK && return 0
    sleep 5
  done
  return 1
}
send_ok after-recovery || { log "no acknowledged send after the master pod was deleted"; exit 1; }
got="$(admin consume --topic E2E --group e2e --count 1 --idle 10s | grep -c 'after-recovery' || true)"
[ "$got" -ge 1 ] || { log "message sent after recovery not consumed"; exit 1; }

# A planned switchover: prefer a pod that is not the master; the operator moves the role.
master="$(kubectl -n "$NS" get brokergroup broker-a -o jsonpath='{.status.master}')"
want="broker-a-1"; [ "$master" = "broker-a-1" ] && want="broker-a-2"
log "preferring $want (master is $master)"
kubectl -n "$NS" patch brokergroup broker-a --type merge -p "{\"spec\":{\"preferredMaster\":\"$want\"}}"
moved=""
for _ in $(seq 1 36); do
  # At most one move per minute: a recent failover may delay it.
  [ "$(kubectl -n "$NS" get brokergroup broker-a -o jsonpath='{.status.master}')" = "$want" ] && { moved=1; break; }
  sleep 5
done
[ -n "$moved" ] || { log "the master never moved to $want"; exit 1; }
send_ok after-switchover || { log "no acknowledged send after the switchover"; exit 1; }
log "PASS"
