#!/usr/bin/env python3
"""Checks the Helm chart with the real Helm engine (helm-python-sdk) and every object
against the Kubernetes 1.30 schemas (kubernetes-validate).

usage: check_chart.py CHART_DIR CRDS_FILE PERMISSIONS_JSON RENDERED_SAMPLES_YAML

- `helm lint --strict` (kube 1.30) is clean;
- the chart renders with default and non-default values, and every object (plus the
  chart's CRDs and the operator's rendering of the samples) validates against 1.30;
- the chart's crds/ equal the repository's crds/;
- the RBAC covers every permission the operator lists (ferrocket-operator permissions):
  a ClusterRole by default, a Role per namespace when watchNamespaces is set, and the
  Lease rule in the release namespace.
Exits non-zero with the reasons on the first failed check group.
"""

import json
import sys

import helm_python as helm
import kubernetes_validate
import yaml

KUBE = "1.30.0"
failures = []


def fail(msg):
    failures.append(msg)


def docs(text):
    return [d for d in yaml.safe_load_all(text) if d]


def validate(obj, where):
    try:
        kubernetes_validate.validate(obj, KUBE, strict=True)
    except kubernetes_validate.ValidationError as e:
        fail(f"{where}: {obj.get('kind')}/{obj.get('metadata', {}).get('name')}: {e.message} at {list(e.path)}")
    except Exception as e:  # unknown kind/version
        fail(f"{where}: {obj.get('kind')}: {e}")


def render(chart, values, namespace="ferrocket-system"):
    out = chart.render(values, name="fr", namespace=namespace, is_install=True)
    objs, notes = [], ""
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        objs.extend(docs(text))
    return objs, notes


def rules_cover(rules, perm):
    for r in rules:
        if perm["apiGroup"] in r.get("apiGroups", []) and perm["resource"] in r.get("resources", []):
            if all(v in r.get("verbs", []) for v in perm["verbs"]):
                return True
    return False


def check_rbac(objs, perms, watch, release_ns, label):
    roles = [o for o in objs if o["kind"] in ("Role", "ClusterRole")]
    bindings = [o for o in objs if o["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    sa = next((o for o in objs if o["kind"] == "Deployment"), {})["spec"]["template"]["spec"]["serviceAccountName"]
    for b in bindings:
        subj = b["subjects"][0]
        if subj["name"] != sa or subj["namespace"] != release_ns:
            fail(f"{label}: {b['kind']} {b['metadata']['name']} binds {subj}, not the operator's ServiceAccount {sa}")
    for p in perms:
        if p["ownNamespace"]:
            scopes = [release_ns]
        elif watch:
            scopes = watch
        else:
            scopes = [None]
        for ns in scopes:
            if ns is None:
                cands = [r for r in roles if r["kind"] == "ClusterRole"]
            else:
                cands = [r for r in roles if r["kind"] == "Role" and r["metadata"].get("namespace") == ns]
            if not any(rules_cover(r["rules"], p) for r in cands):
                fail(f"{label}: nothing grants {p['verbs']} on {p['apiGroup'] or 'core'}/{p['resource']} in {ns or 'the cluster'}")
    # Narrowed: the chart grants nothing the operator does not call — no wildcards, no
    # verb beyond its list, and Secrets only by name (get/create/patch; never list or
    # watch, which would read every Secret of the namespace).
    needed = {}
    for p in perms:
        needed.setdefault((p["apiGroup"], p["resource"]), set()).update(p["verbs"])
    for r in roles:
        for rule in r.get("rules", []):
            for g in rule.get("apiGroups", []):
                for res in rule.get("resources", []):
                    verbs = set(rule.get("verbs", []))
                    if "*" in (g, res) or "*" in verbs:
                        fail(f"{label}: {r['kind']} {r['metadata']['name']} grants a wildcard: {rule}")
                    extra = verbs - needed.get((g, res), set())
                    if extra:
                        fail(f"{label}: {r['kind']} {r['metadata']['name']} grants {sorted(extra)} on "
                             f"{g or 'core'}/{res}, which the operator never calls")
                    if g == "" and res == "secrets" and verbs & {"list", "watch"}:
                        fail(f"{label}: Secrets must be read by name only")
    if watch and any(r["kind"] == "ClusterRole" for r in roles):
        fail(f"{label}: watchNamespaces is set but a ClusterRole is rendered")


def main():
    chart_dir, crds_file, perms_file, samples_file = sys.argv[1:5]
    perms = json.load(open(perms_file))

    report = helm.lint(chart_dir, strict=True, kube_version="v" + KUBE)
    bad = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2] + report.get("errors", [])
    if bad:
        fail(f"helm lint --strict: {bad}")

    chart = helm.Chart.load(chart_dir)
    chart_crds = open(f"{chart_dir}/crds/ferrocket.io.yaml").read()
    if chart_crds != open(crds_file).read():
        fail("charts/ferrocket/crds/ferrocket.io.yaml differs from crds/ferrocket.io.yaml (copy it)")
    for crd in docs(chart_crds):
        validate(crd, "chart crds/")

    default_objs, notes = render(chart, {})
    kinds = sorted(o["kind"] for o in default_objs)
    want = sorted(["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Deployment", "Service", "Secret"])
    if kinds != want:
        fail(f"default render: kinds {kinds}, want {want}")
    # The generated control key: mounted into the operator and named by its env.
    secret = next(o for o in default_objs if o["kind"] == "Secret")
    if not secret.get("data", {}).get("controlKey"):
        fail("the control Secret holds no controlKey")
    ddep = next(o for o in default_objs if o["kind"] == "Deployment")
    dpod = ddep["spec"]["template"]["spec"]
    vols = {v["name"]: v for v in dpod.get("volumes", [])}
    denv = {e["name"]: e.get("value") for e in dpod["containers"][0]["env"]}
    if vols.get("control", {}).get("secret", {}).get("secretName") != secret["metadata"]["name"] \
            or denv.get("FERROCKET_CONTROL_SECRET_FILE") != "/etc/ferrocket-operator/control/controlKey":
        fail("the operator does not mount its control key")
    if "kubectl apply" not in notes:
        fail("NOTES.txt does not tell the user what to apply next")
    for o in default_objs:
        validate(o, "default values")
    check_rbac(default_objs, perms, [], "ferrocket-system", "default values")
    dep = next(o for o in default_objs if o["kind"] == "Deployment")
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    if env.get("LEADER_ELECTION") != "true" or dep["spec"]["replicas"] != 2:
        fail(f"default Deployment: leader election {env.get('LEADER_ELECTION')}, replicas {dep['spec']['replicas']}")

    custom = {
        "replicaCount": 1,
        "leaderElection": False,
        "watchNamespaces": ["team-a", "team-b"],
        "logLevel": "debug,kube=info",
        "image": {"repository": "registry.local/ferrocket", "tag": "dev", "pullPolicy": "Always"},
        "serviceAccount": {"create": False, "name": "custom-sa"},
        "metrics": {"port": 9300, "service": {"enabled": False, "type": "ClusterIP"}},
        "resources": {"limits": {"cpu": "1", "memory": "512Mi"}},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "mq", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}},
        "podSecurityContext": {"runAsNonRoot": True, "runAsUser": 20000, "fsGroup": 20000},
        "control": {"existingSecret": "my-control-key"},
        "brokerTlsTrust": {"secretName": "broker-ca", "key": "ca.crt"},
    }
    objs, notes = render(chart, custom, namespace="ops")
    for o in objs:
        validate(o, "custom values")
    kinds = sorted(o["kind"] for o in objs)
    want = sorted(["Deployment", "Role", "RoleBinding", "Role", "RoleBinding"])
    if kinds != want:
        fail(f"custom render: kinds {kinds}, want {want}")
    cvols = {v["name"]: v for v in next(o for o in objs if o["kind"] == "Deployment")["spec"]["template"]["spec"].get("volumes", [])}
    if cvols.get("control", {}).get("secret", {}).get("secretName") != "my-control-key":
        fail("control.existingSecret is not the Secret the operator mounts")
    if cvols.get("broker-tls-trust", {}).get("secret", {}).get("secretName") != "broker-ca":
        fail("brokerTlsTrust.secretName is not the Secret the operator mounts")
    non_lease = [p for p in perms if not p["ownNamespace"]]
    check_rbac(objs, non_lease, ["team-a", "team-b"], "ops", "custom values")
    dep = next(o for o in objs if o["kind"] == "Deployment")
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in c["env"]}
    checks = {
        "image": c["image"] == "registry.local/ferrocket:dev",
        "serviceAccount": pod["serviceAccountName"] == "custom-sa",
        "WATCH_NAMESPACES": env.get("WATCH_NAMESPACES") == "team-a,team-b",
        "LEADER_ELECTION": env.get("LEADER_ELECTION") == "false",
        "METRICS_ADDR": env.get("METRICS_ADDR") == "0.0.0.0:9300",
        "RUST_LOG": env.get("RUST_LOG") == "debug,kube=info",
        "FERROCKET_BROKER_TLS_TRUST": env.get("FERROCKET_BROKER_TLS_TRUST") == "/etc/ferrocket-operator/broker-tls/ca.crt",
        "nodeSelector": pod.get("nodeSelector") == custom["nodeSelector"],
        "tolerations": pod.get("tolerations") == custom["tolerations"],
        "affinity": pod.get("affinity") == custom["affinity"],
        # Helm merges maps with the defaults: what was given must be there.
        "podSecurityContext": custom["podSecurityContext"].items() <= pod.get("securityContext", {}).items(),
        "resources": c.get("resources", {}).get("limits") == custom["resources"]["limits"],
    }
    for k, ok in checks.items():
        if not ok:
            fail(f"custom values: {k} not applied")
    if "team-a, team-b" not in notes:
        fail("NOTES.txt does not name the watched namespaces")

    samples = docs(open(samples_file).read())
    if len(samples) < 8:
        fail(f"operator render of the samples gave {len(samples)} objects")
    for o in samples:
        validate(o, "operator render of samples/")

    if failures:
        print("chart check FAILED:", file=sys.stderr)
        for f in failures:
            print("  - " + f, file=sys.stderr)
        sys.exit(1)
    print(f"chart check ok: lint clean, {len(default_objs)} + {len(objs)} chart objects and {len(samples)} operator objects valid against Kubernetes {KUBE}, RBAC covers {len(perms)} rules")


if __name__ == "__main__":
    main()
