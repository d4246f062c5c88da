#!/bin/bash
# ExecStartPre of the kubelet (kubelet.service.d/20-cgroups.conf). kind configures the kubelet
# with cgroupRoot /kubelet, which the systemd cgroup driver names kubelet.slice, and the kubelet
# refuses to start unless that cgroup exists in every hierarchy it checks.
#
# Our own counterpart of kind v0.33.0's create-kubelet-cgroup-v2.sh (v2 only there; on v1 kind's
# entrypoint creates the cgroups). Changed: on cgroup v1 it runs here, after systemd started, and
# covers every mounted hierarchy: Docker mounts hugetlb, net_cls, net_prio and perf_event in the
# node, which kind's entrypoint leaves without them ("missing paths: .../hugetlb/kubelet.slice").
set -euo pipefail

if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
  # cgroup v2: a child gets only the controllers its parent delegates. The root's
  # subtree_control can be written now because systemd moved every process out of the root.
  delegate_all() { sed -e 's/^/+/' -e 's/ / +/g' "/sys/fs/cgroup$1/cgroup.controllers" >"/sys/fs/cgroup$1/cgroup.subtree_control"; }
  delegate_all ""
  for g in /kubelet /kubelet.slice; do
    mkdir -p "/sys/fs/cgroup$g"
    delegate_all "$g"
  done
  exit 0
fi

# cgroup v1: every hierarchy but the cgroup2 one that hybrid hosts mount at .../unified.
while read -r mnt; do
  for g in kubelet kubelet.slice; do
    mkdir -p "$mnt/$g"
    # a new cpuset cgroup starts with no CPUs and no memory nodes: inherit the parent's
    if [[ -f $mnt/cpuset.cpus && -z $(cat "$mnt/$g/cpuset.cpus") ]]; then
      cat "$mnt/cpuset.cpus" >"$mnt/$g/cpuset.cpus"
      cat "$mnt/cpuset.mems" >"$mnt/$g/cpuset.mems"
    fi
  done
done < <(findmnt -lun -o target -t cgroup)
