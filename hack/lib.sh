#!/usr/bin/env bash
# Shared helpers for hack/ scripts. Source it; do not run it.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Built tools are cached by name and version. CI and repeated clones can share one cache by
# exporting LASTCALL_CACHE (e.g. ~/.cache/lastcall); the default stays inside the git-ignored .cache/.
LASTCALL_CACHE=${LASTCALL_CACHE:-$REPO_ROOT/.cache}
export LASTCALL_CACHE

# Every pinned version (CONSUL_VERSION, KUBE_VERSION, KIND_VERSION, GOLANG_IMAGE, ...) comes from
# hack/versions.env; a variable already set in the environment wins, to try another version.
load_versions() {
  local k v
  while IFS='=' read -r k v || [[ -n $k ]]; do
    [[ $k =~ ^[A-Z][A-Z0-9_]*$ ]] || continue
    [[ -n ${!k:-} ]] || printf -v "$k" '%s' "$v"
  done <"$REPO_ROOT/hack/versions.env"
}
load_versions

# How to run the current script again, for failure messages.
RERUN=$(
  s=$(cd "$(dirname "$0")" 2>/dev/null && pwd)/$(basename "$0")
  printf '%s' "${s#"$REPO_ROOT"/}"
  (($# == 0)) || printf ' %q' "$@"
)

log() { printf '%s [hack] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# die MESSAGE: the message should say what failed and which command to run next. Exit status 3
# tells the scripts above this one (and on_error) that the reason has been printed already.
die() {
  log "error: $*"
  exit 3
}

# on_error: any other command that fails outside a condition stops the script (set -e); name it
# and say what to run next instead of stopping silently. errtrace carries this into functions and
# command substitutions.
on_error() {
  local rc=$1 cmd=$2 where=$3
  ((rc != 3)) || exit 3
  ((${#cmd} <= 120)) || cmd="${cmd:0:117}..."
  log "error: \`$cmd\` failed (exit $rc) at ${where#"$REPO_ROOT"/}; fix the cause shown above, then rerun: $RERUN"
  exit 3
}
set -E
trap 'on_error $? "$BASH_COMMAND" "${BASH_SOURCE[0]}:$LINENO"' ERR

# go_mod_file MODULE@VERSION: path of the module's go.mod in the module cache (downloads it).
go_mod_file() {
  local out
  if ! out=$(go mod download -json "$1" 2>&1); then
    die "cannot download $1 through GOPROXY=$(go env GOPROXY): $(sed -n 's/^[[:space:]]*"Error": "\(.*\)",*$/\1/p' <<<"$out" | head -n1); check the proxy is reachable, then rerun: $RERUN"
  fi
  sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p' <<<"$out"
}

# go_mod_tidy DIR WHAT: `go mod tidy` in a wrapper module we generated, quiet unless it fails.
# No -e: a package the wrapper imports that does not resolve must stop the build here, with the
# reason, not later as a confusing build error (or never, as a tools.go that imported nothing).
go_mod_tidy() {
  local out
  if ! out=$(cd "$1" && GOFLAGS=-mod=mod go mod tidy 2>&1); then
    grep -v '^go: downloading' <<<"$out" >&2 || true
    die "go mod tidy of the $2 wrapper module in $1 failed (above): when a module is missing, check GOPROXY; when a package is, fix the wrapper in ${0#"$REPO_ROOT"/}; then rerun: $RERUN"
  fi
}

# kind_bin: the kind binary ($KIND, else KIND_VERSION built from its module, cached).
kind_bin() { "$REPO_ROOT/hack/tool.sh" kind; }

# usage: prints the running script's header comment (line 2 up to its `source` line).
usage() { sed -n '2,/^source/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

# only_help_flag ARGS...: for scripts that take no argument but --help.
only_help_flag() {
  case ${1:-} in
    -h | --help) usage; exit 0 ;;
    "") ;;
    *) usage >&2; die "unknown argument: $1 (see --help)" ;;
  esac
}
