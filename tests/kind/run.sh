#!/usr/bin/env bash
# End to end on a kind cluster, with the same e2e suite CI runs on the local cluster of
# tests/cluster: build the images (scripts/images, no Docker build needed), load them
# into kind, and run the suite against it. The node module (tests/tests/node.rs)
# installs the Helm chart itself, protects the demo workload through the injected
# sidecar and walks keys through their life.
#
#   tests/kind/run.sh                  everything; the cluster is deleted at the end
#   KEEP_CLUSTER=1 tests/kind/run.sh   keep the cluster (and print how to reach it)
#   ONLY_NODE=1 tests/kind/run.sh      only the node module
#
# Needs docker and kind (the cluster), kubectl, curl, cargo, python3, and what
# scripts/images needs (rustup's musl target, musl-tools, umoci, skopeo: Debian packages,
# installed when missing and run as root). Environment: CLUSTER (default turnpike-e2e),
# KIND_NODE_IMAGE.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)

CLUSTER=${CLUSTER:-turnpike-e2e}
# The Kubernetes 1.33 image published with kind v0.29.0. kind node images are built for
# a kind release: with another kind, take the v1.33 image (with its digest) from that
# release's notes.
KIND_NODE_IMAGE=${KIND_NODE_IMAGE:-kindest/node:v1.33.1@sha256:050072256b9a903bd914c0b2866828150cb229cea0efe5892e2b644d5dd3b34f}
KEEP_CLUSTER=${KEEP_CLUSTER:-0}
ONLY_NODE=${ONLY_NODE:-0}

work=$(mktemp -d)
export KUBECONFIG="$work/kubeconfig"
start=$(date +%s)

step() { printf '\n==> %s [%ss]\n' "$*" "$(($(date +%s) - start))"; }
die() {
  printf '\nkind e2e: FAILED: %s\n' "$*" >&2
  exit 1
}

for tool in docker kind kubectl curl cargo python3; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed"
done
docker info >/dev/null 2>&1 || die "the Docker daemon is not reachable (docker info failed)"

cleanup() {
  local status=$?
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

step "scripts/chart-check"
scripts/chart-check
TURNPIKE_E2E_HELM=$(command -v helm || scripts/chart-check --helm-path)
export TURNPIKE_E2E_HELM

step "kind create cluster --name $CLUSTER ($KIND_NODE_IMAGE)"
kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
kind create cluster --name "$CLUSTER" --image "$KIND_NODE_IMAGE" --kubeconfig "$KUBECONFIG" --wait 180s

step "scripts/images (operator, sidecar, demo workload), kind load image-archive"
scripts/images --no-run
for image in turnpike-operator turnpike-sidecar turnpike-demo-upstream; do
  kind load image-archive --name "$CLUSTER" "target/images/$image.tar"
done
TURNPIKE_E2E_IMAGE_TAG=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
export TURNPIKE_E2E_IMAGE_TAG

step "cargo build (host binaries)"
cargo build --locked --workspace --bins
export PATH="${CARGO_TARGET_DIR:-$repo/target}/debug:$PATH" # `kubectl turnpike` finds the plugin here

# The webhook test registers https://127.0.0.1:<port>, which kind's API server (in a
# container) cannot reach; the node module tests the injector through its Service.
# TURNPIKE_E2E_LOCAL_NODE stays unset: pod and Service addresses are inside Docker's
# network, so the node module goes through `kubectl port-forward`.
export TURNPIKE_E2E_USE_KUBECONFIG=1 TURNPIKE_E2E_WEBHOOK_UNREACHABLE=1
filter='not binary(webhook)'
[ "$ONLY_NODE" = 1 ] && filter='binary(node)'
step "e2e suite against kind ($filter)"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked -p turnpike-e2e --run-ignored only --test-threads 1 --no-fail-fast -E "$filter"
else
  cargo test --locked -p turnpike-e2e --test node -- --ignored --test-threads 1
fi
step "done"
