#!/bin/bash
# OCI createContainer hook of every container the node's containerd starts (added to
# /etc/containerd/cri-base.json by setup-node.sh): gives the container the node's fake DMI
# product_name and product_uuid (written by /usr/local/bin/entrypoint), so pods see their node's
# identity rather than the host's. Copies them into the container's root first: one shared bind
# source for every container slows container creation (kind #2551 and its mount-product-files.sh,
# which this follows).
set -euo pipefail
# the hook runs with the container's environment: use the node's tools only
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# the runtime passes the container's state (JSON) on stdin
bundle=$(jq -r .bundle)
root=${bundle:?}/rootfs
cp /kind/product_name /kind/product_uuid "$root/"
bind() { [[ -f $2 ]] && mount -o ro,bind "$root/$1" "$root$2" || true; }
bind product_name /sys/class/dmi/id/product_name
bind product_uuid /sys/class/dmi/id/product_uuid
bind product_uuid /sys/devices/virtual/dmi/id/product_uuid
