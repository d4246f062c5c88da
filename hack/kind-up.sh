#!/usr/bin/env bash
# Brings up lastcall's kind cluster (1 control-plane + 2 workers, hack/kind/cluster.yaml) and
# waits until every node is Ready. Idempotent: an existing cluster of that name is kept
# (--recreate deletes it first). Runs hack/docker-up.sh first, which says what it will change on
# this machine before it changes anything.
#
# Node image, in this order:
#   1. $KIND_NODE_IMAGE when set;
#   2. kind's default node image (KINDEST_NODE_IMAGE in hack/versions.env) when Docker has it or
#      can pull it (trying takes up to 10 min on a machine without registry access);
#   3. else the offline image hack/node-image/build.sh assembles from Debian packages and Go
#      modules, cached by a hash of its inputs. The first build takes about 30 min on 2 cores
#      (announced before it starts; needs root for debootstrap); later runs reuse it.
#      LASTCALL_KIND_OFFLINE=1 skips trying the pull.
#
# Usage: hack/kind-up.sh [--help] [--recreate]
# Env:   KIND_CLUSTER_NAME (default lastcall), KIND_NODE_IMAGE, LASTCALL_KIND_OFFLINE,
#        KUBECONFIG (kind writes the cluster's context there; default ~/.kube/config),
#        KIND (a kind binary; default: KIND_VERSION of hack/versions.env built from its module),
#        KIND_KUBE_PROXY_MODE (iptables, kind's default, or nftables: kube-proxy's mode in a new
#        cluster; the slow-dataplane e2e runs in both)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

recreate=false
for a in "$@"; do
  case $a in
    -h | --help) usage; exit 0 ;;
    --recreate) recreate=true ;;
    *) usage >&2; die "unknown argument: $a (see --help)" ;;
  esac
done

CLUSTER=${KIND_CLUSTER_NAME:-lastcall}
CONFIG=$REPO_ROOT/hack/kind/cluster.yaml
case ${KIND_KUBE_PROXY_MODE:-iptables} in
  iptables) ;;
  nftables)
    # the same cluster, with kind's networking.kubeProxyMode set
    mode_config=$(mktemp "${TMPDIR:-/tmp}/lastcall-kind-config.XXXXXX")
    trap 'rm -f "$mode_config"' EXIT
    sed 's/^nodes:$/networking:\n  kubeProxyMode: nftables\nnodes:/' "$CONFIG" >"$mode_config"
    grep -q 'kubeProxyMode: nftables' "$mode_config" || die "could not set kubeProxyMode in a copy of $CONFIG (no top-level nodes: line?); fix hack/kind-up.sh, then run: $RERUN"
    CONFIG=$mode_config
    ;;
  *) die "KIND_KUBE_PROXY_MODE=$KIND_KUBE_PROXY_MODE: want iptables or nftables; then run: $RERUN" ;;
esac
start=$SECONDS

"$REPO_ROOT/hack/docker-up.sh"

kind=$(kind_bin)
cp_kubectl() { docker exec "$CLUSTER-control-plane" kubectl --kubeconfig /etc/kubernetes/admin.conf "$@"; }

if "$kind" get clusters 2>/dev/null | grep -qxF "$CLUSTER"; then
  if $recreate; then
    log "deleting the existing cluster $CLUSTER (--recreate)"
    "$kind" delete cluster --name "$CLUSTER"
  else
    log "cluster $CLUSTER exists (use --recreate for a new one); checking its nodes"
    cp_kubectl wait --for=condition=Ready nodes --all --timeout=120s >/dev/null ||
      die "cluster $CLUSTER exists but not every node is Ready: $(cp_kubectl get nodes 2>&1 | tr '\n' ' '); start over with: hack/kind-up.sh --recreate"
    "$kind" export kubeconfig --name "$CLUSTER" >/dev/null 2>&1
    log "cluster $CLUSTER is Ready (kubectl context kind-$CLUSTER)"
    exit 0
  fi
fi

# announce_offline_build TAG: what building the offline node image will take, before it starts.
announce_offline_build() {
  local b todo=()
  for b in kubelet kubeadm kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy; do
    if [[ ! -x $LASTCALL_CACHE/kubernetes/$KUBE_VERSION/$b ]]; then
      todo+=("Kubernetes $KUBE_VERSION (~14 min)")
      break
    fi
  done
  [[ -x $LASTCALL_CACHE/etcd/$ETCD_VERSION/etcd ]] || todo+=("etcd $ETCD_VERSION (~1 min)")
  compgen -G "$LASTCALL_CACHE/coredns/*/coredns" >/dev/null || todo+=("CoreDNS (~4 min)")
  [[ -x $LASTCALL_CACHE/flanneld/$FLANNEL_VERSION/flanneld ]] || todo+=("flannel $FLANNEL_VERSION (~2 min)")
  compgen -G "$LASTCALL_CACHE/kind-node/rootfs-$NODE_DEBIAN_SUITE-*.tar" >/dev/null ||
    todo+=("a Debian $NODE_DEBIAN_SUITE rootfs with debootstrap (~1.5 min; needs root, installs debootstrap with apt-get when missing)")
  if [[ ${#todo[@]} -eq 0 ]]; then
    log "assembling the offline node image $1 from cached builds (about a minute)"
    return
  fi
  log "building the offline node image $1; later runs reuse it."
  log "  From empty caches this takes about 30 min on 2 cores. Still to build from source:"
  for b in "${todo[@]}"; do log "    - $b"; done
  log "  then about a minute to assemble it. To use another image: KIND_NODE_IMAGE=<image> hack/kind-up.sh"
}

image=${KIND_NODE_IMAGE:-}
if [[ -z $image ]]; then
  if docker image inspect "$KINDEST_NODE_IMAGE" >/dev/null 2>&1; then
    image=$KINDEST_NODE_IMAGE
  elif [[ ${LASTCALL_KIND_OFFLINE:-} != 1 ]] && {
    log "trying to pull ${KINDEST_NODE_IMAGE%@*} (gives up after 10 min; LASTCALL_KIND_OFFLINE=1 skips this)"
    timeout 600 docker pull "$KINDEST_NODE_IMAGE" >/dev/null 2>&1
  }; then
    image=$KINDEST_NODE_IMAGE
  else
    log "${KINDEST_NODE_IMAGE%@*} is neither present nor pullable: using the offline node image"
    tag=$("$REPO_ROOT/hack/node-image/build.sh" --print-tag)
    docker image inspect "$tag" >/dev/null 2>&1 || announce_offline_build "$tag"
    image=$("$REPO_ROOT/hack/node-image/build.sh")
  fi
fi
log "creating cluster $CLUSTER with $image (1 control-plane, 2 workers)"
create_start=$SECONDS
# --retain keeps the nodes of a failed create, so they can be inspected
"$kind" create cluster --name "$CLUSTER" --image "$image" --config "$CONFIG" --wait 5m --retain ||
  die "kind create cluster failed (above). Inspect the nodes: docker exec $CLUSTER-control-plane journalctl -u kubelet --no-pager | tail -n 50, or all logs: $kind export logs --name $CLUSTER ./kind-logs; then retry: hack/kind-up.sh --recreate (make kind-up keeps a broken cluster)"
log "waiting for all nodes to be Ready"
cp_kubectl wait --for=condition=Ready nodes --all --timeout=300s >/dev/null ||
  die "not every node became Ready within 5 min: $(cp_kubectl get nodes 2>&1 | tr '\n' ' '); inspect: docker exec $CLUSTER-control-plane journalctl -u kubelet --no-pager | tail -n 50; then retry: hack/kind-up.sh --recreate"
cp_kubectl get nodes -o wide >&2
log "cluster $CLUSTER Ready: $((SECONDS - create_start)) s to create, $((SECONDS - start)) s in all (kubectl context kind-$CLUSTER)"
