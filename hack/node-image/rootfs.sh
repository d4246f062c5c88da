#!/usr/bin/env bash
# Builds the Debian root filesystem of the offline kind node image with debootstrap and imports it
# into Docker. Cached: the tarball in $LASTCALL_CACHE/kind-node/ and the Docker image are named
# by a hash of the suite, the package list and REVISION below, and reused while those stay the same.
#
# Usage: hack/node-image/rootfs.sh [--help]      prints the image name, e.g. lastcall.local/kind-rootfs:<suite>-0123abcd
# Env:   NODE_DEBIAN_SUITE   Debian suite (hack/versions.env; its containerd, runc and CNI plugins
#                            are the node's)
#        DEBIAN_MIRROR       mirror URL; default: the first Debian mirror this machine's apt uses
#                            (/etc/apt/sources.list.d/*.sources, then /etc/apt/sources.list)
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

only_help_flag "$@"

SUITE=$NODE_DEBIAN_SUITE
# What a kind node runs: systemd as PID 1, containerd + runc, CNI plugins, the tools kubelet,
# kubeadm and kube-proxy call (iptables, nftables, conntrack, socat, mount, ethtool, ...), and jq
# for the containerd createContainer hook.
PACKAGES=(
  systemd systemd-sysv dbus
  containerd runc containernetworking-plugins
  iptables nftables conntrack socat ethtool iproute2 kmod
  mount util-linux procps ca-certificates libseccomp2 jq
)

# Bump when the way the rootfs is made changes (the hash names the cached tarball and image).
REVISION=1
hash=$( { echo "$SUITE r$REVISION"; printf '%s\n' "${PACKAGES[@]}"; } | sha256sum | cut -c1-12)
image=lastcall.local/kind-rootfs:$SUITE-$hash
dir=$LASTCALL_CACHE/kind-node
tarball=$dir/rootfs-$SUITE-$hash.tar

if docker image inspect "$image" >/dev/null 2>&1; then
  echo "$image"
  exit 0
fi

# debian_mirror: the mirror URL apt on this machine uses for the Debian archive (not security).
debian_mirror() {
  if [[ -n ${DEBIAN_MIRROR:-} ]]; then
    echo "$DEBIAN_MIRROR"
    return
  fi
  local f uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    # deb822 stanzas: take the URIs of a stanza whose Suites list a plain suite (no "-security")
    uri=$(awk '
      /^[[:space:]]*$/ { if (u != "" && s ~ /(^| )[a-z]+( |$)/ && s !~ /security/) { print u; exit } u=""; s=""; next }
      tolower($1) == "uris:"   { u=$2 }
      tolower($1) == "suites:" { $1=""; s=$0 }
      END { if (u != "" && s ~ /(^| )[a-z]+( |$)/ && s !~ /security/) print u }' "$f" | head -n1)
    if [[ -n $uri ]]; then
      echo "$uri"
      return
    fi
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f $f ]] || continue
    uri=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i !~ /^\[/) { print $i; exit } }' "$f")
    if [[ -n $uri ]]; then
      echo "$uri"
      return
    fi
  done
  die "no Debian mirror found in /etc/apt: set DEBIAN_MIRROR to a Debian mirror's URL, then run: hack/node-image/rootfs.sh"
}

if [[ ! -s $tarball ]]; then
  [[ $EUID -eq 0 ]] ||
    die "building the node image's Debian rootfs (debootstrap) needs root: run as root (sudo make kind-up), or use a ready node image: KIND_NODE_IMAGE=<image> hack/kind-up.sh"
  if ! command -v debootstrap >/dev/null; then
    log "installing Debian's debootstrap with apt-get (it builds the node image's rootfs)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; } ||
      die "apt-get install debootstrap failed (above): fix apt, then run: hack/node-image/rootfs.sh"
  fi
  mirror=$(debian_mirror)
  mkdir -p "$dir"
  work=$(mktemp -d "$dir/rootfs.XXXXXX")
  # debootstrap mounts /proc (and more) inside the target: unmount before removing anything
  cleanup() {
    awk -v r="$work/" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf --one-file-system "$work"
  }
  trap cleanup EXIT
  log "debootstrap $SUITE (minbase + ${#PACKAGES[@]} packages); about 2-3 min"
  includes=$(IFS=,; echo "${PACKAGES[*]}")
  if ! debootstrap --variant=minbase --include="$includes" "$SUITE" "$work/root" "$mirror" >"$work/debootstrap.log" 2>&1; then
    tail -n 20 "$work/debootstrap.log" >&2
    [[ -f $work/root/debootstrap/debootstrap.log ]] && tail -n 20 "$work/root/debootstrap/debootstrap.log" >&2
    die "debootstrap failed (log above): check the mirror $mirror (DEBIAN_MIRROR overrides it), then run: hack/node-image/rootfs.sh"
  fi
  # no package index, caches, or this machine's mirror inside the image
  rm -rf "$work/root/var/lib/apt/lists/"* "$work/root/var/cache/apt/"*.bin "$work/root/var/cache/apt/archives/"*.deb
  : >"$work/root/etc/apt/sources.list"
  tar -C "$work/root" --one-file-system --numeric-owner -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  cleanup
  trap - EXIT
fi

log "importing $tarball as $image"
docker import --change 'ENV container=docker' --change 'CMD ["/bin/bash"]' "$tarball" "$image" >/dev/null ||
  die "docker import of $tarball failed (above): check Docker (hack/docker-up.sh --dry-run) and disk space, then run: hack/node-image/rootfs.sh"
echo "$image"
