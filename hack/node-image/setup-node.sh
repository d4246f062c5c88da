#!/bin/bash
# Runs once inside the node image while it is built (hack/node-image/Dockerfile).
set -euo pipefail

chmod 0755 /kind /kind/bin /kind/bin/* /usr/local/bin/entrypoint /usr/local/sbin/runc
chmod 0644 /kind/version /kind/manifests/*
chmod 0755 /usr/bin/kubelet /usr/bin/kubeadm /usr/bin/kubectl

# systemd in a container: only what a node needs. No units pulled in by default targets
# (the packages enabled some), no kernel log in the journal, no binfmt registration (global).
rm -f /lib/systemd/system/sysinit.target.wants/systemd-tmpfiles-setup.service
rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/*
rm -f /lib/systemd/system/local-fs.target.wants/* /lib/systemd/system/basic.target.wants/*
rm -f /lib/systemd/system/sockets.target.wants/*udev* /lib/systemd/system/sockets.target.wants/*initctl*
echo "ReadKMsg=no" >>/etc/systemd/journald.conf
systemctl enable containerd.service kubelet.service lastcall-node-prep.service
systemctl mask systemd-binfmt.service
[[ -e /sbin/init ]] || ln -s /lib/systemd/systemd /sbin/init

mkdir -p /etc/kubernetes/manifests /etc/cni/net.d /opt/cni/bin
cp -a /usr/lib/cni/. /opt/cni/bin/

# The runtime spec every CRI container starts from: containerd's default, without rlimits (raising
# them needs CAP_SYS_RESOURCE), plus the hook that gives containers the node's product_uuid.
ctr oci spec |
  jq '.hooks.createContainer = ((.hooks.createContainer // []) + [{"path": "/kind/bin/product-files-hook.sh"}])' |
  jq 'del(.process.rlimits)' >/etc/containerd/cri-base.json

containerd --version
/usr/local/sbin/runc --version | head -n1
kubelet --version
