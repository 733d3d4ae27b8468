#!/usr/bin/env bash
# End-to-end on a kind cluster: build and load the image, install the chart, apply the
# samples, wait for Ready, produce and consume through the name server, freeze the master
# (SIGSTOP) under a producer and require a failover with zero acknowledged messages lost,
# move the master with preferredMaster, roll an image change under load with zero loss,
# clean up.
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

WORK="$(mktemp -d)"
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
# The brokers' StatefulSet is OnDelete (the operator replaces pods itself, slaves
# first), which `kubectl rollout status` does not follow: wait until every pod runs the
# update revision and is ready.
# With an argument, first until the template names that image.
rolled() {
  local deadline=$((SECONDS + ${TIMEOUT%s})) image="${1:-}" sts
  while [ "$SECONDS" -lt "$deadline" ]; do
    sts=$(kubectl -n "$NS" get statefulset broker-a -o jsonpath='{.spec.replicas} {.status.updatedReplicas} {.status.readyReplicas} {.metadata.generation} {.status.observedGeneration} {.spec.template.spec.containers[0].image}')
    read -r want updated ready gen seen current <<< "$sts"
    if [ "$gen" = "$seen" ] && [ "$updated" = "$want" ] && [ "$ready" = "$want" ] &&
      { [ -z "$image" ] || [ "$current" = "$image" ]; }; then
      return 0
    fi
    sleep 3
  done
  log "the brokers did not roll to the new template in $TIMEOUT"
  return 1
}
rolled
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

status_of() { kubectl -n "$NS" get brokergroup broker-a -o jsonpath="{.status.$1}"; }

# Sends BODY until a send is acknowledged (up to 2 minutes). The output is captured
# first: piping `kubectl run --rm` into `grep -q` under pipefail fails when grep exits
# early and kubectl gets SIGPIPE.
send_ok() {
  local out
  for _ in $(seq 1 24); do
    out="$(admin send --topic E2E --body "$1" 2>/dev/null || true)"
    case "$out" in *SEND_OK*) return 0 ;; esac
    sleep 5
  done
  return 1
}

# Consumes the topic from the first offset with a new group into FILE, then fails unless
# every body acknowledged in ACKED (lines `SEND_OK ... body=B`) is there (WHAT names the
# step in the messages).
check_acked() { # WHAT ACKED FILE
  local what=$1 acked_file=$2 file=$3 acked lost=0
  admin consume --topic E2E --group "e2e-check-$RANDOM" --from-first --count 100000 --idle 20s > "$file" 2>/dev/null || true
  acked="$(grep -c '^SEND_OK' "$acked_file" || true)"
  while read -r body; do
    grep -q "body=$body\$" "$file" || lost=$((lost + 1))
  done < <(sed -n 's/^SEND_OK .* body=//p' "$acked_file")
  log "acknowledged $acked messages $what; lost $lost"
  [ "$acked" -gt 0 ] || { log "the producer got no acknowledgement $what"; exit 1; }
  [ "$lost" -eq 0 ] || { log "LOST $lost acknowledged messages $what"; exit 1; }
}

# Strict failover: the master's broker is frozen (SIGSTOP from the kind node, as a hung
# process would be) under a producer; the operator must promote a slave (status master
# and epoch change), and every acknowledged message must be consumable afterwards.
master="$(status_of master)"
epoch="$(status_of epoch)"
log "freezing the master $master (epoch $epoch) under load"
admin send --topic E2E --body load --count 3000 --interval-ms 20 > "$WORK/acked.txt" 2>/dev/null &
producer=$!
sleep 10
node="$(kubectl -n "$NS" get pod "$master" -o jsonpath='{.spec.nodeName}')"
docker exec "$node" pkill -STOP -f "pod-name $master" \
  || { log "cannot freeze $master on $node"; exit 1; }
moved=""
for _ in $(seq 1 60); do
  now="$(status_of master)"
  if [ "$now" != "$master" ] && [ "$(status_of epoch)" -gt "$epoch" ]; then moved=1; break; fi
  sleep 2
done
docker exec "$node" pkill -CONT -f "pod-name $master" || true
[ -n "$moved" ] || { log "no failover: master still $master at epoch $(status_of epoch)"; exit 1; }
log "failed over: master $(status_of master) epoch $(status_of epoch)"
wait "$producer" || true
kubectl -n "$NS" wait brokergroup/broker-a --for=condition=Available --timeout="$TIMEOUT"
send_ok after-recovery || { log "no acknowledged send after the failover"; exit 1; }
check_acked "under the failover" "$WORK/acked.txt" "$WORK/consumed.txt"
grep -q 'body=after-recovery$' "$WORK/consumed.txt" || { log "message sent after recovery not consumed"; exit 1; }

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

# An upgrade under load: a new image tag rolls every broker pod while a producer runs;
# nothing acknowledged may be lost.
NEW_IMAGE="${IMAGE%:*}:e2e-upgrade"
docker tag "$IMAGE" "$NEW_IMAGE"
kind load docker-image "$NEW_IMAGE" --name "$CLUSTER"
log "upgrading the brokers to $NEW_IMAGE under load"
admin send --topic E2E --body upgrade --count 4000 --interval-ms 20 > "$WORK/acked-upgrade.txt" 2>/dev/null &
producer=$!
sleep 10
kubectl -n "$NS" patch brokergroup broker-a --type merge -p "{\"spec\":{\"image\":\"$NEW_IMAGE\"}}"
rolled "$NEW_IMAGE"
# The master moved off the old image by a switchover before its pod was replaced.
kubectl -n "$NS" get events --field-selector reason=UpgradingPod -o name | grep -q . ||
  { log "no UpgradingPod event: the operator did not drive the roll"; exit 1; }
wait "$producer" || true
kubectl -n "$NS" wait brokergroup/broker-a --for=condition=Available --timeout="$TIMEOUT"
check_acked "during the upgrade" "$WORK/acked-upgrade.txt" "$WORK/consumed-upgrade.txt"
log "PASS"
