#!/usr/bin/env bash
# Assembles a kind node image without any registry: a Debian rootfs (debootstrap), Kubernetes,
# etcd, CoreDNS, flannel and a pause program built from their Go modules, and the control-plane
# images kubeadm asks for preloaded in the node's containerd. (`kind build node-image` would pull
# kindnetd and its storage images, so we do not use it.)
#
# The image is tagged by a hash of its inputs (versions, this directory, hack/kind manifests):
# when that tag exists, nothing is built. Prints the image name:
#   lastcall.local/kind-node:<KUBE_VERSION>-<hash>
#
# Usage: hack/node-image/build.sh [--help] [--print-tag]
#   --print-tag   print the tag the current inputs give, build nothing
# Env:   KUBE_VERSION, ETCD_VERSION, FLANNEL_VERSION, FLANNEL_GENPROTO_VERSION, NODE_DEBIAN_SUITE
#        (hack/versions.env), DEBIAN_MIRROR (hack/node-image/rootfs.sh),
#        LASTCALL_KEEP_OLD_NODE_IMAGES=1 keeps node images of earlier inputs (default: removed
#        after a successful build unless a container uses them)
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

print_tag=false
case ${1:-} in
  -h | --help) usage; exit 0 ;;
  --print-tag) print_tag=true ;;
  "") ;;
  *) usage >&2; die "unknown argument: $1 (see --help)" ;;
esac

NODE_DIR=$REPO_ROOT/hack/node-image
KIND_DIR=$REPO_ROOT/hack/kind

inputs_hash() {
  {
    echo "kube=$KUBE_VERSION etcd=$ETCD_VERSION flannel=$FLANNEL_VERSION genproto=$FLANNEL_GENPROTO_VERSION suite=$NODE_DEBIAN_SUITE"
    (cd "$REPO_ROOT" && find hack/node-image hack/kind/flannel.yaml hack/kind/default-storage.yaml -type f ! -name '*_test.go' | LC_ALL=C sort | xargs sha256sum)
  } | sha256sum | cut -c1-12
}
tag=lastcall.local/kind-node:$KUBE_VERSION-$(inputs_hash)
if $print_tag; then echo "$tag"; exit 0; fi
if docker image inspect "$tag" >/dev/null 2>&1; then
  log "node image $tag is up to date"
  echo "$tag"
  exit 0
fi

export DOCKER_BUILDKIT=0 # the legacy builder: works with any engine, no buildx needed
# dbuild ARGS...: docker build, quiet unless it fails
dbuild() {
  local out
  if ! out=$(docker build -q "$@" 2>&1); then
    printf '%s\n' "$out" | grep -v -e '^DEPRECATED' -e 'BuildKit is currently disabled' -e 'environment-variable' >&2
    return 1
  fi
}
start=$SECONDS
step() { log "[$((SECONDS - start)) s] $*"; }
work=$(mktemp -d "${TMPDIR:-/tmp}/lastcall-node-image.XXXXXX")
build_container=""
cleanup() {
  [[ -z $build_container ]] || docker rm -f "$build_container" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# 1. the Debian root filesystem
step "rootfs"
rootfs=$("$NODE_DIR/rootfs.sh")

# 2. binaries, each cached by version
step "Kubernetes $KUBE_VERSION binaries"
kube=$("$REPO_ROOT/hack/build-kube.sh" kubelet kubeadm kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy)
step "etcd $ETCD_VERSION"
etcd=$("$REPO_ROOT/hack/build-etcd.sh")

# the images kubeadm will ask for, exactly as it names them
mapfile -t wanted < <("$kube/kubeadm" config images list --kubernetes-version "$KUBE_VERSION" 2>/dev/null)
[[ ${#wanted[@]} -ge 5 ]] ||
  die "kubeadm config images list gave: ${wanted[*]:-nothing}; check that $kube/kubeadm runs (rm it to rebuild it), then run: hack/node-image/build.sh"
image_named() {
  local i
  for i in "${wanted[@]}"; do
    [[ ${i%:*} == */$1 ]] && { echo "$i"; return; }
  done
  die "kubeadm $KUBE_VERSION asks for no $1 image (${wanted[*]}): adapt the images in hack/node-image/build.sh to it, then run: hack/node-image/build.sh"
}
img_apiserver=$(image_named kube-apiserver)
img_cm=$(image_named kube-controller-manager)
img_sched=$(image_named kube-scheduler)
img_proxy=$(image_named kube-proxy)
img_etcd=$(image_named etcd)
img_coredns=$(image_named coredns)
img_pause=$(image_named pause)
grep -q "sandbox_image = \"$img_pause\"" "$NODE_DIR/files/etc/containerd/config.toml" ||
  die "containerd's sandbox_image in hack/node-image/files/etc/containerd/config.toml is not $img_pause (kubeadm's pause image): set it to that, then run: hack/node-image/build.sh"
# hack/kind/flannel.yaml names its image with a placeholder; the version is FLANNEL_VERSION
img_flannel=lastcall.local/flannel:$FLANNEL_VERSION
flannel_placeholder=lastcall.local/flannel:FLANNEL_VERSION
grep -q "image: $flannel_placeholder\$" "$KIND_DIR/flannel.yaml" ||
  die "hack/kind/flannel.yaml does not use the image $flannel_placeholder (build.sh replaces the placeholder): put it back, then run: hack/node-image/build.sh"

coredns_version=${img_coredns##*:}
step "CoreDNS $coredns_version"
coredns=$("$NODE_DIR/build-go.sh" coredns github.com/coredns/coredns "$coredns_version" \
  "-X github.com/coredns/coredns/coremain.GitCommit=$coredns_version")
step "flannel $FLANNEL_VERSION"
flanneld=$(FLANNEL_VERSION=$FLANNEL_VERSION "$NODE_DIR/build-flannel.sh")
step "pause and runc-wrapper (from this repository)"
mkdir -p "$work/bin"
(cd "$REPO_ROOT" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$work/bin/" ./hack/node-image/pause ./hack/node-image/runc-wrapper)

# 3. the container images the cluster runs, as kubeadm and the manifests name them
# scratch_image NAME BINARY [DOCKERFILE LINES...]: BINARY in /usr/local/bin of an image FROM scratch
scratch_image() {
  local name=$1 bin=$2 ctx
  shift 2
  ctx=$work/img-$(basename "$bin")
  mkdir -p "$ctx"
  ln -f "$bin" "$ctx/" 2>/dev/null || cp "$bin" "$ctx/"
  {
    echo "FROM ${BASE:-scratch}"
    echo "COPY $(basename "$bin") /usr/local/bin/"
    echo "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    printf '%s\n' "$@"
  } >"$ctx/Dockerfile"
  dbuild -t "$name" "$ctx" || die "docker build of $name failed (above): check Docker (hack/docker-up.sh --dry-run), then run: hack/node-image/build.sh"
}
step "slim base for host-network pods (iptables, nftables, conntrack)"
netbase=lastcall.local/kind-netbase:${rootfs##*:}-$( (cat "$NODE_DIR/Dockerfile.netbase" "$NODE_DIR"/netbase/*) | sha256sum | cut -c1-8)
if ! docker image inspect "$netbase" >/dev/null 2>&1; then
  dbuild --build-arg "ROOTFS=$rootfs" -f "$NODE_DIR/Dockerfile.netbase" -t "$netbase" "$NODE_DIR" ||
    die "docker build of $netbase failed (above): fix hack/node-image/Dockerfile.netbase or hack/node-image/netbase/, then run: hack/node-image/build.sh"
fi
step "control-plane, DNS, pause and flannel images"
scratch_image "$img_apiserver" "$kube/kube-apiserver"
scratch_image "$img_cm" "$kube/kube-controller-manager"
scratch_image "$img_sched" "$kube/kube-scheduler"
scratch_image "$img_etcd" "$etcd"
scratch_image "$img_coredns" "$coredns" 'ENTRYPOINT ["/usr/local/bin/coredns"]'
scratch_image "$img_pause" "$work/bin/pause" 'ENTRYPOINT ["/usr/local/bin/pause"]'
BASE=$netbase scratch_image "$img_proxy" "$kube/kube-proxy"
BASE=$netbase scratch_image "$img_flannel" "$flanneld"
preload=("$img_apiserver" "$img_cm" "$img_sched" "$img_proxy" "$img_etcd" "$img_coredns" "$img_pause" "$img_flannel")

# 4. the node image, then the images preloaded into its containerd
step "node base image"
ctx=$work/node
mkdir -p "$ctx/bin" "$ctx/manifests"
cp -a "$NODE_DIR/files" "$NODE_DIR/setup-node.sh" "$NODE_DIR/Dockerfile" "$ctx/"
for b in kubelet kubeadm kubectl; do ln -f "$kube/$b" "$ctx/bin/" 2>/dev/null || cp "$kube/$b" "$ctx/bin/"; done
cp "$work/bin/runc-wrapper" "$ctx/bin/"
sed "s#$flannel_placeholder#$img_flannel#" "$KIND_DIR/flannel.yaml" >"$ctx/manifests/default-cni.yaml"
cp "$KIND_DIR/default-storage.yaml" "$ctx/manifests/default-storage.yaml"
printf '%s' "$KUBE_VERSION" >"$ctx/version"
base=$tag-base
dbuild --build-arg "ROOTFS=$rootfs" -t "$base" "$ctx" ||
  die "docker build of the node base image failed (above): fix hack/node-image/Dockerfile, setup-node.sh or files/, then run: hack/node-image/build.sh"

step "preloading ${#preload[@]} images into the node's containerd"
build_container=lastcall-node-build-$$
# containerd runs in the background of a plain container, as for `kind build node-image`;
# images are stored without unpacking (/var is a volume on the nodes; layers unpack there)
docker run -d --init --name "$build_container" --entrypoint sleep --security-opt seccomp=unconfined "$base" infinity >/dev/null
docker exec "$build_container" bash -c 'containerd >/tmp/containerd.log 2>&1 & echo $! >/tmp/containerd.pid'
for i in $(seq 1 30); do
  docker exec "$build_container" ctr version >/dev/null 2>&1 && break
  [[ $i -lt 30 ]] || die "containerd did not start in the build container: $(docker exec "$build_container" tail -n 5 /tmp/containerd.log); fix the node image's containerd setup (hack/node-image/files/etc/containerd), then run: hack/node-image/build.sh"
  sleep 1
done
docker save "${preload[@]}" |
  docker exec -i "$build_container" ctr --namespace=k8s.io images import --no-unpack --digests - >/dev/null ||
  die "importing images into the node's containerd failed (above): check disk space (docker system df), then run: hack/node-image/build.sh"
missing=()
have=$(docker exec "$build_container" ctr --namespace=k8s.io images list -q)
for i in "${preload[@]}"; do grep -qxF "$i" <<<"$have" || missing+=("$i"); done
[[ ${#missing[@]} -eq 0 ]] || die "not in the node's containerd after import: ${missing[*]}; check their names against kubeadm config images list, then run: hack/node-image/build.sh"
docker exec "$build_container" bash -c '
  pid=$(cat /tmp/containerd.pid)
  kill "$pid"
  # until it is gone (or a zombie: --init reaps it)
  while [[ -e /proc/$pid && $(cut -d" " -f3 "/proc/$pid/stat" 2>/dev/null) != Z ]]; do sleep 0.2; done
  rm -f /tmp/containerd.pid /tmp/containerd.log'
docker commit \
  --change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' \
  --change 'CMD []' \
  "$build_container" "$tag" >/dev/null
docker rm -f "$build_container" >/dev/null
build_container=""
docker rmi "$base" >/dev/null 2>&1 || true
# earlier builds of the node image (other inputs) are ~1.4 GB each: drop those no container uses
if [[ ${LASTCALL_KEEP_OLD_NODE_IMAGES:-} != 1 ]]; then
  for old in $(docker images --format '{{.Repository}}:{{.Tag}}' "${tag%%:*}"); do
    [[ $old == "$tag" ]] && continue
    docker rmi "$old" >/dev/null 2>&1 && log "removed the outdated node image $old" || true
  done
fi
step "node image $tag built ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
echo "$tag"
