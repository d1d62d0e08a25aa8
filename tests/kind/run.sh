#!/usr/bin/env bash
# End to end on a kind cluster: build the images with Docker, load them into kind,
# install the Helm chart, run the e2e suite against the cluster, then protect a real
# workload through the injected sidecar and walk a key through its life.
#
#   tests/kind/run.sh                  everything; the cluster is deleted at the end
#   KEEP_CLUSTER=1 tests/kind/run.sh   keep the cluster (and print how to reach it)
#   SKIP_SUITE=1 tests/kind/run.sh     skip the Rust e2e suite, only the kind checks
#
# Needs docker, kind, kubectl, curl, cargo (the suite and kubectl-turnpike run on this
# host) and python3 (scripts/chart-check, which also fetches helm unless one is on PATH).
# Environment: CLUSTER (default turnpike-e2e), KIND_NODE_IMAGE, TAG (image tag, default
# e2e), LOCAL_PORT (port-forward, default 18080), PROPAGATION_TIMEOUT (seconds a revoked
# key may keep working, default 120: kubelet refreshes projected Secrets on its sync
# period, typically 60-90 s).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)

CLUSTER=${CLUSTER:-turnpike-e2e}
# The Kubernetes 1.33 image published with kind v0.29.0. kind node images are built for
# a kind release: with another kind, take the v1.33 image (with its digest) from that
# release's notes.
KIND_NODE_IMAGE=${KIND_NODE_IMAGE:-kindest/node:v1.33.1@sha256:050072256b9a903bd914c0b2866828150cb229cea0efe5892e2b644d5dd3b34f}
TAG=${TAG:-e2e}
LOCAL_PORT=${LOCAL_PORT:-18080}
PROPAGATION_TIMEOUT=${PROPAGATION_TIMEOUT:-120}
KEEP_CLUSTER=${KEEP_CLUSTER:-0}
SKIP_SUITE=${SKIP_SUITE:-0}

OPERATOR_IMAGE=ghcr.io/turnpike/turnpike-operator:$TAG
SIDECAR_IMAGE=ghcr.io/turnpike/turnpike-sidecar:$TAG
SYSTEM_NS=turnpike-system
APP_NS=shop-e2e
ECHO_IMAGE=docker.io/hashicorp/http-echo:1.0
TOKEN_MARK='# TOKEN (shown once, store it now): '

work=$(mktemp -d)
export KUBECONFIG="$work/kubeconfig"
start=$(date +%s)
pf_pid=""

step() { printf '\n==> %s [%ss]\n' "$*" "$(($(date +%s) - start))"; }
die() { printf '\nkind e2e: FAILED: %s\n' "$*" >&2; exit 1; }

# --- prerequisites -------------------------------------------------------------------
for tool in docker kind kubectl curl cargo python3; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed"
done
docker info >/dev/null 2>&1 || die "the Docker daemon is not reachable (docker info failed)"

diagnostics() {
  echo "---- diagnostics ----"
  kubectl get pods -A -o wide || true
  kubectl -n "$SYSTEM_NS" logs -l app.kubernetes.io/name=turnpike-operator --all-containers --prefix --tail=200 || true
  kubectl -n "$APP_NS" describe pods || true
  kubectl -n "$APP_NS" logs -l app.kubernetes.io/name=orders -c turnpike-sidecar --tail=200 || true
  kubectl get mutatingwebhookconfiguration turnpike-injector -o yaml || true
  kubectl get events.events.k8s.io -A --sort-by=.metadata.creationTimestamp | tail -50 || true
}

cleanup() {
  local status=$?
  if [ -n "$pf_pid" ]; then kill "$pf_pid" 2>/dev/null || true; fi
  if [ $status -ne 0 ] && [ -s "$KUBECONFIG" ]; then diagnostics >&2; fi
  if [ "$KEEP_CLUSTER" = 1 ]; then
    mkdir -p "$repo/target"
    kind get kubeconfig --name "$CLUSTER" >"$repo/target/kind-$CLUSTER.kubeconfig" 2>/dev/null || true
    echo "cluster kept: export KUBECONFIG=$repo/target/kind-$CLUSTER.kubeconfig; delete with: kind delete cluster --name $CLUSTER"
  else
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
  exit $status
}
trap cleanup EXIT

# --- chart checks and helm -----------------------------------------------------------
step "scripts/chart-check"
scripts/chart-check
helm=$(command -v helm || scripts/chart-check --helm-path)

# --- cluster -------------------------------------------------------------------------
step "kind create cluster --name $CLUSTER ($KIND_NODE_IMAGE)"
kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
kind create cluster --name "$CLUSTER" --image "$KIND_NODE_IMAGE" --kubeconfig "$KUBECONFIG" --wait 180s

# --- images --------------------------------------------------------------------------
step "docker build $OPERATOR_IMAGE, $SIDECAR_IMAGE"
DOCKER_BUILDKIT=1 docker build -f images/operator.Dockerfile -t "$OPERATOR_IMAGE" .
DOCKER_BUILDKIT=1 docker build -f images/sidecar.Dockerfile -t "$SIDECAR_IMAGE" .
step "kind load docker-image"
kind load docker-image --name "$CLUSTER" "$OPERATOR_IMAGE" "$SIDECAR_IMAGE"

# --- host binaries: the suite and kubectl-turnpike -----------------------------------
step "cargo build (host binaries)"
cargo build --locked --workspace --bins
export PATH="${CARGO_TARGET_DIR:-$repo/target}/debug:$PATH" # `kubectl turnpike` finds the plugin here

# --- the e2e suite -------------------------------------------------------------------
# Before the chart: the suite starts its own operator processes on this host, which
# must not meet the chart's operator reconciling the same namespaces. The webhook test
# is left out here: it registers https://127.0.0.1:<port> and needs an API server on
# this host's loopback (the local control plane); kind's API server runs in a
# container. The injector is covered below with the chart's operator instead.
if [ "$SKIP_SUITE" != 1 ]; then
  step "e2e suite against kind (TURNPIKE_E2E_USE_KUBECONFIG=1)"
  export TURNPIKE_E2E_USE_KUBECONFIG=1
  # The RBAC test registers its webhook at this host's 127.0.0.1 too: it checks the
  # registration, but skips sending a pod through it.
  export TURNPIKE_E2E_WEBHOOK_UNREACHABLE=1
  if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --locked -p turnpike-e2e --run-ignored only --test-threads 1 --no-fail-fast \
      -E 'not binary(webhook)'
  else
    cargo test --locked -p turnpike-e2e -- --ignored --test-threads 1 --skip the_webhook_
  fi
  # Operators of the suite may have registered the injector for their own (now
  # deleted) namespaces; the chart's operator registers it afresh.
  kubectl delete mutatingwebhookconfiguration turnpike-injector --ignore-not-found
fi

# --- the chart -----------------------------------------------------------------------
step "helm install (namespace $SYSTEM_NS enforces Pod Security 'restricted')"
kubectl create namespace "$SYSTEM_NS"
kubectl label namespace "$SYSTEM_NS" pod-security.kubernetes.io/enforce=restricted
# The sidecar values are the defaults, spelled out: the checks below depend on them
# (Service targetPort `turnpike` -> 9080, the app on 8080, probes on 9901).
"$helm" install turnpike charts/turnpike --namespace "$SYSTEM_NS" \
  --set image.repository="${OPERATOR_IMAGE%:*}" --set image.tag="$TAG" --set image.pullPolicy=Never \
  --set sidecar.image.repository="${SIDECAR_IMAGE%:*}" --set sidecar.image.tag="$TAG" \
  --set sidecar.listenPort=9080 --set sidecar.upstreamPort=8080 --set sidecar.adminPort=9901 \
  --set webhook.failurePolicy=Fail \
  --wait --timeout 5m
kubectl -n "$SYSTEM_NS" rollout status deployment/turnpike-operator --timeout 180s

step "the operator registered turnpike-injector for its Service"
for _ in $(seq 1 60); do
  svc=$(kubectl get mutatingwebhookconfiguration turnpike-injector \
    -o jsonpath='{.webhooks[*].clientConfig.service.name}' 2>/dev/null || true)
  ca=$(kubectl get mutatingwebhookconfiguration turnpike-injector \
    -o jsonpath='{.webhooks[0].clientConfig.caBundle}' 2>/dev/null || true)
  [ -n "$ca" ] && [ "$svc" = "turnpike-operator-webhook turnpike-operator-webhook" ] && break
  sleep 2
done
[ -n "${ca:-}" ] || die "turnpike-injector was not registered with a caBundle"
policies=$(kubectl get mutatingwebhookconfiguration turnpike-injector -o jsonpath='{.webhooks[*].failurePolicy}')
[ "$policies" = "Fail Fail" ] || die "turnpike-injector failurePolicy '$policies', expected Fail (webhook.failurePolicy)"
holder=$(kubectl -n "$SYSTEM_NS" get lease turnpike-operator -o jsonpath='{.spec.holderIdentity}')
kubectl -n "$SYSTEM_NS" get pod "$holder" >/dev/null || die "Lease holder $holder is not an operator pod"
echo "leader: $holder"

# --- a protected workload ------------------------------------------------------------
step "policies and a key for target orders in $APP_NS"
kubectl create namespace "$APP_NS"
kubectl label namespace "$APP_NS" pod-security.kubernetes.io/enforce=restricted
kubectl apply -f - <<EOF
apiVersion: turnpike.dev/v1alpha1
kind: AccessPolicy
metadata: {name: orders, namespace: $APP_NS}
spec:
  targetRef: {name: orders}
  credentials: [ApiKeyHeader, Bearer]
  public:
    - {path: /healthz}
  rules:
    - match: {methods: [GET, HEAD], path: "/orders/**"}
      scopes: ["orders:read"]
    - match: {methods: [POST, PUT, PATCH, DELETE], path: "/orders/**"}
      scopes: ["orders:write"]
  defaultAction: Deny
---
apiVersion: turnpike.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: orders, namespace: $APP_NS}
spec:
  targetRef: {name: orders}
  perKey: {rate: 1, per: 1h, burst: 5}
EOF
# The key exists before the pod, so the bundle the pod mounts at start already has it.
kubectl turnpike issue reader -n "$APP_NS" --scopes orders:read --targets orders \
  --owner kind-e2e --expires 24h >"$work/issue.out"
token=""
while IFS= read -r line; do
  if [[ $line == "$TOKEN_MARK"* ]]; then token=${line#"$TOKEN_MARK"}; fi
done <"$work/issue.out"
[ -n "$token" ] || die "kubectl turnpike issue printed no token: $(cat "$work/issue.out")"
key_id=$(kubectl -n "$APP_NS" get apikey reader -o jsonpath='{.status.keyId}')
for _ in $(seq 1 60); do
  keys=$(kubectl -n "$APP_NS" get secret turnpike-orders -o jsonpath='{.data.keys\.json}' 2>/dev/null | base64 -d 2>/dev/null || true)
  grep -q "$key_id" <<<"$keys" && break
  sleep 1
done
grep -q "$key_id" <<<"$keys" || die "key $key_id never reached bundle turnpike-orders"
kubectl -n "$APP_NS" get configmap turnpike-orders >/dev/null

step "workload orders (http-echo on 8080), annotated turnpike.dev/inject"
kubectl apply -f - <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: orders, namespace: $APP_NS}
spec:
  replicas: 1
  selector:
    matchLabels: {app.kubernetes.io/name: orders}
  template:
    metadata:
      labels: {app.kubernetes.io/name: orders}
      annotations:
        turnpike.dev/inject: "true"
    spec:
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        seccompProfile: {type: RuntimeDefault}
      containers:
        - name: app
          image: $ECHO_IMAGE
          args: ["-listen=:8080", "-text=orders says hello"]
          ports:
            - {name: http, containerPort: 8080}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
---
apiVersion: v1
kind: Service
metadata: {name: orders, namespace: $APP_NS}
spec:
  selector: {app.kubernetes.io/name: orders}
  ports:
    - {name: http, port: 80, targetPort: turnpike}
EOF
kubectl -n "$APP_NS" rollout status deployment/orders --timeout 180s
pod=$(kubectl -n "$APP_NS" get pod -l app.kubernetes.io/name=orders -o jsonpath='{.items[0].metadata.name}')
image=$(kubectl -n "$APP_NS" get pod "$pod" -o jsonpath='{.spec.initContainers[?(@.name=="turnpike-sidecar")].image}')
restart=$(kubectl -n "$APP_NS" get pod "$pod" -o jsonpath='{.spec.initContainers[?(@.name=="turnpike-sidecar")].restartPolicy}')
[ "$image" = "$SIDECAR_IMAGE" ] || die "pod $pod has no injected sidecar $SIDECAR_IMAGE (found '$image')"
[ "$restart" = Always ] || die "the sidecar is not a native sidecar (restartPolicy '$restart')"
args=$(kubectl -n "$APP_NS" get pod "$pod" -o jsonpath='{.spec.initContainers[?(@.name=="turnpike-sidecar")].args}')
[[ $args == *'"--admin-token-file","/var/run/turnpike/admin/token"'* ]] \
  || die "the sidecar is not given the admin token file: $args"
shards=$(kubectl -n "$APP_NS" get pod "$pod" -o jsonpath='{.spec.volumes[?(@.name=="turnpike-bundle")].projected.sources[*].secret.name}')
[[ $shards == *"turnpike-orders.keys-15"* ]] || die "the bundle volume does not project the key shards: $shards"
injected=$(kubectl -n "$APP_NS" get pod "$pod" -o jsonpath='{.metadata.annotations.turnpike\.dev/injected}')
[ -n "$injected" ] || die "pod $pod lacks the turnpike.dev/injected annotation"
ports=$(kubectl -n "$APP_NS" get endpointslice -l kubernetes.io/service-name=orders -o jsonpath='{.items[*].ports[*].port}')
[ "$ports" = 9080 ] || die "Service orders does not reach the sidecar's port turnpike (EndpointSlice ports: '$ports')"
echo "sidecar injected into $pod (operator $injected); Service orders -> :9080"

# --- requests through the sidecar ----------------------------------------------------
step "kubectl port-forward svc/orders $LOCAL_PORT:80"
port_forward() { # target, remote port
  kubectl -n "$APP_NS" port-forward "$1" "$LOCAL_PORT:$2" >"$work/pf.log" 2>&1 &
  pf_pid=$!
  for _ in $(seq 1 30); do
    curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$LOCAL_PORT/healthz" && return 0
    kill -0 "$pf_pid" 2>/dev/null || break
    sleep 1
  done
  kill "$pf_pid" 2>/dev/null || true
  pf_pid=""
  return 1
}
# kubectl resolves a Service's named targetPort among the pod's containers; a kubectl
# that does not look at native sidecars (init containers) cannot, so fall back to the pod.
if ! port_forward svc/orders 80; then
  echo "port-forward to the Service failed ($(cat "$work/pf.log")); using pod/$pod:9080"
  port_forward "pod/$pod" 9080 || die "port-forward failed: $(cat "$work/pf.log")"
fi
base="http://127.0.0.1:$LOCAL_PORT"
status() { curl -s -o "$work/body" -D "$work/headers" -w '%{http_code}' --max-time 10 "$@"; }
expect() { # code, what, curl args...
  local want=$1 what=$2 got
  shift 2
  got=$(status "$@")
  [ "$got" = "$want" ] || die "$what: expected $want, got $got: $(cat "$work/headers" "$work/body")"
  echo "ok: $what -> $got"
}
expect 200 "public route /healthz, no key" "$base/healthz"
expect 401 "no key" "$base/orders/1"
grep -qi '^www-authenticate:' "$work/headers" || die "401 without WWW-Authenticate"
expect 200 "GET with the key issued by kubectl turnpike issue" -H "X-API-Key: $token" "$base/orders/1"
grep -q 'orders says hello' "$work/body" || die "the upstream's answer did not come through: $(cat "$work/body")"
expect 200 "GET with the key as a Bearer token" -H "Authorization: Bearer $token" "$base/orders/2"
expect 403 "POST without scope orders:write" -X POST -H "X-API-Key: $token" "$base/orders/1"
limited=""
for _ in $(seq 1 8); do
  code=$(status -H "X-API-Key: $token" "$base/orders/1")
  if [ "$code" = 429 ]; then limited=1; break; fi
  [ "$code" = 200 ] || die "during the burst: expected 200 or 429, got $code: $(cat "$work/body")"
done
[ -n "$limited" ] || die "no 429 after the burst of 5"
grep -qi '^retry-after:' "$work/headers" || die "429 without Retry-After"
echo "ok: 429 after the burst, with Retry-After"

# --- revoke --------------------------------------------------------------------------
step "kubectl turnpike revoke; the sidecar refuses the key within ${PROPAGATION_TIMEOUT}s"
kubectl turnpike revoke reader -n "$APP_NS" --wait
revoked_at=$(date +%s)
refused=""
while [ $(($(date +%s) - revoked_at)) -le "$PROPAGATION_TIMEOUT" ]; do
  # 429 until the mounted bundle updates (the key is rate limited), then 401.
  code=$(status -H "X-API-Key: $token" "$base/orders/1")
  if [ "$code" = 401 ]; then refused=1; break; fi
  sleep 5
done
[ -n "$refused" ] || die "the revoked key still worked after ${PROPAGATION_TIMEOUT}s"
echo "ok: revoked key refused after $(($(date +%s) - revoked_at))s"

# --- status, Events, list ------------------------------------------------------------
step "status, Events and kubectl turnpike list"
phase=$(kubectl -n "$APP_NS" get apikey reader -o jsonpath='{.status.phase}')
[ "$phase" = Revoked ] || die "ApiKey reader phase '$phase', expected Revoked"
kubectl -n "$APP_NS" describe apikey reader >"$work/describe.out"
for reason in KeyIssued KeyRevoked; do
  grep -q "$reason" "$work/describe.out" || die "no $reason Event on ApiKey reader: $(cat "$work/describe.out")"
done
! grep -qF "$token" "$work/describe.out" || die "the token appears in kubectl describe"
kubectl turnpike list -n "$APP_NS" >"$work/list.out"
line=$(grep -E '^reader[[:space:]]' "$work/list.out" || true)
[[ $line == *"$key_id"* && $line == *Revoked* ]] \
  || die "kubectl turnpike list does not show reader ($key_id) as Revoked: $(cat "$work/list.out")"
cat "$work/list.out"
# Nothing secret in the sidecar's log.
kubectl -n "$APP_NS" logs "$pod" -c turnpike-sidecar >"$work/sidecar.log"
! grep -qF "$token" "$work/sidecar.log" || die "the token appears in the sidecar log"

step "kind e2e passed"
