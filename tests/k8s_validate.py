#!/usr/bin/env python3
"""Schema validation of rendered manifests, every kind included.

Built-in kinds: `kubernetes-validate --strict` (run from here). It knows the built-in kinds
only, and only warns about the others, passing over them: cert-manager's Certificate and
Issuer, the Prometheus Operator's ServiceMonitor and PrometheusRule, External Secrets'
ExternalSecret. This script fails on such a warning for any kind it does not check itself, and
checks those custom resources against their CRDs' schemas, as published in the
@kubernetes-models npm packages (pinned in package.json):

- the packages' validators (the CRDs' OpenAPI schemas: types, required fields, enums,
  patterns), run by node;
- unknown fields, which CRD schemas do not reject (the API server prunes them, or refuses them
  under strict field validation): each object is type-checked by `tsc` as a literal of the
  package's TypeScript interface, where an unknown property is an error.

So no kind passes unchecked: a kind that neither knows fails.

usage: k8s_validate.py WORKDIR RENDERED.yaml...   (WORKDIR: inside the repository, for node_modules)
"""
import json
import pathlib
import re
import subprocess
import sys

import yaml

REPO = pathlib.Path(__file__).resolve().parent.parent

# (apiVersion, kind) -> npm module (under @kubernetes-models) and class name.
CRDS = {
    ("cert-manager.io/v1", "Certificate"): "cert-manager/cert-manager.io/v1/Certificate",
    ("cert-manager.io/v1", "Issuer"): "cert-manager/cert-manager.io/v1/Issuer",
    ("cert-manager.io/v1", "ClusterIssuer"): "cert-manager/cert-manager.io/v1/ClusterIssuer",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheus-operator/monitoring.coreos.com/v1/PrometheusRule",
    ("external-secrets.io/v1", "ExternalSecret"): "external-secrets/external-secrets.io/v1/ExternalSecret",
    ("external-secrets.io/v1", "ClusterSecretStore"): "external-secrets/external-secrets.io/v1/ClusterSecretStore",
    ("external-secrets.io/v1", "SecretStore"): "external-secrets/external-secrets.io/v1/SecretStore",
}

failures = []
checked = 0
custom_failed = set()  # labels of custom resources that failed


def fail(what, label=None):
    failures.append(what)
    if label:
        custom_failed.add(label)
    print("FAIL", what)


def main():
    global checked
    work = pathlib.Path(sys.argv[1]).resolve()
    work.mkdir(parents=True, exist_ok=True)
    files = sys.argv[2:]
    run = subprocess.run([str(REPO / ".venv/bin/kubernetes-validate"), "--strict", "--quiet", *files],
                         cwd=REPO, capture_output=True, text=True)
    unknown = re.compile(r"Couldn't find schema for kind (\S+) with api version (\S+) ")
    for line in (run.stdout + run.stderr).splitlines():
        m = unknown.search(line)
        if m and (m.group(2), m.group(1)) in CRDS:
            continue  # checked below
        if m and m.group(1) == "Kustomization":
            continue
        fail(f"kubernetes-validate: {line}")
    if run.returncode and not failures:
        fail(f"kubernetes-validate exited with {run.returncode}")
    custom = {}  # canonical JSON -> (label, module)
    for path in files:
        for doc in yaml.safe_load_all(pathlib.Path(path).read_text()):
            if not doc:
                continue
            label = f"{pathlib.Path(path).name}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            key = (doc.get("apiVersion"), doc.get("kind"))
            if key in CRDS:
                custom.setdefault(json.dumps(doc, sort_keys=True), (label, CRDS[key]))
            else:
                checked += 1
    checked -= len(failures)  # each line kubernetes-validate complained about is one object
    docs = [(label, module, json.loads(text)) for text, (label, module) in custom.items()]
    if docs:
        check_custom(work, docs)
    print(f"schemas: {checked} passed, {len(failures)} failed (built-in kinds: kubernetes-validate --strict)")
    sys.exit(1 if failures else 0)


def check_custom(work, docs):
    global checked
    modules = sorted({m for _, m, _ in docs})
    name = {m: m.rsplit("/", 1)[1] for m in modules}
    alias = {m: f"{name[m]}{i}" for i, m in enumerate(modules)}

    # Runtime validation against the CRD schemas.
    mjs = [f'import {{ {name[m]} as {alias[m]} }} from "@kubernetes-models/{m}";' for m in modules]
    mjs.append("const docs = [")
    for label, m, doc in docs:
        mjs.append(f"  [{json.dumps(label)}, {alias[m]}, {json.dumps(doc)}],")
    mjs.append("];")
    mjs.append(
        "let failed = 0;\n"
        "for (const [label, Model, doc] of docs) {\n"
        "  try { new Model(doc).validate(); }\n"
        "  catch (e) { failed++; console.log(`FAIL ${label}: ${e.message}`); }\n"
        "}\n"
        "process.exit(failed ? 1 : 0);\n")
    (work / "crds.mjs").write_text("\n".join(mjs))

    # Unknown fields: each object as a literal of its interface; a line per object, so that
    # tsc's line numbers name it.
    ts = [f'import type {{ I{name[m]} as I{alias[m]} }} from "@kubernetes-models/{m}";' for m in modules]
    first = len(ts) + 1
    for i, (label, m, doc) in enumerate(docs):
        ts.append(f"export const d{i}: I{alias[m]} = {json.dumps(doc)};")
    (work / "crds.ts").write_text("\n".join(ts) + "\n")

    run = subprocess.run(["node", str(work / "crds.mjs")], cwd=REPO, capture_output=True, text=True)
    for line in run.stdout.splitlines():
        line = line.removeprefix("FAIL ")
        fail(line, next((label for label, _, _ in docs if line.startswith(label + ":")), "?"))
    if run.returncode and not run.stdout:
        fail(f"node: {run.stderr.strip()}")

    tsc = REPO / "node_modules/.bin/tsc"
    run = subprocess.run(
        [str(tsc), "--noEmit", "--strict", "--skipLibCheck", "--module", "nodenext", "--moduleResolution",
         "nodenext", "--target", "es2022", str(work / "crds.ts")],
        cwd=REPO, capture_output=True, text=True)
    for line in run.stdout.splitlines():
        # crds.ts(12,345): error TS2353: Object literal may only specify known properties...
        head, _, message = line.partition(": error ")
        try:
            row = int(head.rsplit("(", 1)[1].split(",")[0])
            label = docs[row - first][0]
        except (IndexError, ValueError):
            label = "crds.ts"
        fail(f"{label}: {message or line}", label)
    if run.returncode and not run.stdout:
        fail(f"tsc: {run.stderr.strip()}")
    checked += len([d for d in docs if d[0] not in custom_failed])


if __name__ == "__main__":
    main()
