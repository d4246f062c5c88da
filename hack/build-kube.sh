#!/usr/bin/env bash
# Builds Kubernetes binaries from k8s.io/kubernetes through the Go module proxy and caches them
# by version. Prints the cache directory.
# k8s.io/kubernetes replaces its staging modules by local paths; the wrapper module replaces each
# by the published v0.X.Y of the same release.
#
# Usage: hack/build-kube.sh [--help] [BINARY ...]     (default: kube-apiserver)
#   BINARY: kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy, kubelet,
#           kubeadm or kubectl
# Env:   KUBE_VERSION (hack/versions.env)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

case ${1:-} in -h | --help) usage; exit 0 ;; esac
bins=("$@")
[[ ${#bins[@]} -gt 0 ]] || bins=(kube-apiserver)
dir="$LASTCALL_CACHE/kubernetes/$KUBE_VERSION"
missing=()
for b in "${bins[@]}"; do [[ -x $dir/$b ]] || missing+=("$b"); done
if [[ ${#missing[@]} -eq 0 ]]; then echo "$dir"; exit 0; fi

# tools.go puts every binary's packages in the module graph: the commands' app packages, and
# kubectl's (its main package has no app package; it lives in the k8s.io/kubectl staging module).
tools_go() {
  echo "package main"
  echo
  echo "import ("
  for c in kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet kubeadm; do
    echo "	_ \"k8s.io/kubernetes/cmd/$c/app\""
  done
  echo "	_ \"k8s.io/kubectl/pkg/cmd\""
  echo ")"
}
staging=v0.${KUBE_VERSION#v1.}
work="$LASTCALL_CACHE/src/kubernetes-$KUBE_VERSION"
# The resolved wrapper is reused while its tools.go is the one this script writes.
if [[ ! -f $work/go.sum || "$(cat "$work/tools.go" 2>/dev/null)" != "$(tools_go)" ]]; then
  mod=$(go_mod_file "k8s.io/kubernetes@$KUBE_VERSION")
  rm -rf "$work" && mkdir -p "$work"
  {
    echo "module lastcall.local/kubebuild"
    echo
    echo "go $(sed -n 's/^go //p' "$mod")"
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    sed -n 's#^[[:space:]]*\(replace \)\{0,1\}\(k8s.io/[^ ]*\) => \./staging/.*#replace \2 => \2 '"$staging"'#p' "$mod"
  } >"$work/go.mod"
  tools_go >"$work/tools.go"
  log "resolving k8s.io/kubernetes $KUBE_VERSION dependencies"
  go_mod_tidy "$work" k8s.io/kubernetes
fi

minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
ld="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ld+=" -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
  ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done
mkdir -p "$dir"
for b in "${missing[@]}"; do
  log "building $b $KUBE_VERSION (kube-apiserver: about 9 min cold on 2 cores)"
  (cd "$work" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags="$ld" -o "$dir/$b.tmp" "k8s.io/kubernetes/cmd/$b") ||
    die "go build of $b $KUBE_VERSION failed (above) in $work; fix it there or in hack/build-kube.sh, then rerun: hack/build-kube.sh ${missing[*]}"
  mv "$dir/$b.tmp" "$dir/$b"
done
echo "$dir"
