#!/usr/bin/env bash
# Builds a Go command from its module through the Go module proxy, cached by version.
# Usage: build-gotool.sh PACKAGE VERSION      e.g. build-gotool.sh sigs.k8s.io/controller-tools/cmd/controller-gen v0.23.0
# Prints the binary's path.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

pkg=${1:?usage: build-gotool.sh PACKAGE VERSION}
v=${2:?usage: build-gotool.sh PACKAGE VERSION}
name=$(basename "$pkg")
out="$LASTCALL_CACHE/$name/$v/$name"
if [[ ! -x $out ]]; then
  log "building $name $v"
  GOBIN="$(dirname "$out")" GOFLAGS=-mod=mod go install "$pkg@$v"
fi
echo "$out"
