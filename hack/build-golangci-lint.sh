#!/usr/bin/env bash
# Builds golangci-lint from its Go module (cached by version). Usage: build-golangci-lint.sh VERSION
# Prints the binary's path.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

v=${1:?usage: build-golangci-lint.sh VERSION}
out="$LASTCALL_CACHE/golangci-lint/$v/golangci-lint"
if [[ ! -x $out ]]; then
  log "building golangci-lint $v (a few minutes cold)"
  GOBIN="$(dirname "$out")" GOFLAGS=-mod=mod go install "github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$v"
fi
echo "$out"
