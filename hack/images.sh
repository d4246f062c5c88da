#!/usr/bin/env bash
# Builds lastcall's container images from their Dockerfiles and loads them into the kind cluster.
#
# Usage: hack/images.sh [--help] [--no-load] [DOCKERFILE=IMAGE ...]
#   Default pairs: cmd/lastcall-prestop/Dockerfile=lastcall-prestop:dev
#                  cmd/lastcall-controller/Dockerfile=lastcall-controller:dev
#                  cmd/lastcall-node/Dockerfile=lastcall-node:dev
#                  e2e/app/Dockerfile=lastcall-e2e-app:dev
#   A pair whose Dockerfile does not exist is skipped with a message.
#   --no-load   build only, do not `kind load docker-image`
#
# Every Dockerfile is built from the repository root (multi-stage, as cmd/lastcall-prestop's)
# with these build-args (image defaults from hack/versions.env):
#   BASE_IMAGE  $BASE_IMAGE, else DISTROLESS_IMAGE when Docker has it or can pull it, else
#               scratch (offline machines)
#   GO_IMAGE    $GO_IMAGE, else GOLANG_IMAGE when Docker has it or can pull it, else the local
#               toolchain imported by hack/go-image.sh; then, unless the repository has a
#               vendor/ folder, the context is a temporary copy of the repository's files plus
#               `go mod vendor`, so the build needs no network
#   VERSION     git describe
#   NETBASE_IMAGE  only for Dockerfiles that declare it (cmd/lastcall-node: iptables and nft):
#               $NETBASE_IMAGE, else the newest lastcall.local/kind-netbase image that
#               hack/node-image/build.sh made (make kind-up); e.g.
#               hack/images.sh cmd/lastcall-node/Dockerfile=lastcall-node:dev
#
# Env: BASE_IMAGE, GO_IMAGE, NETBASE_IMAGE, KIND_CLUSTER_NAME (default lastcall),
#      KIND (kind binary; default KIND_VERSION, built and cached), LASTCALL_KIND_OFFLINE=1 (pull nothing)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

load=true
pairs=()
for a in "$@"; do
  case $a in
    -h | --help) usage; exit 0 ;;
    --no-load) load=false ;;
    *=*) pairs+=("$a") ;;
    *) usage >&2; die "not DOCKERFILE=IMAGE: $a (see --help)" ;;
  esac
done
if [[ ${#pairs[@]} -eq 0 ]]; then
  pairs=(
    cmd/lastcall-prestop/Dockerfile=lastcall-prestop:dev
    cmd/lastcall-controller/Dockerfile=lastcall-controller:dev
    cmd/lastcall-node/Dockerfile=lastcall-node:dev
    e2e/app/Dockerfile=lastcall-e2e-app:dev
  )
fi
CLUSTER=${KIND_CLUSTER_NAME:-lastcall}
VERSION=${VERSION:-$(git -C "$REPO_ROOT" describe --tags --always --dirty 2>/dev/null || echo dev)}

# available IMAGE: Docker has IMAGE or can pull it
available() {
  docker image inspect "$1" >/dev/null 2>&1 && return 0
  [[ ${LASTCALL_KIND_OFFLINE:-} != 1 ]] && timeout 120 docker pull -q "$1" >/dev/null 2>&1
}

todo=()
for pair in "${pairs[@]}"; do
  f=${pair%%=*}
  [[ $f == /* ]] || f=$REPO_ROOT/$f
  if [[ -f $f ]]; then
    todo+=("$f=${pair#*=}")
  else
    log "skipping ${pair#*=}: ${f#"$REPO_ROOT"/} does not exist (yet)"
  fi
done
if [[ ${#todo[@]} -eq 0 ]]; then
  log "no image to build"
  exit 0
fi

if [[ -z ${BASE_IMAGE:-} ]]; then
  if available "$DISTROLESS_IMAGE"; then
    BASE_IMAGE=$DISTROLESS_IMAGE
  else
    log "$DISTROLESS_IMAGE is neither present nor pullable: BASE_IMAGE=scratch"
    BASE_IMAGE=scratch
  fi
fi
ctx=$REPO_ROOT
# GO_IMAGE is always passed, so hack/versions.env wins over a Dockerfile's ARG default.
if [[ -z ${GO_IMAGE:-} ]] && available "$GOLANG_IMAGE"; then
  GO_IMAGE=$GOLANG_IMAGE
elif [[ -z ${GO_IMAGE:-} ]]; then
  GO_IMAGE=$("$REPO_ROOT/hack/go-image.sh")
  log "$GOLANG_IMAGE is neither present nor pullable: GO_IMAGE=$GO_IMAGE (local toolchain)"
  if [[ ! -d $REPO_ROOT/vendor ]]; then
    ctx=$(mktemp -d "${TMPDIR:-/tmp}/lastcall-images.XXXXXX")
    trap 'rm -rf "$ctx"' EXIT
    log "offline build context: the repository's files plus go mod vendor, in $ctx"
    (cd "$REPO_ROOT" && git ls-files -z --cached --others --exclude-standard |
      tar --null --ignore-failed-read -T - -cf - 2>/dev/null) | tar -C "$ctx" -xf -
    (cd "$REPO_ROOT" && go mod vendor -o "$ctx/vendor") ||
      die "go mod vendor failed (above): run go mod tidy, check GOPROXY, then run: $RERUN"
  fi
fi

# netbase_image: $NETBASE_IMAGE, else the newest netbase the offline node image build made.
netbase_image() {
  if [[ -n ${NETBASE_IMAGE:-} ]]; then
    echo "$NETBASE_IMAGE"
    return
  fi
  local newest
  newest=$(docker images --format '{{.Repository}}:{{.Tag}}' lastcall.local/kind-netbase | head -n1)
  [[ -n $newest ]] || die "no lastcall.local/kind-netbase image (iptables and nft for lastcall-node): run make kind-up (it builds the offline node image and its netbase), or set NETBASE_IMAGE to an image with iptables and nft; then run: $RERUN"
  echo "$newest"
}

built=()
for pair in "${todo[@]}"; do
  dockerfile=${pair%%=*}
  image=${pair#*=}
  extra=()
  if grep -q '^ARG NETBASE_IMAGE' "$dockerfile"; then
    extra=(--build-arg "NETBASE_IMAGE=$(netbase_image)")
  fi
  log "docker build $image (${dockerfile#"$REPO_ROOT"/}, BASE_IMAGE=$BASE_IMAGE, GO_IMAGE=$GO_IMAGE${extra[1]:+, ${extra[1]}})"
  if ! out=$(DOCKER_BUILDKIT=0 docker build -q -f "$dockerfile" --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    --build-arg "GO_IMAGE=$GO_IMAGE" --build-arg "VERSION=$VERSION" "${extra[@]}" -t "$image" "$ctx" 2>&1); then
    printf '%s\n' "$out" | grep -v -e '^DEPRECATED' -e 'BuildKit is currently disabled' -e 'environment-variable' >&2
    die "docker build of $image failed (above): fix ${dockerfile#"$REPO_ROOT"/} or the code it builds, then run: hack/images.sh ${dockerfile#"$REPO_ROOT"/}=$image --no-load"
  fi
  built+=("$image")
done
# The legacy builder keeps each Go build stage as an untagged image of over 1 GB; left behind,
# they filled this machine's disk. Only those (dangling, labelled by our Dockerfiles) go.
docker image prune -f --filter label=lastcall.dev/stage=build >/dev/null ||
  log "warning: could not remove the build stages' images: run docker image prune -f --filter label=lastcall.dev/stage=build"

if ! $load; then
  log "built ${built[*]} (not loaded: --no-load)"
  exit 0
fi
kind=$(kind_bin)
"$kind" get clusters 2>/dev/null | grep -qxF "$CLUSTER" ||
  die "no kind cluster $CLUSTER to load ${built[*]} into: run hack/kind-up.sh (or make kind-up), then: $RERUN; or build only with --no-load"
for image in "${built[@]}"; do
  log "kind load docker-image $image --name $CLUSTER"
  "$kind" load docker-image "$image" --name "$CLUSTER" >/dev/null ||
    die "kind load docker-image $image --name $CLUSTER failed (above): check the cluster (hack/kind-up.sh), then run: $RERUN"
done
log "loaded ${built[*]} into $CLUSTER"
