#!/bin/bash
# Run once by lastcall-node-prep.service after systemd has discovered its cgroup controllers:
# removes the filtered /proc/cgroups the entrypoint mounted on cgroup v1 to hide the misc
# controller (see /usr/local/bin/entrypoint). Same job as kind v0.33.0's undo-mount-hacks.sh.
set -euo pipefail

[[ -f /sys/fs/cgroup/cgroup.controllers ]] && exit 0
if findmnt /proc/cgroups >/dev/null; then
  umount /proc/cgroups
fi
