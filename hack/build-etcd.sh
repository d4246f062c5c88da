#!/usr/bin/env bash
# Builds a static etcd from go.etcd.io/etcd/server/v3 and caches it by version. Prints its path.
#
# Usage: hack/build-etcd.sh [--help]
# Env:   ETCD_VERSION (hack/versions.env)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
only_help_flag "$@"

out="$LASTCALL_CACHE/etcd/$ETCD_VERSION/etcd"
if [[ -x $out ]]; then echo "$out"; exit 0; fi
work="$LASTCALL_CACHE/src/etcd-$ETCD_VERSION"
rm -rf "$work" && mkdir -p "$work"
cat >"$work/go.mod" <<MOD
module lastcall.local/etcdbuild

go 1.25.0

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
MOD
cat >"$work/main.go" <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
go_mod_tidy "$work" etcd
log "building etcd $ETCD_VERSION"
mkdir -p "$(dirname "$out")"
(cd "$work" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags='-s -w' -o "$out.tmp" .) ||
  die "go build of etcd $ETCD_VERSION failed (above) in $work; fix it there or in hack/build-etcd.sh, then rerun: hack/build-etcd.sh"
mv "$out.tmp" "$out"
echo "$out"
