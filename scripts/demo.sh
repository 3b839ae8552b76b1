#!/usr/bin/env bash
# `make demo`: start the local stack (idempotent), apply examples/, show what Ferry made of them,
# then show an invalid change being refused while the running configuration stays as it was.
set -euo pipefail
cd "$(dirname "$0")/.."
FERRY=.venv/bin/ferry

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Starting the local control plane, PostgreSQL, Redis, the operator and its webhooks (ferry dev up)"
$FERRY dev up
eval "$($FERRY dev env)"

step "A password in the dev Vault, for examples/40-secret.yaml"
vault kv put -mount=secret platform/payments-db password="demo-$(date +%s)" >/dev/null
vault kv metadata get -mount=secret platform/payments-db | grep -E '^current_version'

step "Applying examples/"
kubectl apply --server-side -f examples/

step "Waiting for Ferry to report Ready"
kubectl wait --for=condition=Ready configentry --all -n platform --timeout=90s
kubectl wait --for=condition=Ready featureflag --all -n platform --timeout=90s || true

step "kubectl get ferry -n platform"
kubectl get ferry -n platform

step "Materialised ConfigMaps (label app.kubernetes.io/managed-by=ferry)"
kubectl get configmaps -A -l app.kubernetes.io/managed-by=ferry

step "payments-prod/payments-config (format env: one key per leaf, usable with envFrom)"
kubectl get configmap payments-config -n payments-prod -o go-template='{{range $k, $v := .data}}{{$k}}={{$v}}{{"\n"}}{{end}}'

step "Where payments-api went (payments-dev has not opted in, so nothing was written there)"
kubectl get configentry payments-api -n platform \
  -o go-template='{{range .status.targets}}{{.namespace}}: synced={{.synced}}{{with .reason}} ({{.}}){{end}}{{"\n"}}{{end}}'

step "The feature flag, evaluated by Ferry's evaluator (the same answer flagd gives from ferry-flags)"
$FERRY flags eval platform/new-checkout --targeting-key alice --attr email=alice@example.com
$FERRY flags eval platform/new-checkout --targeting-key bob --attr region=eu-west-1
kubectl get configmap ferry-flags -n payments-prod -o jsonpath='{.data.flags\.json}' | head -c 400; echo " ..."

step "payments-db: a Secret from Vault beside its ConfigMap (status keeps the version and an HMAC, never the value)"
kubectl get secret payments-db -n payments-prod -o go-template='type={{.type}} keys={{range $k, $v := .data}}{{$k}} {{end}}{{"\n"}}'
kubectl get configentry payments-db -n platform \
  -o go-template='{{range .status.secrets}}{{.name}}: Vault {{.path}} key {{.key}} version {{.version}}{{"\n"}}{{end}}'

step "Rotation: a new version in Vault, picked up on demand (annotation ferry.dev/refresh)"
want=$(vault kv put -mount=secret -field=version platform/payments-db password="rotated-$(date +%s)")
kubectl annotate configentry payments-db -n platform --overwrite ferry.dev/refresh="$(date +%s)" >/dev/null
for _ in $(seq 1 100); do
  version=$(kubectl get configentry payments-db -n platform -o jsonpath='{.status.secrets[0].version}')
  [ "$version" = "$want" ] && break
  sleep 0.2
done
kubectl get configentry payments-db -n platform \
  -o go-template='{{range .status.secrets}}{{.name}}: now version {{.version}}{{"\n"}}{{end}}revision {{.status.revision}}{{"\n"}}'

step "History of payments-api (who, when, why), served as a Kubernetes API (history.ferry.dev)"
kubectl get configrevisions -n platform --field-selector spec.entry=payments-api
$FERRY history platform/payments-api

step "An invalid change: poolSize 500 against a schema maximum of 100"
if out=$(kubectl apply --server-side -f examples/invalid/ 2>&1); then
  echo "$out"
  echo "(stored: the operator refuses to materialise it)"
  kubectl wait --for=condition=Valid=False configentry/payments-api -n platform --timeout=60s >/dev/null
  kubectl get configentry payments-api -n platform \
    -o go-template='{{range .status.conditions}}{{if eq .type "Valid"}}Valid={{.status}} {{.reason}}: {{.message}}{{"\n"}}{{end}}{{end}}'
else
  echo "refused: $out"
fi

step "The running configuration is untouched"
kubectl get configmap payments-config -n payments-prod -o jsonpath='{.data.DB_POOLSIZE}{"\n"}'

cat <<'EOT'

The stack keeps running. Explore it with:
  eval "$(.venv/bin/ferry dev env)"     # KUBECONFIG, KUBECACHEDIR, FERRY_DATABASE_URL, FERRY_REDIS_URL, VAULT_ADDR, VAULT_TOKEN; kubectl and vault on PATH
  kubectl get ferry -A
Stop it with:
  .venv/bin/ferry dev down
EOT
