#!/usr/bin/env python3
"""Checks what schema validation cannot: the manifests in k8s/ keep the promises of
DESIGN.md §1 and §7 (caller table, identities, probes, non-root pods, limits, PDBs, HPAs)."""
import pathlib
import re
import sys

import yaml

CALLERS = {  # callee -> who may call it (DESIGN.md §1)
    "auth": {"gateway", "folders", "invitations"},
    "keyvault": {"folders"},
    "folders": {"gateway", "invitations", "auth", "keyvault"},  # auth, keyvault: audit events
    "invitations": {"gateway"},
}
SERVICES = ["auth", "keyvault", "folders", "invitations", "gateway"]

docs = []
for path in sorted(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "k8s").glob("*.yaml")):
    docs += [d for d in yaml.safe_load_all(path.read_text()) if d and "metadata" in d]
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d

failures = []
passed = 0


def check(ok, what):
    global passed
    if ok:
        passed += 1
    else:
        failures.append(what)
        print("FAIL", what)


for name in SERVICES:
    dep = by_kind.get("Deployment", {}).get(name)
    check(dep is not None, f"{name}: Deployment exists")
    if dep:
        pod = dep["spec"]["template"]["spec"]
        check(pod["securityContext"].get("runAsNonRoot") is True, f"{name}: pod runs as non-root")
        c = pod["containers"][0]
        check(c["securityContext"].get("readOnlyRootFilesystem") is True, f"{name}: read-only root filesystem")
        check("limits" in c.get("resources", {}), f"{name}: resource limits")
        for probe in ("readinessProbe", "livenessProbe"):
            check("grpc" in c.get(probe, {}), f"{name}: {probe} uses gRPC health")
        check(c["args"] == ["serve", name], f"{name}: runs `teamshare serve {name}`")
    check(name in by_kind.get("PodDisruptionBudget", {}), f"{name}: PodDisruptionBudget")
    check(name in by_kind.get("HorizontalPodAutoscaler", {}), f"{name}: HorizontalPodAutoscaler")
    cert = by_kind.get("Certificate", {}).get(f"{name}-mtls")
    check(cert is not None and f"spiffe://teamshare/{name}" in cert["spec"].get("uris", []),
          f"{name}: mTLS certificate names spiffe://teamshare/{name}")

# NetworkPolicies: work out, for every service and every port, who may connect, from every
# ingress rule of every policy that selects its pods (a rule without `from` admits everyone; a
# rule without `ports` opens every port), and compare with the caller table. Open ports that
# are meant to be open: the gateway's public port, and the plaintext health-only listener that
# kubelet probes use (it serves grpc.health.v1 and nothing else).
EVERYONE = "*"
GRPC_PORT, HEALTH_PORT, PUBLIC_PORT = 7000, 7001, 8443
EXPECTED = {name: {HEALTH_PORT: {EVERYONE}} for name in SERVICES}
for callee, allowed in CALLERS.items():
    EXPECTED[callee][GRPC_PORT] = set(allowed)
EXPECTED["gateway"][PUBLIC_PORT] = {EVERYONE}
ALL_PORTS = "all ports"


def container_ports(name):
    dep = by_kind.get("Deployment", {}).get(name)
    if not dep:
        return {}
    c = dep["spec"]["template"]["spec"]["containers"][0]
    return {p.get("name"): p["containerPort"] for p in c.get("ports", [])}


def selects(selector, name):
    """Whether a policy's podSelector selects the pods of service `name`."""
    if set(selector) - {"matchLabels"}:
        check(False, f"podSelector {selector} uses only matchLabels, which this check can read")
        return True  # assume the worst: it selects this service
    labels = selector.get("matchLabels", {})
    return all(k == "app.kubernetes.io/name" and v == name for k, v in labels.items())


def rule_ports(policy, rule, name):
    """The port numbers one rule opens on `name`'s pods."""
    if not rule.get("ports"):
        return {ALL_PORTS}
    named = container_ports(name)
    out = set()
    for p in rule["ports"]:
        check(p.get("protocol", "TCP") == "TCP", f"{policy}: opens only TCP ({p})")
        check("endPort" not in p, f"{policy}: opens single ports, not ranges ({p})")
        port = p.get("port")
        if port is None:
            out.add(ALL_PORTS)
        elif isinstance(port, str):
            check(port in named, f"{policy}: named port {port} exists on {name}")
            out.add(named.get(port, port))
        else:
            out.add(port)
    return out


def rule_peers(policy, rule):
    """The callers one rule admits: service names, or everyone."""
    if not rule.get("from"):
        return {EVERYONE}
    peers = set()
    for peer in rule["from"]:
        pod = peer.get("podSelector")
        only_pods = set(peer) == {"podSelector"} and set(pod or {}) == {"matchLabels"}
        labels = (pod or {}).get("matchLabels", {})
        if only_pods and set(labels) == {"app.kubernetes.io/name"}:
            peers.add(labels["app.kubernetes.io/name"])
        else:
            # ipBlock, namespaceSelector, matchExpressions or an empty selector: wider than one
            # named service of this namespace.
            check(False, f"{policy}: peer {peer} names one service by app.kubernetes.io/name")
            peers.add(EVERYONE)
    return peers


actual = {name: {} for name in SERVICES}
for pname, np in by_kind.get("NetworkPolicy", {}).items():
    spec = np["spec"]
    types = spec.get("policyTypes", ["Ingress"])
    if "Ingress" not in types:
        continue
    targets = [n for n in SERVICES if selects(spec.get("podSelector", {}), n)]
    for rule in spec.get("ingress", []):
        for name in targets:
            for port in rule_ports(pname, rule, name):
                actual[name].setdefault(port, set()).update(rule_peers(pname, rule))

for name in SERVICES:
    named = container_ports(name)
    if name != "gateway":
        check(named.get("grpc-mtls") == GRPC_PORT, f"{name}: gRPC mTLS port is {GRPC_PORT}")
    check(named.get("health") == HEALTH_PORT, f"{name}: health port is {HEALTH_PORT}")
    got = actual[name]
    check(ALL_PORTS not in got, f"{name}: no NetworkPolicy rule opens every port (got {got.get(ALL_PORTS)})")
    for port in sorted(set(got) | set(EXPECTED[name]), key=str):
        want, have = EXPECTED[name].get(port, set()), got.get(port, set())
        if EVERYONE in have:
            have = {EVERYONE}  # naming callers beside everyone narrows nothing
        check(have == want, f"{name}: port {port} admits {sorted(have) or 'nobody'}, DESIGN.md §1 says {sorted(want) or 'nobody'}")

for callee in CALLERS:
    check(f"{callee}-callers" in by_kind.get("NetworkPolicy", {}), f"{callee}: NetworkPolicy for callers")
deny = by_kind.get("NetworkPolicy", {}).get("default-deny-ingress")
check(deny is not None and deny["spec"].get("podSelector") == {} and not deny["spec"].get("ingress")
      and "Ingress" in deny["spec"].get("policyTypes", []), "default deny ingress for every pod")

# Alert rules match status codes as the services spell them everywhere (the audit trail, the
# `rpc.grpc.status_code` metric label, logs): ts_contract::status::code_name, such as
# UNAUTHENTICATED. Another spelling matches nothing, and the alert can never fire.
CODE_NAMES = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
              "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
              "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"}
matchers = []
for path in sorted(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "k8s").glob("*.yaml")):
    matchers += re.findall(r'rpc_grpc_status_code\s*(?:=~|!~|!=|=)\s*"([^"]*)"', path.read_text())
check(matchers, "alert rules watch rpc_grpc_status_code")
for m in matchers:
    for code in m.split("|"):
        check(code in CODE_NAMES, f"alert rule status code {code!r} is spelled as the services spell it")

print(f"k8s manifests: {passed} passed, {len(failures)} failed")
sys.exit(1 if failures else 0)
