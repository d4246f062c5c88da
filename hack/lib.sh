#!/usr/bin/env bash
# Shared helpers for hack/ scripts. Source it; do not run it.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Built tools are cached by name and version. CI and repeated clones can share one cache by
# exporting LASTCALL_CACHE (e.g. ~/.cache/lastcall); the default stays inside the git-ignored .cache/.
LASTCALL_CACHE=${LASTCALL_CACHE:-$REPO_ROOT/.cache}
export LASTCALL_CACHE

# Versions of the real components the tests and the kind cluster use. One place to bump them.
CONSUL_VERSION=${CONSUL_VERSION:-v1.22.5}
KUBE_VERSION=${KUBE_VERSION:-v1.37.0}
ETCD_VERSION=${ETCD_VERSION:-v3.7.3}

log() { printf '%s [hack] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# go_mod_file MODULE@VERSION: path of the module's go.mod in the module cache (downloads it).
go_mod_file() {
  go mod download -json "$1" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p'
}

# cached NAME VERSION BINARY: path of a cached binary if present and executable, else empty.
cached() {
  local f="$LASTCALL_CACHE/$1/$2/$3"
  [[ -x $f ]] && printf '%s\n' "$f" || true
}

# usage: prints the running script's header comment (line 2 up to its `source` line).
usage() { sed -n '2,/^source/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

# only_help_flag ARGS...: for scripts that take no argument but --help.
only_help_flag() {
  case ${1:-} in
    -h | --help) usage; exit 0 ;;
    "") ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
}
