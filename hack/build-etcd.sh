#!/usr/bin/env bash
# Builds a static etcd from go.etcd.io/etcd/server/v3 and caches it by version. Prints its path.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

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
cd "$work"
GOFLAGS=-mod=mod go mod tidy -e >/dev/null 2>&1 || true
log "building etcd $ETCD_VERSION"
mkdir -p "$(dirname "$out")"
CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags='-s -w' -o "$out.tmp" .
mv "$out.tmp" "$out"
echo "$out"
