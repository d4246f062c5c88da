#!/usr/bin/env bash
# Makes sure a Docker engine is running that can start --privileged containers (what kind needs).
# Idempotent: a second run changes nothing.
#
#   1. No engine answering `docker info` and no dockerd: install Debian's docker.io (apt-get).
#   2. Only if this machine's capability bounding set lacks CAP_SYS_RESOURCE (some VMs withhold it;
#      `docker run --privileged` then fails with "unable to apply caps"): build
#      hack/node-image/runc-wrapper into /usr/local/libexec/lastcall and register it as the
#      engine's default runtime "lastcall-runc" in /etc/docker/daemon.json (other keys kept).
#   3. Start dockerd if it is not running (systemd when it runs the machine, else in the
#      background, log in $DOCKERD_LOG); restart it if it runs without that runtime.
#   4. Where the wrapper is used, check that a --privileged container starts and that
#      `docker exec` into it works.
#
# Usage: hack/docker-up.sh [--help]
# Env:   DOCKERD_LOG (default /var/log/lastcall-dockerd.log)
#        LASTCALL_DOCKER_SKIP_CHECK=1 skips step 4.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

only_help_flag "$@"

DOCKERD_LOG=${DOCKERD_LOG:-/var/log/lastcall-dockerd.log}
RUNTIME_NAME=lastcall-runc
WRAPPER=/usr/local/libexec/lastcall/runc-wrapper
DAEMON_JSON=/etc/docker/daemon.json

engine_up() { docker info >/dev/null 2>&1; }

need_root() { [[ $EUID -eq 0 ]] || die "$1 needs root (run with sudo)"; }

# bit 24 of CapBnd is CAP_SYS_RESOURCE
lacks_sys_resource() {
  local bnd
  bnd=$(awk '/^CapBnd:/{print $2}' /proc/self/status)
  (((0x$bnd >> 24) & 1)) && return 1 || return 0
}

systemd_runs_machine() { [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; }

wait_engine() {
  local tries=60
  while ((tries-- > 0)); do
    engine_up && return 0
    sleep 1
  done
  die "dockerd did not answer within 60 s; see $DOCKERD_LOG"
}

start_dockerd() {
  need_root "starting dockerd"
  if systemd_runs_machine && systemctl cat docker.service >/dev/null 2>&1; then
    log "starting dockerd with systemctl"
    systemctl start docker.service
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
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || die "dockerd runs but neither systemd nor /var/run/docker.pid knows it: restart it yourself after this change"
  log "stopping dockerd (pid $pid) to change its default runtime"
  kill -TERM "$pid"
  local tries=60
  while ((tries-- > 0)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 1
  done
  die "dockerd (pid $pid) did not stop within 60 s"
}

# install_wrapper: (re)builds the runc wrapper when missing or older than its source.
install_wrapper() {
  if [[ -x $WRAPPER && -z $(find "$REPO_ROOT/hack/node-image/runc-wrapper" -name '*.go' -newer "$WRAPPER" 2>/dev/null) ]]; then
    return
  fi
  need_root "installing the runc wrapper"
  command -v go >/dev/null || die "go is needed to build $WRAPPER"
  log "building the runc wrapper into $WRAPPER"
  mkdir -p "$(dirname "$WRAPPER")"
  (cd "$REPO_ROOT" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$WRAPPER.tmp" ./hack/node-image/runc-wrapper)
  mv "$WRAPPER.tmp" "$WRAPPER"
}

# configure_runtime: registers the wrapper as default runtime in daemon.json (other keys kept).
configure_runtime() {
  if [[ -s $DAEMON_JSON ]] && command -v jq >/dev/null &&
    [[ $(jq -r --arg n "$RUNTIME_NAME" '(.["default-runtime"] // "") + " " + (.runtimes[$n].path // "")' "$DAEMON_JSON") == "$RUNTIME_NAME $WRAPPER" ]]; then
    return
  fi
  need_root "changing $DAEMON_JSON"
  command -v jq >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >/dev/null; }
  log "CAP_SYS_RESOURCE is outside this machine's capability bounding set: registering $WRAPPER as default runtime '$RUNTIME_NAME' in $DAEMON_JSON"
  mkdir -p "$(dirname "$DAEMON_JSON")"
  [[ -s $DAEMON_JSON ]] || echo '{}' >"$DAEMON_JSON"
  jq --arg n "$RUNTIME_NAME" --arg p "$WRAPPER" \
    '.runtimes[$n] = {path: $p} | .["default-runtime"] = $n' "$DAEMON_JSON" >"$DAEMON_JSON.tmp"
  mv "$DAEMON_JSON.tmp" "$DAEMON_JSON"
}

# 1. an engine binary
if ! engine_up && ! command -v dockerd >/dev/null; then
  need_root "installing docker.io"
  log "no Docker engine: installing Debian's docker.io"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
  command -v docker >/dev/null || die "docker CLI missing after installing docker.io"
fi

# 2. the runc wrapper, only where the bounding set withholds CAP_SYS_RESOURCE
if lacks_sys_resource; then
  install_wrapper
  configure_runtime
fi

# 3. a running engine with that configuration
if ! engine_up; then
  start_dockerd
elif lacks_sys_resource && [[ $(docker info --format '{{.DefaultRuntime}}') != "$RUNTIME_NAME" ]]; then
  stop_dockerd
  start_dockerd
fi
log "Docker engine $(docker version --format '{{.Server.Version}}') is running, default runtime $(docker info --format '{{.DefaultRuntime}}')"
if lacks_sys_resource; then
  [[ $(docker info --format '{{.DefaultRuntime}}') == "$RUNTIME_NAME" ]] || die "dockerd's default runtime is not '$RUNTIME_NAME'; check $DAEMON_JSON"
else
  log "capability bounding set is complete: runc needs no wrapper"
fi

# 4. check, where the wrapper is in use, that a --privileged container starts and `docker exec`
#    into it works (kind drives kubeadm through docker exec). The image is our pause program
#    FROM scratch, since nothing can be pulled.
if lacks_sys_resource && [[ ${LASTCALL_DOCKER_SKIP_CHECK:-} != 1 ]]; then
  check_img=lastcall.local/privileged-check:1
  if ! docker image inspect "$check_img" >/dev/null 2>&1; then
    tmp=$(mktemp -d)
    (cd "$REPO_ROOT" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$tmp/pause" ./hack/node-image/pause)
    tar -C "$tmp" -c pause | docker import --change 'ENTRYPOINT ["/pause"]' - "$check_img" >/dev/null
    rm -rf "$tmp"
  fi
  name=lastcall-docker-up-check-$$
  docker rm -f "$name" >/dev/null 2>&1 || true
  if ! out=$(docker run -d --name "$name" --privileged "$check_img" 2>&1); then
    docker rm -f "$name" >/dev/null 2>&1 || true
    die "a --privileged container does not start: $out"
  fi
  if ! out=$(docker exec "$name" /pause --version 2>&1); then
    docker rm -f "$name" >/dev/null 2>&1 || true
    die "docker exec into a --privileged container fails: $out"
  fi
  docker rm -f "$name" >/dev/null 2>&1 || true
  log "--privileged containers start and docker exec works"
fi
