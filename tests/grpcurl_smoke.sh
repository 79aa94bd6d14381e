#!/usr/bin/env bash
# Brings up the `make dev` stack on free ports in a scratch folder and checks it the way a
# developer would, with the real grpcurl: reflection lists the public API, every service
# answers SERVING over (m)TLS, the gateway reaches its backends, and SIGTERM stops it all.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
passed=0
failed=0
check() { # description, then a command
  local what=$1; shift
  if "$@" >"$tmp/out" 2>&1; then
    passed=$((passed + 1)); echo "ok   $what"
  else
    failed=$((failed + 1)); echo "FAIL $what"; sed 's/^/     /' "$tmp/out"
  fi
}

free_ports() { python3 -c 'import socket
socks=[socket.socket() for _ in range(7)]
[s.bind(("127.0.0.1",0)) for s in socks]
print(" ".join(str(s.getsockname()[1]) for s in socks))'; }
read -r mongo redis gateway auth keyvault folders invitations <<<"$(free_ports)"

mkdir -p "$tmp/deploy"
cp "$repo/deploy/dev.toml" "$tmp/deploy/"
# dev.sh numbers the internal ports from a base; give each service its own free port instead.
export DEV_ROOT=$tmp DEV_MONGO_PORT=$mongo DEV_REDIS_PORT=$redis DEV_GATEWAY_PORT=$gateway
run_stack() {
  TS_AUTH__LISTEN=127.0.0.1:$auth TS_UPSTREAMS__AUTH__URL=https://127.0.0.1:$auth \
  TS_KEYVAULT__LISTEN=127.0.0.1:$keyvault TS_UPSTREAMS__KEYVAULT__URL=https://127.0.0.1:$keyvault \
  TS_FOLDERS__LISTEN=127.0.0.1:$folders TS_UPSTREAMS__FOLDERS__URL=https://127.0.0.1:$folders \
  TS_INVITATIONS__LISTEN=127.0.0.1:$invitations TS_UPSTREAMS__INVITATIONS__URL=https://127.0.0.1:$invitations \
  "$repo/deploy/dev.sh" >"$tmp/dev.log" 2>&1 &
  stack=$!
  for _ in $(seq 1 600); do
    grep -q "teamshare is up" "$tmp/dev.log" && return 0
    kill -0 "$stack" 2>/dev/null || break
    sleep 0.2
  done
  echo "stack did not come up:"; cat "$tmp/dev.log"; return 1
}
stop_stack() {
  kill -TERM "$stack" 2>/dev/null || true
  wait "$stack" 2>/dev/null || true
}
trap 'stop_stack; rm -rf "$tmp"' EXIT

run_stack
certs=$tmp/.dev/certs
grpcurl=("$repo/.venv/bin/grpcurl" -max-time 10)
public=("${grpcurl[@]}" -cacert "$certs/ca.pem" "localhost:$gateway")
check "gateway reflection lists the public services" \
  bash -c '"$@" list | tee /dev/stderr | grep -qx teamshare.v1.FolderService' _ "${public[@]}"
check "gateway reflection describes an RPC" \
  bash -c '"$@" describe teamshare.v1.ItemService.CreateItem | grep -q CreateItemRequest' _ "${public[@]}"
check "gateway health is SERVING" \
  bash -c '"$@" grpc.health.v1.Health/Check | grep -q SERVING' _ "${public[@]}"
for pair in auth:$auth keyvault:$keyvault folders:$folders invitations:$invitations; do
  name=${pair%%:*}; port=${pair##*:}
  check "$name health is SERVING over mTLS" \
    bash -c "\$@ 127.0.0.1:$port grpc.health.v1.Health/Check | grep -q SERVING" _ \
    "${grpcurl[@]}" -cacert "$certs/ca.pem" -cert "$certs/operator.pem" -key "$certs/operator.key" -servername "$name"
done
check "folders reflection works behind mTLS" \
  bash -c "\$@ 127.0.0.1:$folders list | grep -qx teamshare.internal.v1.FolderMembershipService" _ \
  "${grpcurl[@]}" -cacert "$certs/ca.pem" -cert "$certs/operator.pem" -key "$certs/operator.key" -servername folders
check "an internal service refuses a client without a certificate" \
  bash -c "! \$@ 127.0.0.1:$auth grpc.health.v1.Health/Check" _ "${grpcurl[@]}" -cacert "$certs/ca.pem" -servername auth
check "the wrong service's certificate gets PermissionDenied" \
  bash -c "\$@ -d '{\"folder_id\":\"f\"}' 127.0.0.1:$keyvault teamshare.internal.v1.KeyVaultService/GetDataKey 2>&1 | grep -q PermissionDenied" _ \
  "${grpcurl[@]}" -cacert "$certs/ca.pem" -cert "$certs/invitations.pem" -key "$certs/invitations.key" -servername keyvault
check "gateway status sees every backend serving" \
  bash -c '[ "$("$@" teamshare.v1.SystemService/GetStatus | grep -c "\"serving\": true")" = 3 ]' _ "${public[@]}"
check "a public call without a token is Unauthenticated" \
  bash -c '"$@" teamshare.v1.FolderService/ListFolders 2>&1 | grep -q Unauthenticated' _ "${public[@]}"

# The sharing story, as a developer would drive it with grpcurl.
# shellcheck source=tests/grpcurl_story.sh
source "$repo/tests/grpcurl_story.sh"

# The same story through the Python client (clients/python): TLS to the gateway, email codes
# from the development mailbox, token refresh from many threads, typed stubs. `make smoke`
# generates the stubs first (make python-client); run on its own, this script regenerates them
# when the protos changed.
check "the Python client's stubs are generated from the public protos" \
  "$repo/.venv/bin/python" "$repo/clients/python/generate.py" --if-stale
check "the sharing story passes through the Python client (tests/python_story.py)" \
  "$repo/.venv/bin/python" "$repo/tests/python_story.py" \
  --gateway "localhost:$gateway" --ca "$certs/ca.pem" --mail-dir "$tmp/.dev/mail"

stop_stack
# The bracket keeps these patterns from matching the checking shell's own command line.
check "SIGTERM stops every process of the stack" \
  bash -c "! pgrep -f '${tmp}/[.]dev' && ! pgrep -f '${tmp}/deploy/[d]ev.toml' && ! pgrep -f 'redis-server 127.0.0.1:${redis}\$'"
check "the stack logged a graceful shutdown" grep -q "shutting down: health is NOT_SERVING" "$tmp/.dev/logs/teamshare.log"

# The data directory survives a restart: same certificates, database files still there.
ca_before=$(sha256sum "$certs/ca.pem")
run_stack
check "a restart keeps the certificates and data directory" \
  bash -c "[ \"\$(sha256sum '$certs/ca.pem')\" = '$ca_before' ] && [ -n \"\$(ls -A '$tmp/.dev/mongo')\" ]"
check "the restarted stack is healthy" \
  bash -c '"$@" grpc.health.v1.Health/Check | grep -q SERVING' _ "${public[@]}"
stop_stack

echo "grpcurl smoke: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
