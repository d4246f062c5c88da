#!/usr/bin/env bash
# Builds the Debian root filesystem of the offline kind node image with debootstrap and imports it
# into Docker. Cached: the tarball in $LASTCALL_CACHE/kind-node/ and the Docker image are named
# by a hash of the suite, the package list and this script, and reused while both stay the same.
#
# Usage: hack/node-image/rootfs.sh [--help]      prints the image name, e.g. lastcall.local/kind-rootfs:bookworm-0123abcd
# Env:   NODE_DEBIAN_SUITE   Debian suite (default bookworm: containerd 1.6, runc 1.1, CNI plugins 1.1)
#        DEBIAN_MIRROR       mirror URL; default: the first Debian mirror this machine's apt uses
#                            (/etc/apt/sources.list.d/*.sources, then /etc/apt/sources.list)
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

usage() { sed -n '2,/^source/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }
case ${1:-} in
  -h | --help) usage; exit 0 ;;
  "") ;;
  *) usage >&2; die "unknown argument: $1" ;;
esac

SUITE=${NODE_DEBIAN_SUITE:-bookworm}
# What a kind node runs: systemd as PID 1, containerd + runc, CNI plugins, the tools kubelet,
# kubeadm and kube-proxy call (iptables, nftables, conntrack, socat, mount, ethtool, ...), and jq
# for the containerd createContainer hook.
PACKAGES=(
  systemd systemd-sysv dbus
  containerd runc containernetworking-plugins
  iptables nftables conntrack socat ethtool iproute2 kmod
  mount util-linux procps ca-certificates libseccomp2 jq
)

hash=$( { echo "$SUITE"; printf '%s\n' "${PACKAGES[@]}"; cat "${BASH_SOURCE[0]}"; } | sha256sum | cut -c1-12)
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
  die "no Debian mirror found in /etc/apt: set DEBIAN_MIRROR"
}

if [[ ! -s $tarball ]]; then
  [[ $EUID -eq 0 ]] || die "debootstrap needs root"
  if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
  mirror=$(debian_mirror)
  work=$(mktemp -d "$dir.rootfs.XXXXXX" 2>/dev/null || { mkdir -p "$dir" && mktemp -d "$dir/rootfs.XXXXXX"; })
  trap 'rm -rf "$work"' EXIT
  log "debootstrap $SUITE (minbase + ${#PACKAGES[@]} packages); about 2-3 min"
  includes=$(IFS=,; echo "${PACKAGES[*]}")
  if ! debootstrap --variant=minbase --include="$includes" "$SUITE" "$work/root" "$mirror" >"$work/debootstrap.log" 2>&1; then
    tail -n 20 "$work/debootstrap.log" >&2
    [[ -f $work/root/debootstrap/debootstrap.log ]] && tail -n 20 "$work/root/debootstrap/debootstrap.log" >&2
    die "debootstrap failed (log above)"
  fi
  # no package index, caches, or this machine's mirror inside the image
  rm -rf "$work/root/var/lib/apt/lists/"* "$work/root/var/cache/apt/"*.bin "$work/root/var/cache/apt/archives/"*.deb
  : >"$work/root/etc/apt/sources.list"
  mkdir -p "$dir"
  tar -C "$work/root" --numeric-owner -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  rm -rf "$work"
  trap - EXIT
fi

log "importing $tarball as $image"
docker import --change 'ENV container=docker' --change 'CMD ["/bin/bash"]' "$tarball" "$image" >/dev/null
echo "$image"
