#!/usr/bin/env bash
# Runs one `teamshare-cli operator` command inside the cluster, as a Job from
# k8s/examples/operator-job.yaml (the service image, the operator certificate, the label the
# NetworkPolicies admit), prints its output and exits with its status. Examples:
#   deploy/k8s-operator.sh license upsert acme --admin alice@example.com --domain example.com
#   deploy/k8s-operator.sh sharing off --license acme
#   deploy/k8s-operator.sh rewrap --kms-key alias/teamshare-2027 --batch 100
# Add --json for JSON output. Environment: NAMESPACE (teamshare), IMAGE (the template's: set it
# to the deployed image), KUBECTL (kubectl). Needs only kubectl (`kubectl patch --local`).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
kubectl=${KUBECTL:-kubectl}
namespace=${NAMESPACE:-teamshare}
if [ $# -eq 0 ]; then
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi

# The arguments as a JSON array of strings, for the patch.
json_args='"operator"'
for arg in "$@"; do
  escaped=${arg//\\/\\\\}
  escaped=${escaped//\"/\\\"}
  escaped=${escaped//$'\n'/\\n}
  escaped=${escaped//$'\t'/\\t}
  json_args+=",\"$escaped\""
done
patch="[{\"op\":\"replace\",\"path\":\"/spec/template/spec/containers/0/args\",\"value\":[$json_args]}"
patch+=",{\"op\":\"replace\",\"path\":\"/metadata/namespace\",\"value\":\"$namespace\"}"
if [ -n "${IMAGE:-}" ]; then
  patch+=",{\"op\":\"replace\",\"path\":\"/spec/template/spec/containers/0/image\",\"value\":\"$IMAGE\"}"
fi
patch+="]"

job=$("$kubectl" patch --local -f "$repo/k8s/examples/operator-job.yaml" --type=json -p "$patch" -o yaml \
  | "$kubectl" create -f - -o name)
echo "started $job" >&2
# Wait for its pod to start, then follow its output (rewrap reports progress on stderr).
"$kubectl" -n "$namespace" wait --for=condition=Ready=true pod -l "job-name=${job#job.batch/}" --timeout=120s >/dev/null 2>&1 || true
"$kubectl" -n "$namespace" logs -f "$job" || true
if "$kubectl" -n "$namespace" wait --for=condition=Complete "$job" --timeout=10s >/dev/null 2>&1; then
  exit 0
fi
echo "$job did not succeed: kubectl -n $namespace describe $job" >&2
exit 1
