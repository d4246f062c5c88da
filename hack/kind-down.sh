#!/usr/bin/env bash
# Deletes lastcall's kind cluster. Idempotent: no cluster, nothing to do. Cached images (the
# offline node image included) stay, so the next hack/kind-up.sh is fast.
#
# Usage: hack/kind-down.sh [--help]
# Env:   KIND_CLUSTER_NAME (default lastcall), KIND (a kind binary; default: KIND_VERSION of
#        hack/versions.env, built from its module and cached)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

only_help_flag "$@"

CLUSTER=${KIND_CLUSTER_NAME:-lastcall}
if ! docker info >/dev/null 2>&1; then
  log "no Docker engine running: no cluster to delete"
  exit 0
fi
kind=$(kind_bin)
if "$kind" get clusters 2>/dev/null | grep -qxF "$CLUSTER"; then
  log "deleting kind cluster $CLUSTER"
  "$kind" delete cluster --name "$CLUSTER" ||
    die "kind delete cluster --name $CLUSTER failed (above): remove its nodes with docker rm -f \$(docker ps -aq --filter label=io.x-k8s.kind.cluster=$CLUSTER), then run: hack/kind-down.sh"
else
  log "no kind cluster named $CLUSTER"
fi
