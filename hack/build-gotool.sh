#!/usr/bin/env bash
# Builds a Go command from its module through the Go module proxy, cached by version, and prints
# the binary's path. The tools lastcall pins are built through hack/tool.sh NAME.
#
# Usage: hack/build-gotool.sh PACKAGE VERSION
#   e.g. hack/build-gotool.sh sigs.k8s.io/controller-tools/cmd/controller-gen "$CONTROLLER_TOOLS_VERSION"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

case ${1:-} in -h | --help) usage; exit 0 ;; esac
[[ $# -eq 2 ]] || { usage >&2; die "want PACKAGE VERSION, got: $*"; }
pkg=$1 v=$2
name=$(basename "$pkg")
out="$LASTCALL_CACHE/$name/$v/$name"
if [[ ! -x $out ]]; then
  log "building $name $v"
  GOBIN="$(dirname "$out")" GOFLAGS=-mod=mod go install "$pkg@$v" ||
    die "go install $pkg@$v failed (above); check GOPROXY reaches the module proxy and the version exists, then rerun: $RERUN"
fi
echo "$out"
