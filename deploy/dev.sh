#!/usr/bin/env bash
# `make dev`: the whole stack on this machine. Starts the MongoDB-compatible server (durable,
# --sync-on-commit), Redis (append-only file) and all five teamshare services in one process
# over mTLS, prints how to reach the gateway, and stops everything on Ctrl-C or SIGTERM.
# State lives in .dev/ (certificates, database, Redis) and survives restarts.
#
# Knobs (environment): DEV_MONGO_PORT (27117), DEV_REDIS_PORT (6390), DEV_GATEWAY_PORT (8443),
# DEV_PORT_BASE (7100: auth +1, keyvault +2, folders +3, invitations +4), DEV_ROOT (the
# folder holding deploy/dev.toml and .dev/, default the repository), TEAMSHARE_BIN.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
root=${DEV_ROOT:-$repo}
data=$root/.dev
bin=${TEAMSHARE_BIN:-${CARGO_TARGET_DIR:-$repo/target}/debug/teamshare}
mongo_port=${DEV_MONGO_PORT:-27117}
redis_port=${DEV_REDIS_PORT:-6390}
gateway_port=${DEV_GATEWAY_PORT:-8443}
base=${DEV_PORT_BASE:-7100}

"$repo/deploy/install-prereqs.sh"
if [ ! -x "$bin" ]; then
  echo "missing $bin: run 'cargo build -p teamshare' (make dev does)" >&2
  exit 1
fi
"$bin" certs --out "$data/certs" --if-missing >/dev/null
mkdir -p "$data/mongo" "$data/redis" "$data/logs"

pids=()
cleanup() {
  trap - EXIT INT TERM
  if [ ${#pids[@]} -gt 0 ]; then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  echo "stopped"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_port() { # log-name port seconds
  for _ in $(seq 1 $(( $3 * 10 ))); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "$1 did not start on port $2; see $data/logs/$1.log" >&2
  return 1
}

"$repo/.venv/bin/secantusd-py" --host 127.0.0.1 --port "$mongo_port" --storage-path "$data/mongo" \
  --sync-on-commit --log-level WARNING >"$data/logs/mongo.log" 2>&1 &
pids+=($!)
redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$data/redis" --appendonly yes --save "" \
  >"$data/logs/redis.log" 2>&1 &
pids+=($!)
wait_port mongo "$mongo_port" 60
wait_port redis "$redis_port" 30

# Point the services at the ports chosen above, unless the caller already set them.
default() { if [ -z "${!1:-}" ]; then export "$1=$2"; fi; }
default TS_MONGODB__URI "mongodb://127.0.0.1:$mongo_port/?directConnection=true"
default TS_REDIS__URL "redis://127.0.0.1:$redis_port"
default TS_GATEWAY__LISTEN "127.0.0.1:$gateway_port"
i=1
for s in AUTH KEYVAULT FOLDERS INVITATIONS; do
  default "TS_${s}__LISTEN" "127.0.0.1:$((base + i))"
  default "TS_UPSTREAMS__${s}__URL" "https://127.0.0.1:$((base + i))"
  i=$((i + 1))
done

"$bin" dev --config "$root/deploy/dev.toml" > >(tee "$data/logs/teamshare.log") 2>&1 &
pids+=($!)
wait_port teamshare "$gateway_port" 60

cat <<MSG

teamshare is up.
  gateway (TLS):  localhost:$gateway_port
  internal:       auth :$((base + 1))  keyvault :$((base + 2))  folders :$((base + 3))  invitations :$((base + 4))  (mTLS)
  data:           $data

try:
  $repo/.venv/bin/grpcurl -cacert $data/certs/ca.pem localhost:$gateway_port list
  $repo/.venv/bin/grpcurl -cacert $data/certs/ca.pem localhost:$gateway_port teamshare.v1.SystemService/GetStatus
  $repo/.venv/bin/grpcurl -cacert $data/certs/ca.pem -cert $data/certs/operator.pem -key $data/certs/operator.key \\
      -servername folders 127.0.0.1:$((base + 3)) grpc.health.v1.Health/Check

Ctrl-C stops everything.
MSG

wait -n "${pids[@]}" || true
echo "a component exited; stopping the stack" >&2
exit 1
