#!/usr/bin/env bash
# Builds a static Go command from its module through the Go module proxy (no replace directives
# needed), cached by name and version under $LASTCALL_CACHE/NAME/VERSION/. Prints the binary's path.
#
# Usage: hack/node-image/build-go.sh NAME PACKAGE VERSION [-X flags...]
#   e.g. build-go.sh coredns github.com/coredns/coredns v1.14.6
#        (flannel: see build-flannel.sh)
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

if [[ ${1:-} == -h || ${1:-} == --help || $# -lt 3 ]]; then
  sed -n '2,/^source/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
  [[ $# -ge 3 || ${1:-} == -h || ${1:-} == --help ]] && exit 0 || exit 2
fi
name=$1 pkg=$2 v=$3
shift 3
out=$LASTCALL_CACHE/$name/$v/$name
if [[ -x $out ]]; then echo "$out"; exit 0; fi
ld="-s -w"
for x in "$@"; do ld+=" $x"; done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
log "building $name $v from $pkg (static)"
start=$SECONDS
GOBIN=$tmp CGO_ENABLED=0 GOFLAGS=-mod=mod go install -trimpath -ldflags="$ld" "$pkg@$v" ||
  die "go install $pkg@$v failed (above): check GOPROXY reaches the module proxy, then run: $RERUN"
mkdir -p "$(dirname "$out")"
mv "$tmp/$(basename "$pkg")" "$out"
log "built $name $v in $((SECONDS - start)) s"
echo "$out"
