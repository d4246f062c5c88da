#!/usr/bin/env bash
# Builds a local Go builder image for the Dockerfiles' GO_IMAGE when no registry can be reached:
# this machine's Go toolchain plus a static busybox as /bin/sh, imported with `docker import`.
# Prints the image name. The build context then needs a vendor/ folder (go mod vendor) instead of
# network access. Installs Debian's busybox-static with apt-get when no static busybox is there
# (it says so first).
#
# Usage: hack/go-image.sh [--help]
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
only_help_flag "$@"

goroot=$(go env GOROOT)
ver=$(go env GOVERSION)
image="lastcall-local/go:${ver#go}"
if docker image inspect "$image" >/dev/null 2>&1; then echo "$image"; exit 0; fi
busybox=$(command -v busybox || true)
# The image has no libc: only a static busybox will do ("not a dynamic executable" to ldd).
if [[ -z $busybox ]] || ldd "$busybox" >/dev/null 2>&1; then
  log "installing Debian's busybox-static with apt-get: the builder image needs a static /bin/sh"
  [[ $EUID -eq 0 ]] || die "installing busybox-static needs root: run apt-get install busybox-static as root, then: hack/go-image.sh"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static; } >/dev/null ||
    die "apt-get install busybox-static failed (above): fix apt, then run: hack/go-image.sh"
  busybox=/bin/busybox
fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/tmp" "$root/usr/local"
cp "$busybox" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
cp -a "$goroot" "$root/usr/local/go"
log "importing $image from $goroot"
tar -C "$root" -c . | docker import --change 'ENV PATH=/usr/local/go/bin:/bin' --change 'ENV HOME=/tmp' \
  --change 'ENV GOCACHE=/tmp/gocache' - "$image" >/dev/null ||
  die "docker import of $image failed (above): check Docker (hack/docker-up.sh --dry-run), then run: hack/go-image.sh"
echo "$image"
