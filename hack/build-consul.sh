#!/usr/bin/env bash
# Builds a static consul binary from its Go module and caches it by version. Prints its path.
# consul's go.mod replaces its sub-modules by local paths, which `go install module@version`
# refuses; a wrapper module pins each sub-module to the version consul itself requires.
#
# Usage: hack/build-consul.sh [--help]
# Env:   CONSUL_VERSION (hack/versions.env)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
only_help_flag "$@"

out="$LASTCALL_CACHE/consul/$CONSUL_VERSION/consul"
if [[ -x $out ]]; then echo "$out"; exit 0; fi

mod=$(go_mod_file "github.com/hashicorp/consul@$CONSUL_VERSION")
work="$LASTCALL_CACHE/src/consul-$CONSUL_VERSION"
rm -rf "$work" && mkdir -p "$work"
{
  echo "module lastcall.local/consulbuild"
  echo
  echo "go $(sed -n 's/^go //p' "$mod")"
  echo
  echo "require github.com/hashicorp/consul $CONSUL_VERSION"
  # Each `github.com/hashicorp/consul/X => ./X` becomes a pin to the version consul requires.
  sed -n 's#^[[:space:]]*\(replace \)\{0,1\}\(github.com/hashicorp/consul/[^ ]*\) => \./.*#\2#p' "$mod" |
    while read -r sub; do
      v=$(awk -v m="$sub" '$1==m && $2 ~ /^v/ {print $2; exit}' "$mod")
      [[ -z $v ]] || echo "replace $sub => $sub $v"
    done
  # consul excludes broken versions of some dependencies; a wrapper must repeat that.
  awk '/^exclude \(/{on=1; print; next} on{print; if ($0 ~ /^\)/) on=0; next} /^exclude /{print}' "$mod"
} >"$work/go.mod"
printf 'package main\n\nimport _ "github.com/hashicorp/consul/command"\n' >"$work/tools.go"
log "resolving consul $CONSUL_VERSION dependencies"
go_mod_tidy "$work" consul
log "building consul $CONSUL_VERSION (about 6 min cold on 2 cores)"
mkdir -p "$(dirname "$out")"
(cd "$work" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags='-s -w' -o "$out.tmp" github.com/hashicorp/consul) ||
  die "go build of consul $CONSUL_VERSION failed (above) in $work; fix the wrapper module there or in hack/build-consul.sh, then rerun: hack/build-consul.sh"
mv "$out.tmp" "$out"
echo "$out"
