#!/usr/bin/env bash
# Prints the path of one of the Go tools the Makefile, the hack/ scripts and the e2e use, built
# from its module at the version pinned in hack/versions.env on first use (hack/build-gotool.sh
# caches it by version in $LASTCALL_CACHE).
#
# Usage: hack/tool.sh [--help] NAME
#   NAME: golangci-lint (GOLANGCI_LINT_VERSION), controller-gen (CONTROLLER_TOOLS_VERSION),
#         helm (HELM_VERSION) or kind (KIND_VERSION)
# Env:   KIND: for kind, print this binary instead of building one; any *_VERSION above
#        overrides hack/versions.env
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

case ${1:-} in
  -h | --help) usage; exit 0 ;;
  golangci-lint) pkg=github.com/golangci/golangci-lint/v2/cmd/golangci-lint v=$GOLANGCI_LINT_VERSION ;;
  controller-gen) pkg=sigs.k8s.io/controller-tools/cmd/controller-gen v=$CONTROLLER_TOOLS_VERSION ;;
  helm) pkg=helm.sh/helm/v3/cmd/helm v=$HELM_VERSION ;;
  kind)
    if [[ -n ${KIND:-} ]]; then
      echo "$KIND"
      exit 0
    fi
    pkg=sigs.k8s.io/kind v=$KIND_VERSION
    ;;
  *) usage >&2; die "unknown tool '${1:-}': want golangci-lint, controller-gen, helm or kind" ;;
esac
[[ $# -eq 1 ]] || die "hack/tool.sh takes one tool name, got: $*"
exec "$REPO_ROOT/hack/build-gotool.sh" "$pkg" "$v"
