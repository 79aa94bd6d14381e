#!/usr/bin/env python3
"""Checks what schema validation cannot: the rendered manifests (kubectl kustomize of each
overlay) keep the promises of DESIGN.md §1 and §7 and of the README's Kubernetes section.

- Pods: non-root, read-only, limits, gRPC probes, no Kubernetes API token, one image.
  CronJobs (the master-key retirement) run teamshare-cli as the operator: its label, service
  account, certificate and NetworkPolicies, and a generated ConfigMap.
- Scaling: an HPA and a PDB per service, and no `replicas` where an HPA owns the count.
- Traffic: NetworkPolicy ingress equals the caller table (plus the operator Job on the
  services that serve operator RPCs); egress equals DNS, the stores each pod uses and the
  internal calls it makes; nothing else. Internal services have headless Services that the
  config's upstreams name, with a server_name their certificates carry; the public
  LoadBalancer keeps client addresses (externalTrafficPolicy Local).
- Identity: mTLS certificates name spiffe://teamshare/<service>, the operator certificate
  spiffe://teamshare/operator (client only); keyvault's service account carries its IAM role
  in the overlays; the public certificate comes from an ACME DNS-01 issuer.
- Configuration: generated ConfigMaps (hash-named, so changes roll pods), the overlays' TS_
  values, the migrate Job named after the image version.
- Secrets: every Secret a pod reads, and every key, has a template in k8s/examples/secrets.yaml
  and an ExternalSecret in the external-secrets component (unless cert-manager makes it).

usage: k8s_check.py DIR   (DIR holds base.yaml, dev.yaml, prod.yaml, prod-all.yaml)
"""
import pathlib
import re
import sys
import tomllib

import yaml

from checks import check, finish

REPO = pathlib.Path(__file__).resolve().parent.parent
NAMESPACE = "teamshare"
SERVICES = ["auth", "keyvault", "folders", "invitations", "gateway"]
INTERNAL = ["auth", "keyvault", "folders", "invitations"]
OPERATOR, MIGRATE, COLLECTOR = "teamshare-operator", "teamshare-migrate", "otel-collector"

CALLERS = {  # callee -> who may call it (DESIGN.md §1; auth and keyvault send folders audit events;
    # auth asks folders and invitations for their part of exports, erasures and retention)
    "auth": {"gateway", "folders", "invitations", OPERATOR},
    "keyvault": {"folders", OPERATOR},
    "folders": {"gateway", "invitations", "auth", "keyvault", OPERATOR},
    "invitations": {"gateway", "auth"},
}
# The external systems each workload talks to, by port: MongoDB, Redis, KMS (and STS), SMTP,
# the trace backend.
MONGODB, REDIS, KMS, SMTP, OTLP = 27017, 6379, 443, 587, 4317
EXTERNAL = {
    "gateway": {REDIS},
    "auth": {MONGODB, REDIS, SMTP},
    "keyvault": {MONGODB, KMS},
    "folders": {MONGODB, REDIS},
    "invitations": {MONGODB, SMTP},
    MIGRATE: {MONGODB},
    OPERATOR: set(),
    COLLECTOR: {OTLP},
}
GRPC_PORT, HEALTH_PORT, PUBLIC_PORT = 7000, 7001, 8443
EVERYONE = "*"
DNS = "ns:kube-system/k8s-app=kube-dns"
ALL_PORTS = "all ports"
SECRET_FILES = ("tls.crt", "tls.key", "ca.crt")  # what cert-manager puts in its Secrets



def load(path):
    return [d for d in yaml.safe_load_all(pathlib.Path(path).read_text()) if d and "metadata" in d]


def matches(selector, labels):
    """Kubernetes label-selector semantics (matchLabels and matchExpressions)."""
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


class Render:
    """One rendered overlay, with the operator Job template beside it."""

    def __init__(self, name, docs, examples):
        self.name = name
        self.docs = docs
        self.by_kind = {}
        for d in docs:
            self.by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
        self.examples = examples
        # Workloads: name -> (pod labels, pod spec).
        self.workloads = {}
        for kind in ("Deployment", "Job"):
            for d in self.get(kind).values():
                tmpl = d["spec"]["template"]
                self.workloads[tmpl["metadata"]["labels"]["app.kubernetes.io/name"]] = (
                    tmpl["metadata"]["labels"], tmpl["spec"])
        job = examples["operator-job"]
        self.workloads[OPERATOR] = (job["spec"]["template"]["metadata"]["labels"], job["spec"]["template"]["spec"])
        # CronJobs: name -> (pod labels, pod spec); checked as pods, and as the operator.
        self.cronjobs = {}
        for name, d in self.get("CronJob").items():
            tmpl = d["spec"]["jobTemplate"]["spec"]["template"]
            self.cronjobs[name] = (tmpl["metadata"].get("labels", {}), tmpl["spec"])

    def pods(self):
        """Every pod template: the workloads' and the CronJobs'."""
        return list(self.workloads.items()) + [(f"cronjob/{n}", w) for n, w in self.cronjobs.items()]

    def get(self, kind):
        return self.by_kind.get(kind, {})

    def has_collector(self):
        return "otel-collector" in self.get("Deployment")

    def has_prometheus(self):
        return bool(self.get("PrometheusRule"))

    def ports(self, workload):
        _, pod = self.workloads[workload]
        return {p.get("name"): p["containerPort"] for c in pod["containers"] for p in c.get("ports", [])}

    def say(self, what):
        return f"{self.name}: {what}"


# ---------------------------------------------------------------------------------- pods


def check_pods(r):
    hpa_targets = {h["spec"]["scaleTargetRef"]["name"]: h for h in r.get("HorizontalPodAutoscaler").values()}
    images = set()
    for name in SERVICES:
        dep = r.get("Deployment").get(name)
        if not check(dep is not None, r.say(f"{name}: Deployment exists")):
            continue
        pod = dep["spec"]["template"]["spec"]
        c = pod["containers"][0]
        images.add(c["image"])
        check(c["args"] == ["serve", name], r.say(f"{name}: runs `teamshare serve {name}`"))
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            check("grpc" in c.get(probe, {}), r.say(f"{name}: {probe} uses gRPC health"))
        hpa = hpa_targets.get(name)
        if check(hpa is not None, r.say(f"{name}: HorizontalPodAutoscaler")):
            check(2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"],
                  r.say(f"{name}: HPA keeps at least 2 replicas (min {hpa['spec']['minReplicas']}, max {hpa['spec']['maxReplicas']})"))
        check(name in r.get("PodDisruptionBudget"), r.say(f"{name}: PodDisruptionBudget"))
    for name, dep in r.get("Deployment").items():
        check(not (name in hpa_targets and "replicas" in dep["spec"]),
              r.say(f"{name}: no `replicas` on a Deployment its HPA owns (an apply would reset the count)"))
    for name, (labels, pod) in r.pods():
        check(pod.get("securityContext", {}).get("runAsNonRoot") is True, r.say(f"{name}: pod runs as non-root"))
        check(pod.get("automountServiceAccountToken") is False, r.say(f"{name}: no Kubernetes API token in the pod"))
        sa = r.get("ServiceAccount").get(pod.get("serviceAccountName", "default"))
        check(sa is not None and sa.get("automountServiceAccountToken") is False,
              r.say(f"{name}: its own service account ({pod.get('serviceAccountName')}), without token automount"))
        for c in pod["containers"]:
            sc = c.get("securityContext", {})
            check(sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False
                  and sc.get("capabilities", {}).get("drop") == ["ALL"],
                  r.say(f"{name}: read-only, unprivileged container {c['name']}"))
            check("limits" in c.get("resources", {}), r.say(f"{name}: resource limits on {c['name']}"))
            if "teamshare" in c["image"]:
                images.add(c["image"])
    check(len(images) == 1, r.say(f"every teamshare pod runs one image (got {sorted(images)})"))
    return images.pop() if len(images) == 1 else None


# ----------------------------------------------------------------------------- services


def check_services(r):
    gw = r.get("Service").get("gateway")
    if check(gw is not None, r.say("gateway: Service exists")):
        check(gw["spec"].get("type") == "LoadBalancer" and gw["spec"].get("externalTrafficPolicy") == "Local",
              r.say("gateway: LoadBalancer with externalTrafficPolicy Local (client addresses kept)"))
    for name in INTERNAL:
        svc = r.get("Service").get(f"{name}-headless")
        if not check(svc is not None, r.say(f"{name}: headless Service {name}-headless")):
            continue
        spec = svc["spec"]
        check(spec.get("clusterIP") == "None", r.say(f"{name}-headless: clusterIP None"))
        check(spec.get("publishNotReadyAddresses") is False,
              r.say(f"{name}-headless: publishNotReadyAddresses false (callers see ready pods only)"))
        check(spec.get("selector") == {"app.kubernetes.io/name": name}, r.say(f"{name}-headless: selects {name} pods"))
        check([p["port"] for p in spec.get("ports", [])] == [GRPC_PORT], r.say(f"{name}-headless: port {GRPC_PORT}"))


# ---------------------------------------------------------------------- configuration


def generated(name):
    return re.fullmatch(r".+-[a-z0-9]{10}", name) is not None


def config_maps_of(pod):
    refs = []
    for v in pod.get("volumes", []):
        if "configMap" in v:
            refs.append((v["configMap"]["name"], v["configMap"].get("optional", False)))
    for c in pod["containers"]:
        for e in c.get("envFrom", []):
            if "configMapRef" in e:
                refs.append((e["configMapRef"]["name"], e["configMapRef"].get("optional", False)))
    return refs


def check_config(r, image):
    cms = r.get("ConfigMap")
    for name, (_, pod) in r.workloads.items():
        if name == OPERATOR:
            continue
        for ref, optional in config_maps_of(pod):
            if optional:
                continue
            check(ref in cms and generated(ref),
                  r.say(f"{name}: ConfigMap {ref} is generated (hash-named), so a change rolls the pods"))
    toml_map = next((cm for n, cm in cms.items() if n.startswith("teamshare-config-")), None)
    if not check(toml_map is not None, r.say("teamshare-config ConfigMap")):
        return
    config = tomllib.loads(toml_map["data"]["teamshare.toml"])
    for key in ("max_connection_age_secs", "upstream_dns_refresh_secs", "cert_reload_secs"):
        check(isinstance(config.get(key), int) and config[key] > 0, r.say(f"config sets {key}"))
    check(config.get("gateway", {}).get("proxy_protocol") is False and config["gateway"].get("trusted_proxies") == [],
          r.say("config: gateway proxy_protocol off, no trusted proxies (externalTrafficPolicy Local keeps addresses)"))
    for name in INTERNAL:
        up = config.get("upstreams", {}).get(name, {})
        want = f"https://{name}-headless.{NAMESPACE}.svc.cluster.local:{GRPC_PORT}"
        check(up.get("url") == want, r.say(f"config: upstream {name} is {want} (got {up.get('url')})"))
        cert = r.get("Certificate").get(f"{name}-mtls", {}).get("spec", {})
        check(up.get("server_name") == name and name in cert.get("dnsNames", []),
              r.say(f"config: upstream {name} server_name `{name}` is a DNS name of {name}-mtls"))
    env = next((cm.get("data", {}) for n, cm in cms.items() if n.startswith("teamshare-env-")), None)
    if r.name != "base":
        for key in ("TS_KMS__REGION", "TS_KMS__KEY_ID", "TS_MAIL__HOST", "TS_MAIL__FROM"):
            check(env is not None and env.get(key), r.say(f"the overlay sets {key}"))
    for key in (env or {}):
        check(key.startswith("TS_") and "__" in key or key == "TS_PRODUCTION",
              r.say(f"teamshare-env key {key} is a TS_ override"))

    # The migrate Job: one per version, named after it.
    jobs = r.get("Job")
    tag = image.rsplit(":", 1)[1] if image and ":" in image else "?"
    want = f"teamshare-migrate-{tag.replace('.', '-')}"
    job = jobs.get(want)
    if check(job is not None, r.say(f"migrate Job {want} (named after the image tag {tag}; got {sorted(jobs)})")):
        spec, pod = job["spec"], job["spec"]["template"]["spec"]
        check(pod["containers"][0]["args"] == ["migrate"] and pod["containers"][0]["image"] == image,
              r.say("migrate Job runs `teamshare migrate` from the services' image"))
        check(spec.get("ttlSecondsAfterFinished", 0) > 0 and "backoffLimit" in spec and pod.get("restartPolicy") == "Never",
              r.say("migrate Job: ttlSecondsAfterFinished, backoffLimit, restartPolicy Never"))
        check(pod.get("serviceAccountName") == MIGRATE, r.say("migrate Job: its own service account"))
    job = r.examples["operator-job"]
    check(job["spec"]["template"]["spec"]["containers"][0]["image"].split(":")[0] == (image or "").split(":")[0],
          r.say("operator Job template runs the services' image"))


# ------------------------------------------------------------------- identities, certs


def check_identities(r):
    certs = r.get("Certificate")
    for name in SERVICES:
        cert = certs.get(f"{name}-mtls", {}).get("spec", {})
        check(f"spiffe://teamshare/{name}" in cert.get("uris", []),
              r.say(f"{name}: mTLS certificate names spiffe://teamshare/{name}"))
        dep = r.get("Deployment").get(name)
        if dep:
            vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
            check(vols.get("mtls", {}).get("secret", {}).get("secretName") == f"{name}-mtls",
                  r.say(f"{name}: mounts its own certificate"))
    op = certs.get("operator-mtls", {}).get("spec", {})
    check(op.get("uris") == ["spiffe://teamshare/operator"] and "client auth" in op.get("usages", [])
          and "server auth" not in op.get("usages", []),
          r.say("operator-mtls: spiffe://teamshare/operator, a client certificate only"))
    job = r.examples["operator-job"]["spec"]["template"]["spec"]
    check(any(v.get("secret", {}).get("secretName") == "operator-mtls" for v in job["volumes"])
          and job.get("serviceAccountName") == OPERATOR,
          r.say("operator Job mounts operator-mtls and runs as teamshare-operator"))
    issuers = r.get("Issuer")
    for cname, cert in certs.items():
        ref = cert["spec"]["issuerRef"]
        if r.name == "base" and ref["name"] == "teamshare-public":
            continue  # the overlays bring the public issuer
        check(ref.get("kind") == "Issuer" and ref["name"] in issuers,
              r.say(f"{cname}: issuer {ref['name']} is in the namespace"))
    sa = r.get("ServiceAccount").get("keyvault", {})
    role = sa.get("metadata", {}).get("annotations", {}).get("eks.amazonaws.com/role-arn", "")
    if r.name == "base":
        check(not role, r.say("keyvault: no IAM role in the base (environment-specific)"))
    else:
        check(role.startswith("arn:aws:iam::"), r.say("keyvault: service account carries its IAM role (IRSA)"))
        public = certs.get("gateway-public-tls", {}).get("spec", {})
        check(public.get("dnsNames") and not any(n.endswith(".invalid") for n in public["dnsNames"]),
              r.say("gateway-public-tls: the overlay's domain"))
        acme = issuers.get(public.get("issuerRef", {}).get("name"), {}).get("spec", {}).get("acme", {})
        solvers = acme.get("solvers", [])
        check(solvers and all("dns01" in s and "http01" not in s for s in solvers),
              r.say("gateway-public-tls: ACME DNS-01 (the gateway is a TCP load balancer, HTTP-01 cannot reach it)"))


# ------------------------------------------------------------------------------ secrets


def check_secrets(r):
    made = {c["spec"]["secretName"] for c in r.get("Certificate").values()}
    templates = {s["metadata"]["name"]: set(s.get("stringData", {})) | set(s.get("data", {}))
                 for s in r.examples["secrets"]}
    external = {e["spec"]["target"]["name"]: {d["secretKey"] for d in e["spec"].get("data", [])}
                for e in r.examples["externalsecrets"]}
    wanted = {}  # secret -> keys read
    for name, (_, pod) in r.pods():
        vols = {v["name"]: v for v in pod.get("volumes", [])}
        for c in pod["containers"]:
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    wanted.setdefault(ref["name"], set()).add(ref["key"])
            for e in c.get("envFrom", []):
                check("secretRef" not in e, r.say(f"{name}: reads named secret keys, not whole Secrets"))
            for m in c.get("volumeMounts", []):
                secret = vols[m["name"]].get("secret")
                if secret:
                    wanted.setdefault(secret["secretName"], set()).update(
                        i["key"] for i in secret.get("items", []))
    config = tomllib.loads(next(cm for n, cm in r.get("ConfigMap").items()
                                if n.startswith("teamshare-config-"))["data"]["teamshare.toml"])
    for path in config["accounts"]["token_signing_keys"] + [config["accounts"]["secret_key_file"]]:
        wanted.setdefault("teamshare-auth-keys", set()).add(path.rsplit("/", 1)[1])
    for secret, keys in sorted(wanted.items()):
        if secret in made:
            check(not (keys - set(SECRET_FILES)), r.say(f"{secret}: cert-manager's files only ({sorted(keys)})"))
            continue
        check(secret in templates and keys <= templates[secret],
              r.say(f"{secret}: a template in k8s/examples/secrets.yaml with {sorted(keys)}"))
        check(secret in external and keys <= external[secret],
              r.say(f"{secret}: an ExternalSecret in components/external-secrets with {sorted(keys)}"))
    stores = next((s for s in r.examples["secrets"] if s["metadata"]["name"] == "teamshare-stores"), {})
    uri = stores.get("stringData", {}).get("mongodb-uri", "")
    url = stores.get("stringData", {}).get("redis-url", "")
    check(uri.startswith("mongodb+srv://") or "tls=true" in uri, "example MongoDB URI uses TLS (production refuses plaintext)")
    check(url.startswith(("rediss://", "rediss-cluster://")), "example Redis URL uses TLS (production refuses plaintext)")


# ------------------------------------------------------------------------------ cronjobs


def check_cronjobs(r, image):
    """A CronJob runs teamshare-cli as the operator: the operator's label (so exactly the
    operator's NetworkPolicies apply), service account and certificate, the services' image,
    one run at a time, and its settings from a generated ConfigMap."""
    _, operator_pod = r.workloads[OPERATOR]
    op_labels = r.workloads[OPERATOR][0]
    pols = r.get("NetworkPolicy")
    cms = r.get("ConfigMap")
    for name, (labels, pod) in r.cronjobs.items():
        cj = r.get("CronJob")[name]["spec"]
        check(labels.get("app.kubernetes.io/name") == OPERATOR,
              r.say(f"cronjob/{name}: pods carry app.kubernetes.io/name={OPERATOR}"))
        mine = {n for n, np in pols.items() if matches(np["spec"]["podSelector"], labels)}
        theirs = {n for n, np in pols.items() if matches(np["spec"]["podSelector"], op_labels)}
        check(mine == theirs, r.say(f"cronjob/{name}: the operator's NetworkPolicies apply, no others ({sorted(mine)})"))
        check(pod.get("serviceAccountName") == OPERATOR, r.say(f"cronjob/{name}: runs as {OPERATOR}"))
        check(any(v.get("secret", {}).get("secretName") == "operator-mtls" for v in pod.get("volumes", [])),
              r.say(f"cronjob/{name}: mounts operator-mtls"))
        c = pod["containers"][0]
        check(c.get("command") == ["/usr/local/bin/teamshare-cli"] and (c.get("args") or [""])[0] == "operator",
              r.say(f"cronjob/{name}: runs `teamshare-cli operator ...`"))
        check(c["image"] == image, r.say(f"cronjob/{name}: runs the services' image ({c['image']})"))
        check(cj.get("concurrencyPolicy") == "Forbid", r.say(f"cronjob/{name}: one run at a time"))
        check(pod.get("restartPolicy") == "Never" and "backoffLimit" in cj["jobTemplate"]["spec"]
              and cj["jobTemplate"]["spec"].get("ttlSecondsAfterFinished", 0) > 0,
              r.say(f"cronjob/{name}: restartPolicy Never, backoffLimit, ttlSecondsAfterFinished"))
        refs = {e["valueFrom"]["configMapKeyRef"]["name"] for e in c.get("env", [])
                if "configMapKeyRef" in e.get("valueFrom", {})}
        for ref in refs:
            check(ref in cms and generated(ref), r.say(f"cronjob/{name}: ConfigMap {ref} is generated"))


# ---------------------------------------------------------------------- network policy


def peers(r, entries):
    """The peers a from/to list admits: workload names, DNS, ns:<name>, ip:<cidr>, or everyone."""
    if not entries:
        return {EVERYONE}
    out = set()
    for e in entries:
        if "ipBlock" in e:
            out.add(f"ip:{e['ipBlock']['cidr']}" + ("-except" if e["ipBlock"].get("except") else ""))
            continue
        ns, pod = e.get("namespaceSelector"), e.get("podSelector")
        if ns is not None:
            names = (ns.get("matchLabels") or {}).get("kubernetes.io/metadata.name")
            if set(ns) != {"matchLabels"} or set(ns["matchLabels"]) != {"kubernetes.io/metadata.name"}:
                out.add(EVERYONE)  # any namespace that carries some label: too wide to reason about
            elif names == "kube-system" and pod == {"matchLabels": {"k8s-app": "kube-dns"}}:
                out.add(DNS)
            elif names != NAMESPACE:
                out.add(f"ns:{names}" + ("" if not pod else "/selected-pods"))
                continue
            else:
                ns = None
        if ns is None:
            hit = {w for w, (labels, _) in r.workloads.items() if matches(pod or {}, labels)}
            out |= hit if pod else {EVERYONE}
    return out


def rule_ports(r, policy, rule, workloads, direction):
    if not rule.get("ports"):
        return {ALL_PORTS}
    out = set()
    for p in rule["ports"]:
        check("endPort" not in p, r.say(f"{policy}: single ports, not ranges ({p})"))
        port, proto = p.get("port"), p.get("protocol", "TCP")
        if port is None:
            out.add(ALL_PORTS)
            continue
        if isinstance(port, str):  # named: a port of the selected pods (ingress) only
            check(direction == "ingress", r.say(f"{policy}: named ports only on ingress"))
            port = next((r.ports(w).get(port) for w in workloads if port in r.ports(w)), port)
        out.add(port if proto == "TCP" else f"{port}/{proto}")
    return out


def check_network(r):
    pols = r.get("NetworkPolicy")
    for direction, kind in (("ingress", "Ingress"), ("egress", "Egress")):
        deny = pols.get(f"default-deny-{direction}")
        check(deny is not None and deny["spec"]["podSelector"] == {} and not deny["spec"].get(direction)
              and deny["spec"].get("policyTypes") == [kind], r.say(f"default deny {direction} for every pod"))
    ingress = {w: {} for w in r.workloads}
    egress = {w: set() for w in r.workloads}
    for pname, np in pols.items():
        spec = np["spec"]
        targets = [w for w, (labels, _) in r.workloads.items() if matches(spec["podSelector"], labels)]
        check(targets, r.say(f"{pname}: selects some pod"))
        types = spec.get("policyTypes") or ["Ingress"]
        for rule in spec.get("ingress", []) if "Ingress" in types else []:
            who = peers(r, rule.get("from"))
            for w in targets:
                for port in rule_ports(r, pname, rule, [w], "ingress"):
                    ingress[w].setdefault(port, set()).update(who)
        for rule in spec.get("egress", []) if "Egress" in types else []:
            to = peers(r, rule.get("to"))
            for port in rule_ports(r, pname, rule, [], "egress"):
                for w in targets:
                    egress[w].update((peer, port) for peer in to)

    collector, prometheus = r.has_collector(), r.has_prometheus()
    want_in = {w: {} for w in r.workloads}
    for name in SERVICES:
        want_in[name][HEALTH_PORT] = {EVERYONE}
    for callee, callers in CALLERS.items():
        want_in[callee][GRPC_PORT] = set(callers)
    want_in["gateway"][PUBLIC_PORT] = {EVERYONE}
    if collector:
        want_in[COLLECTOR] = {OTLP: set(SERVICES), 13133: {EVERYONE}}
        if prometheus:
            want_in[COLLECTOR][8889] = {"ns:monitoring"}
    for w in r.workloads:
        got = {p: ({EVERYONE} if EVERYONE in s else s) for p, s in ingress[w].items()}
        check(ALL_PORTS not in got, r.say(f"{w}: no ingress rule opens every port"))
        for port in sorted(set(got) | set(want_in[w]), key=str):
            have, want = got.get(port, set()), want_in[w].get(port, set())
            check(have == want, r.say(f"{w}: ingress port {port} admits {sorted(have) or 'nobody'}, expected {sorted(want) or 'nobody'}"))

    callees = {w: {c for c, callers in CALLERS.items() if w in callers} for w in r.workloads}
    for w in r.workloads:
        want = {(DNS, "53/UDP"), (DNS, 53)} | {(c, GRPC_PORT) for c in callees[w]}
        if collector and w in SERVICES:
            want.add((COLLECTOR, OTLP))
        got = egress[w]
        check(not any(p == ALL_PORTS for _, p in got), r.say(f"{w}: no egress rule opens every port"))
        internal = {(peer, p) for peer, p in got if peer in r.workloads or peer == DNS}
        outside = {(peer, p) for peer, p in got if (peer, p) not in internal}
        check(internal == want, r.say(f"{w}: egress inside the cluster is {sorted(map(str, internal))}, expected {sorted(map(str, want))}"))
        check({p for _, p in outside} == EXTERNAL.get(w, set()),
              r.say(f"{w}: egress outside the cluster on ports {sorted({str(p) for _, p in outside})}, expected {sorted(EXTERNAL.get(w, set()))}"))
        if r.name.startswith("prod"):
            check(all(peer.startswith("ip:") for peer, _ in outside),
                  r.say(f"{w}: outside egress narrowed to networks in prod (got {sorted({p for p, _ in outside})})"))


def main():
    out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/k8s")
    examples = {
        "operator-job": load(REPO / "k8s/examples/operator-job.yaml")[0],
        "secrets": load(REPO / "k8s/examples/secrets.yaml"),
        "externalsecrets": [],
    }
    renders = {name: load(out / f"{name}.yaml") for name in ("base", "dev", "prod", "prod-all")}
    examples["externalsecrets"] = [d for d in renders["prod-all"] if d["kind"] == "ExternalSecret"]
    check(examples["externalsecrets"], "prod-all renders the external-secrets component")
    check(any(d["kind"] == "PrometheusRule" for d in renders["prod-all"]), "prod-all renders the prometheus component")
    retire = [d for d in renders["prod-all"] if d["kind"] == "CronJob" and d["metadata"]["name"] == "master-key-retirement"]
    check(retire and retire[0]["spec"].get("suspend") is True,
          "prod-all renders the master-key-retirement component, suspended until an operator sets the old key")
    check(not any(d["kind"] == "CronJob" for n in ("base", "dev", "prod") for d in renders[n]),
          "base, dev and prod run no CronJob (the master-key retirement is opt-in)")
    check(not any(d["kind"] in ("PrometheusRule", "ServiceMonitor", "ExternalSecret")
                  for n in ("base", "dev", "prod") for d in renders[n]),
          "base, dev and prod apply without the Prometheus Operator's and External Secrets' CRDs")
    for name, docs in renders.items():
        r = Render(name, docs, examples)
        image = check_pods(r)
        check_services(r)
        check_config(r, image)
        check_identities(r)
        check_secrets(r)
        check_cronjobs(r, image)
        check_network(r)
    finish("k8s manifests")


if __name__ == "__main__":
    main()
