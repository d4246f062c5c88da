#!/bin/bash
# Runs inside the node rootfs (first stage of Dockerfile.netbase): copies into /out the files of
# the packages a host-network pod needs for iptables/nftables/conntrack work (kube-proxy, flannel)
# plus a shell and coreutils, with their dependency closure. Documentation and locales are left out.
set -euo pipefail

want=(iptables nftables conntrack dash coreutils netbase libc6)
declare -A seen=()
queue=("${want[@]}")
while ((${#queue[@]})); do
  p=${queue[0]}
  queue=("${queue[@]:1}")
  [[ -n ${seen[$p]:-} ]] && continue
  dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || continue
  seen[$p]=1
  # dependencies: first alternative of each, architecture qualifiers and versions dropped
  deps=$(dpkg-query -W -f '${Pre-Depends}, ${Depends}' "$p" | tr ',' '\n' |
    sed -e 's/|.*//' -e 's/(.*)//' -e 's/:any//' -e 's/[[:space:]]//g' | grep -v '^$' || true)
  for d in $deps; do queue+=("$d"); done
done

mkdir -p /out
# keep the merged-/usr layout: /bin, /lib, ... stay links into /usr
for d in bin sbin lib lib32 lib64 libx32; do
  if [[ -L /$d ]]; then
    target=$(readlink "/$d")
    mkdir -p "/out/${target#/}"
    ln -s "$target" "/out/$d"
  fi
done
for p in "${!seen[@]}"; do dpkg-query -L "$p"; done | sort -u |
  grep -Ev '^/usr/share/(doc|man|info|locale|lintian|bug)(/|$)' |
  while IFS= read -r f; do
    if [[ -f $f || -L $f ]]; then printf '%s\n' "${f#/}"; fi
  done >/tmp/files
# and the dynamic linker's cache and configuration
(cd / && ls -d etc/ld.so.cache etc/ld.so.conf etc/ld.so.conf.d/*) 2>/dev/null >>/tmp/files || true
tar -C / --no-recursion -cf - -T /tmp/files | tar -C /out --keep-directory-symlink -xf -

# iptables commands go through the backend-choosing wrapper
install -m 0755 /tmp/iptables-wrapper /out/usr/sbin/iptables-wrapper
for cmd in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
  ln -sf iptables-wrapper "/out/usr/sbin/$cmd"
done
ln -sf dash /out/bin/sh
mkdir -p /out/tmp /out/run /out/var/run /out/etc
chmod 1777 /out/tmp
echo "root:x:0:0:root:/root:/bin/sh" >/out/etc/passwd
echo "root:x:0:" >/out/etc/group
echo "netbase: ${#seen[@]} packages: ${!seen[*]}" >&2
du -sh /out >&2
