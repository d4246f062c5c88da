#!/usr/bin/env bash
# Builds the e2e's Consul server image, lastcall.local/consul:<CONSUL_VERSION>, FROM scratch around
# the consul binary hack/build-consul.sh builds from its Go module (no registry needed), and loads
# it into the kind cluster. Prints the image name.
#
# Usage: hack/consul-image.sh [--help]
# Env:   CONSUL_VERSION (hack/versions.env), KIND_CLUSTER_NAME (default lastcall), KIND (kind
#        binary), LASTCALL_NO_LOAD=1 builds only
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
only_help_flag "$@"

image=lastcall.local/consul:$CONSUL_VERSION
if ! docker image inspect "$image" >/dev/null 2>&1; then
  bin=$("$REPO_ROOT/hack/build-consul.sh")
  ctx=$(mktemp -d "${TMPDIR:-/tmp}/lastcall-consul-image.XXXXXX")
  trap 'rm -rf "$ctx"' EXIT
  cp "$bin" "$ctx/consul"
  cp "$REPO_ROOT/e2e/consul/Dockerfile" "$ctx/"
  log "docker build $image"
  out=$(DOCKER_BUILDKIT=0 docker build -q -t "$image" "$ctx" 2>&1) ||
    die "docker build of $image failed: $out; fix e2e/consul/Dockerfile or Docker (hack/docker-up.sh --dry-run), then run: hack/consul-image.sh"
fi
if [[ ${LASTCALL_NO_LOAD:-} != 1 ]]; then
  cluster=${KIND_CLUSTER_NAME:-lastcall}
  kind=$(kind_bin)
  log "kind load docker-image $image --name $cluster"
  "$kind" load docker-image "$image" --name "$cluster" >&2 ||
    die "kind load docker-image $image into $cluster failed (above): is the cluster up? run: hack/kind-up.sh, then: hack/consul-image.sh"
fi
echo "$image"
