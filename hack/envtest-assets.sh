#!/usr/bin/env bash
# Prepares a KUBEBUILDER_ASSETS directory (kube-apiserver, etcd) from binaries built through the
# Go module proxy, and prints it. Reuses the cache on a second run.
#
# Usage: hack/envtest-assets.sh [--help]
# Env:   KUBE_VERSION, ETCD_VERSION (hack/versions.env)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
only_help_flag "$@"

kube=$("$REPO_ROOT/hack/build-kube.sh" kube-apiserver)
etcd=$("$REPO_ROOT/hack/build-etcd.sh")
dir="$LASTCALL_CACHE/envtest/$KUBE_VERSION-etcd-$ETCD_VERSION"
mkdir -p "$dir"
ln -sf "$kube/kube-apiserver" "$dir/kube-apiserver"
ln -sf "$etcd" "$dir/etcd"
echo "$dir"
