#!/usr/bin/env bash
# Deletes lastcall's kind cluster. Idempotent: no cluster, nothing to do. Cached images (the
# offline node image included) stay, so the next hack/kind-up.sh is fast.
#
# Usage: hack/kind-down.sh [--help]
# Env:   KIND_CLUSTER_NAME (default lastcall), KIND (a kind binary; default: kind v0.33.0, cached)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

only_help_flag "$@"

CLUSTER=${KIND_CLUSTER_NAME:-lastcall}
if ! docker info >/dev/null 2>&1; then
  log "no Docker engine running: no cluster to delete"
  exit 0
fi
kind=${KIND:-$("$REPO_ROOT/hack/build-gotool.sh" sigs.k8s.io/kind v0.33.0)}
if "$kind" get clusters 2>/dev/null | grep -qxF "$CLUSTER"; then
  log "deleting kind cluster $CLUSTER"
  "$kind" delete cluster --name "$CLUSTER"
else
  log "no kind cluster named $CLUSTER"
fi
