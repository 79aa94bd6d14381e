#!/usr/bin/env python3
"""Checks what schema validation cannot: the manifests in k8s/ keep the promises of
DESIGN.md §1 and §7 (caller table, identities, probes, non-root pods, limits, PDBs, HPAs)."""
import pathlib
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

for callee, allowed in CALLERS.items():
    np = by_kind.get("NetworkPolicy", {}).get(f"{callee}-callers")
    check(np is not None, f"{callee}: NetworkPolicy for callers")
    if np:
        froms = {p["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
                 for rule in np["spec"]["ingress"] for p in rule.get("from", [])}
        check(froms == allowed, f"{callee}: NetworkPolicy callers {sorted(froms)} == {sorted(allowed)}")
check("default-deny-ingress" in by_kind.get("NetworkPolicy", {}), "default deny ingress")

print(f"k8s manifests: {passed} passed, {len(failures)} failed")
sys.exit(1 if failures else 0)
