#!/usr/bin/env bash
# Brings up lastcall's kind cluster (1 control-plane + 2 workers, hack/kind/cluster.yaml) and
# waits until every node is Ready. Idempotent: an existing cluster of that name is kept
# (--recreate deletes it first).
#
# Node image, in this order:
#   1. $KIND_NODE_IMAGE when set;
#   2. kind's default kindest/node image when Docker has it or can pull it;
#   3. else the offline image hack/node-image/build.sh assembles from Debian packages and Go
#      modules (cached by a hash of its inputs: the first build takes ~30 min on 2 cores, later
#      runs reuse it). Set LASTCALL_KIND_OFFLINE=1 to skip trying the pull.
#
# Usage: hack/kind-up.sh [--help] [--recreate]
# Env:   KIND_CLUSTER_NAME (default lastcall), KIND_NODE_IMAGE, LASTCALL_KIND_OFFLINE,
#        KUBECONFIG (kind writes the cluster's context there; default ~/.kube/config),
#        KIND (a kind binary; default: kind v0.33.0 built from its Go module, cached)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

recreate=false
for a in "$@"; do
  case $a in
    -h | --help) usage; exit 0 ;;
    --recreate) recreate=true ;;
    *) usage >&2; die "unknown argument: $a" ;;
  esac
done

KIND_VERSION=v0.33.0
# kind v0.33.0's default node image (sigs.k8s.io/kind pkg/apis/config/defaults/image.go)
KIND_DEFAULT_IMAGE=kindest/node:v1.37.0@sha256:a1ed56cfb0e7b93589bdf97c8cd566405a265939e3620fc4f5de89adff580ae5
CLUSTER=${KIND_CLUSTER_NAME:-lastcall}
CONFIG=$REPO_ROOT/hack/kind/cluster.yaml
start=$SECONDS

"$REPO_ROOT/hack/docker-up.sh"

if [[ -n ${KIND:-} ]]; then
  kind=$KIND
else
  kind=$("$REPO_ROOT/hack/build-gotool.sh" sigs.k8s.io/kind "$KIND_VERSION")
fi

if "$kind" get clusters 2>/dev/null | grep -qxF "$CLUSTER"; then
  if $recreate; then
    log "deleting the existing cluster $CLUSTER (--recreate)"
    "$kind" delete cluster --name "$CLUSTER"
  else
    log "cluster $CLUSTER exists (use --recreate for a new one); checking its nodes"
    docker exec "$CLUSTER-control-plane" kubectl --kubeconfig /etc/kubernetes/admin.conf \
      wait --for=condition=Ready nodes --all --timeout=120s >/dev/null
    "$kind" export kubeconfig --name "$CLUSTER" >/dev/null 2>&1
    log "cluster $CLUSTER is Ready (kubectl context kind-$CLUSTER)"
    exit 0
  fi
fi

image=${KIND_NODE_IMAGE:-}
if [[ -z $image ]]; then
  if docker image inspect "$KIND_DEFAULT_IMAGE" >/dev/null 2>&1; then
    image=$KIND_DEFAULT_IMAGE
  elif [[ ${LASTCALL_KIND_OFFLINE:-} != 1 ]] && { log "trying to pull ${KIND_DEFAULT_IMAGE%@*}"; timeout 600 docker pull "$KIND_DEFAULT_IMAGE" >/dev/null 2>&1; }; then
    image=$KIND_DEFAULT_IMAGE
  else
    log "${KIND_DEFAULT_IMAGE%@*} is neither present nor pullable: using the offline node image"
    image=$("$REPO_ROOT/hack/node-image/build.sh")
  fi
fi
log "creating cluster $CLUSTER with $image (1 control-plane, 2 workers)"
create_start=$SECONDS
"$kind" create cluster --name "$CLUSTER" --image "$image" --config "$CONFIG" --wait 5m ||
  die "kind create cluster failed; inspect with: docker exec $CLUSTER-control-plane journalctl -u kubelet --no-pager | tail"
log "waiting for all nodes to be Ready"
docker exec "$CLUSTER-control-plane" kubectl --kubeconfig /etc/kubernetes/admin.conf \
  wait --for=condition=Ready nodes --all --timeout=300s >/dev/null ||
  die "not every node became Ready: $(docker exec "$CLUSTER-control-plane" kubectl --kubeconfig /etc/kubernetes/admin.conf get nodes 2>&1)"
docker exec "$CLUSTER-control-plane" kubectl --kubeconfig /etc/kubernetes/admin.conf get nodes -o wide >&2
log "cluster $CLUSTER Ready: $((SECONDS - create_start)) s to create, $((SECONDS - start)) s in all (kubectl context kind-$CLUSTER)"
