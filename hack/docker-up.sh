#!/usr/bin/env bash
# Makes sure a Docker engine is running that can start --privileged containers (what kind needs).
# It first works out what it has to change on this machine, prints that as one block (and, on a
# terminal, waits 10 s for a Ctrl-C), and only then changes anything. Idempotent: when nothing
# needs changing it changes nothing.
#
# What it may do, only where needed:
#   - only if this machine's capability bounding set lacks CAP_SYS_RESOURCE (some VMs withhold it;
#     `docker run --privileged` then fails with "unable to apply caps"): build
#     hack/node-image/runc-wrapper into /usr/local/libexec/lastcall and register it as the
#     engine's default runtime "lastcall-runc" in /etc/docker/daemon.json (other keys kept;
#     jq edits it, installed with apt-get when missing);
#   - install Debian's docker.io with apt-get, when no engine answers `docker info` and dockerd
#     is not installed;
#   - start dockerd if it is not running (systemd when it runs the machine, else in the
#     background, log in $DOCKERD_LOG), or restart it if it runs without that runtime (the
#     containers it runs stop);
#   - where the wrapper is used, check that a --privileged container starts and that
#     `docker exec` into it works.
# Changing the machine needs root; --dry-run does not.
#
# Usage: hack/docker-up.sh [--help] [--dry-run]
#   --dry-run   print what it would do, change nothing
# Env:   DOCKERD_LOG (default /var/log/lastcall-dockerd.log)
#        LASTCALL_DOCKER_SKIP_CHECK=1 skips the --privileged check.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DOCKERD_LOG=${DOCKERD_LOG:-/var/log/lastcall-dockerd.log}
RUNTIME_NAME=lastcall-runc
WRAPPER=/usr/local/libexec/lastcall/runc-wrapper
WRAPPER_SRC=$REPO_ROOT/hack/node-image/runc-wrapper
DAEMON_JSON=/etc/docker/daemon.json
CHECK_IMAGE=lastcall.local/privileged-check:1

# --- facts about this machine (read-only; the tests replace them) ---

engine_up() { docker info >/dev/null 2>&1; }
# dockerd lives in /usr/sbin, which a non-root PATH may lack
have_dockerd() { command -v dockerd >/dev/null || [[ -x /usr/sbin/dockerd || -x /usr/bin/dockerd ]]; }
have_jq() { command -v jq >/dev/null; }

# bit 24 of CapBnd is CAP_SYS_RESOURCE
lacks_sys_resource() {
  local bnd
  bnd=$(awk '/^CapBnd:/{print $2}' /proc/self/status)
  (((0x$bnd >> 24) & 1)) && return 1 || return 0
}

systemd_runs_machine() { [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; }
docker_unit_exists() { systemd_runs_machine && systemctl cat docker.service >/dev/null 2>&1; }

# wrapper_source_hash: identifies the wrapper's source; stored beside the installed binary.
wrapper_source_hash() { cat "$WRAPPER_SRC"/*.go | sha256sum | cut -c1-16; }
wrapper_current() {
  [[ -x $WRAPPER && $(cat "$WRAPPER.source" 2>/dev/null) == "$(wrapper_source_hash)" ]]
}

# runtime_configured: daemon.json names the wrapper as default runtime.
runtime_configured() {
  [[ -s $DAEMON_JSON ]] || return 1
  if have_jq; then
    [[ $(jq -r --arg n "$RUNTIME_NAME" '(.["default-runtime"] // "") + " " + (.runtimes[$n].path // "")' "$DAEMON_JSON") == "$RUNTIME_NAME $WRAPPER" ]]
  else
    grep -q "\"default-runtime\": *\"$RUNTIME_NAME\"" "$DAEMON_JSON" && grep -qF "\"$WRAPPER\"" "$DAEMON_JSON"
  fi
}

default_runtime() { docker info --format '{{.DefaultRuntime}}' 2>/dev/null || true; }
running_containers() { docker ps -q 2>/dev/null | wc -l; }

# --- the decisions ---

# plan: the steps this machine needs, one a line, in the order they run:
# install-jq build-wrapper configure-runtime install-docker start-dockerd|restart-dockerd check.
# The wrapper is registered before docker.io is installed, so an engine its package starts
# already uses it.
plan() {
  local up=false wrap=false
  engine_up && up=true
  lacks_sys_resource && wrap=true
  if $wrap; then
    if ! runtime_configured; then
      have_jq || echo install-jq
    fi
    wrapper_current || echo build-wrapper
    runtime_configured || echo configure-runtime
  fi
  if ! $up && ! have_dockerd; then echo install-docker; fi
  if ! $up; then
    echo start-dockerd
  elif $wrap && [[ $(default_runtime) != "$RUNTIME_NAME" ]]; then
    echo restart-dockerd
  fi
  if $wrap && [[ ${LASTCALL_DOCKER_SKIP_CHECK:-} != 1 ]]; then echo check; fi
}

# describe STEP: what the step does to this machine, and why.
describe() {
  case $1 in
    install-jq) echo "install jq with apt-get (apt-get update; apt-get install jq), to edit $DAEMON_JSON" ;;
    build-wrapper) echo "build the runc wrapper (hack/node-image/runc-wrapper, Go) into $WRAPPER ($([[ -x $WRAPPER ]] && echo "replacing one of other or unknown source" || echo "not there yet"))" ;;
    configure-runtime)
      echo "register that wrapper as Docker's default runtime \"$RUNTIME_NAME\" in $DAEMON_JSON (other keys kept)."
      echo "   Why: this machine's capability bounding set lacks CAP_SYS_RESOURCE, so runc fails every"
      echo "   \`docker run --privileged\` (kind's nodes) with \"unable to apply caps\"; the wrapper takes out"
      echo "   of each container's spec only what this machine cannot grant, then runs runc"
      ;;
    install-docker) echo "install Debian's docker.io with apt-get (apt-get update; apt-get install docker.io): no Docker engine answers and dockerd is not installed" ;;
    start-dockerd)
      if docker_unit_exists || { ! have_dockerd && systemd_runs_machine; }; then
        echo "start dockerd with systemd (systemctl start docker.service)"
      else
        echo "start dockerd in the background (setsid dockerd; log: $DOCKERD_LOG)"
      fi
      ;;
    restart-dockerd)
      local n
      n=$(running_containers)
      echo "restart dockerd so that it uses \"$RUNTIME_NAME\" (it runs with \"$(default_runtime)\")$( ((n == 0)) || printf '; the %s containers it runs now stop, kind nodes included' "$n")"
      ;;
    check) echo "then check that a --privileged container starts and docker exec into it works (a throwaway container of $CHECK_IMAGE, imported when missing)" ;;
  esac
}

# announce STEPS...: the one block printed before anything changes.
announce() {
  local verb=$1 i=0 s line first
  shift
  log "hack/docker-up.sh $verb this machine, in this order:"
  for s in "$@"; do
    [[ $s == check ]] && continue
    i=$((i + 1))
    first=true
    while IFS= read -r line; do
      if $first; then log "  $i. $line"; first=false; else log "  $line"; fi
    done < <(describe "$s")
  done
  for s in "$@"; do [[ $s != check ]] || log "  $(describe check)"; done
}

# --- the steps ---

need_root() { [[ $EUID -eq 0 ]] || die "$1 needs root: run it as root (sudo hack/docker-up.sh, or sudo make ...); preview: hack/docker-up.sh --dry-run"; }

apt_updated=false
apt_install() {
  if ! $apt_updated; then
    apt-get update -qq || die "apt-get update failed (above): fix this machine's apt sources, then run: hack/docker-up.sh"
    apt_updated=true
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null ||
    die "apt-get install $* failed (above): fix apt, or install $* yourself, then run: hack/docker-up.sh"
}

wait_engine() {
  local tries=60
  while ((tries-- > 0)); do
    engine_up && return 0
    sleep 1
  done
  if docker_unit_exists; then
    die "dockerd did not answer within 60 s: see journalctl -u docker.service, then run: hack/docker-up.sh"
  fi
  die "dockerd did not answer within 60 s: see $DOCKERD_LOG, then run: hack/docker-up.sh"
}

start_dockerd() {
  if docker_unit_exists; then
    log "starting dockerd with systemctl"
    systemctl start docker.service || die "systemctl start docker.service failed: see journalctl -u docker.service, then run: hack/docker-up.sh"
  else
    log "starting dockerd in the background (log: $DOCKERD_LOG)"
    mkdir -p "$(dirname "$DOCKERD_LOG")"
    setsid nohup dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
  fi
  wait_engine
}

stop_dockerd() {
  if systemd_runs_machine && systemctl is-active --quiet docker.service 2>/dev/null; then
    systemctl stop docker.service
    return
  fi
  local pid
  pid=$(cat /var/run/docker.pid 2>/dev/null || true)
  if [[ -z $pid ]] || ! kill -0 "$pid" 2>/dev/null; then
    die "dockerd runs but neither systemd nor /var/run/docker.pid knows it: stop it yourself (it must restart to read $DAEMON_JSON), then run: hack/docker-up.sh"
  fi
  log "stopping dockerd (pid $pid) to change its default runtime"
  kill -TERM "$pid"
  local tries=60
  while ((tries-- > 0)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 1
  done
  die "dockerd (pid $pid) did not stop within 60 s: stop it (kill -KILL $pid), then run: hack/docker-up.sh"
}

# ensure_running: start dockerd, or restart it when it runs without the wrapper it needs (also
# covers an engine that docker.io's package started a moment ago).
ensure_running() {
  if ! engine_up; then
    start_dockerd
  elif lacks_sys_resource && [[ $(default_runtime) != "$RUNTIME_NAME" ]]; then
    stop_dockerd
    start_dockerd
  fi
}

build_wrapper() {
  command -v go >/dev/null || die "go is needed to build $WRAPPER: install a Go toolchain, then run: hack/docker-up.sh"
  log "building the runc wrapper into $WRAPPER"
  mkdir -p "$(dirname "$WRAPPER")"
  (cd "$REPO_ROOT" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$WRAPPER.tmp" ./hack/node-image/runc-wrapper) ||
    die "go build of the runc wrapper failed (above): fix hack/node-image/runc-wrapper, then run: hack/docker-up.sh"
  mv "$WRAPPER.tmp" "$WRAPPER"
  wrapper_source_hash >"$WRAPPER.source"
}

configure_runtime() {
  log "registering $WRAPPER as default runtime '$RUNTIME_NAME' in $DAEMON_JSON"
  mkdir -p "$(dirname "$DAEMON_JSON")"
  [[ -s $DAEMON_JSON ]] || echo '{}' >"$DAEMON_JSON"
  jq --arg n "$RUNTIME_NAME" --arg p "$WRAPPER" \
    '.runtimes[$n] = {path: $p} | .["default-runtime"] = $n' "$DAEMON_JSON" >"$DAEMON_JSON.tmp" ||
    die "$DAEMON_JSON is not valid JSON (jq above): fix or remove it, then run: hack/docker-up.sh"
  mv "$DAEMON_JSON.tmp" "$DAEMON_JSON"
}

# check_privileged: a --privileged container starts and `docker exec` into it works (kind drives
# kubeadm through docker exec). The image is our pause program FROM scratch: nothing is pulled.
check_privileged() {
  local name out tmp
  if ! docker image inspect "$CHECK_IMAGE" >/dev/null 2>&1; then
    tmp=$(mktemp -d)
    (cd "$REPO_ROOT" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$tmp/pause" ./hack/node-image/pause)
    tar -C "$tmp" -c pause | docker import --change 'ENTRYPOINT ["/pause"]' - "$CHECK_IMAGE" >/dev/null
    rm -rf "$tmp"
  fi
  name=lastcall-docker-up-check-$$
  docker rm -f "$name" >/dev/null 2>&1 || true
  local next="see $DOCKERD_LOG and hack/node-image/runc-wrapper, then run: hack/docker-up.sh (LASTCALL_DOCKER_SKIP_CHECK=1 skips this check)"
  if ! out=$(docker run -d --name "$name" --privileged "$CHECK_IMAGE" 2>&1); then
    docker rm -f "$name" >/dev/null 2>&1 || true
    die "a --privileged container does not start: $out; $next"
  fi
  if ! out=$(docker exec "$name" /pause --version 2>&1); then
    docker rm -f "$name" >/dev/null 2>&1 || true
    die "docker exec into a --privileged container fails: $out; $next"
  fi
  docker rm -f "$name" >/dev/null 2>&1 || true
  log "--privileged containers start and docker exec works"
}

run_step() {
  case $1 in
    install-jq) apt_install jq ;;
    build-wrapper) build_wrapper ;;
    configure-runtime) configure_runtime ;;
    install-docker)
      log "installing Debian's docker.io"
      apt_install docker.io
      command -v docker >/dev/null || die "no docker CLI after installing docker.io: check dpkg -L docker.io, then run: hack/docker-up.sh"
      ;;
    start-dockerd | restart-dockerd) ensure_running ;;
    check) check_privileged ;;
  esac
}

main() {
  local dry_run=false
  case ${1:-} in
    -h | --help) usage; exit 0 ;;
    --dry-run) dry_run=true ;;
    "") ;;
    *) usage >&2; die "unknown argument: $1 (see --help)" ;;
  esac
  [[ $# -le 1 ]] || die "hack/docker-up.sh takes one flag at most, got: $*"

  # An engine this user may not talk to is not a missing engine: say so instead of planning an install.
  if ! engine_up && [[ $EUID -ne 0 && -S /var/run/docker.sock ]]; then
    die "docker info fails ($(docker info 2>&1 | tail -n 1)): run as root or join the docker group, then run: hack/docker-up.sh"
  fi
  local steps changes=false s
  mapfile -t steps < <(plan)
  for s in "${steps[@]}"; do [[ $s == check ]] || changes=true; done

  if $dry_run; then
    if $changes; then
      announce "would change" "${steps[@]}"
      [[ $EUID -eq 0 ]] || log "(that needs root: sudo hack/docker-up.sh)"
    else
      log "nothing to change: the Docker engine runs (default runtime $(default_runtime))"
      [[ ${#steps[@]} -eq 0 ]] || log "would only $(describe check | sed 's/^then //')"
    fi
    return 0
  fi

  if $changes; then
    announce "will change" "${steps[@]}"
    need_root "changing this machine's Docker setup"
    if [[ -t 0 && -t 2 ]]; then
      log "starting in 10 s (Ctrl-C to stop; hack/docker-up.sh --dry-run shows this without changes)"
      sleep 10
    fi
  fi
  for s in "${steps[@]}"; do run_step "$s"; done

  log "Docker engine $(docker version --format '{{.Server.Version}}') is running, default runtime $(default_runtime)"
  if lacks_sys_resource; then
    [[ $(default_runtime) == "$RUNTIME_NAME" ]] ||
      die "dockerd's default runtime is '$(default_runtime)', not '$RUNTIME_NAME': check $DAEMON_JSON (and a --default-runtime flag of dockerd), restart dockerd, then run: hack/docker-up.sh"
  else
    log "capability bounding set is complete: runc needs no wrapper"
  fi
}

# Sourced (by the tests), it only defines the functions above.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  main "$@"
fi
