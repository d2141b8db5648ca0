#!/usr/bin/env bash
# Makes sure a Docker engine answers, for the kind tier on a host without one.
#
# A Docker engine that already answers is used as it is. Otherwise, as root on Debian, this
# installs Debian's docker.io (apt) and starts dockerd in the background (log and PID under
# the cache). Where the host's capability bounding set lacks CAP_SYS_RESOURCE, dockerd gets
# runc-without-sys-resource as its default runtime, without which no --privileged container
# (every kind node) starts here; see README.md. Idempotent: a second run finds it running.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache="${GPUPIN_KIND_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gpupin/kind-v1.37.2}"
mkdir -p "$cache"
say() { echo "kind-offline: $*" >&2; }
die() { say "error: $*"; exit 1; }

lacks_sys_resource() {  # CAP_SYS_RESOURCE is bit 24 of the bounding set
  local bnd; bnd=$(awk '/^CapBnd:/ {print $2}' /proc/self/status)
  (( (16#$bnd >> 24 & 1) == 0 ))
}

if docker info >/dev/null 2>&1; then
  if lacks_sys_resource && [ "$(docker info -f '{{.DefaultRuntime}}')" != gpupin-runc ]; then
    die "this host lacks CAP_SYS_RESOURCE and the running dockerd would fail every kind node
    ('unable to apply caps'); stop it and rerun, or start it with
    --add-runtime gpupin-runc=$here/runc-without-sys-resource --default-runtime gpupin-runc"
  fi
  exit 0
fi

[ "$(id -u)" -eq 0 ] || die "no Docker engine answers, and starting one needs root"
if ! command -v dockerd >/dev/null; then
  command -v apt-get >/dev/null || die "no Docker engine answers and there is no apt-get to install Debian's docker.io"
  say "installing Debian's docker.io (cold: ~1 min)..."
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io >"$cache/apt-docker.log" 2>&1; then
    apt-get update -q >>"$cache/apt-docker.log" 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io >>"$cache/apt-docker.log" 2>&1 \
      || { tail -n 20 "$cache/apt-docker.log" >&2; die "apt-get install docker.io failed (log: $cache/apt-docker.log)"; }
  fi
fi
args=()
if lacks_sys_resource; then
  # a copy outside the work tree: dockerd outlives this checkout's path
  install -m 0755 "$here/runc-without-sys-resource" "$cache/runc-without-sys-resource"
  args+=(--add-runtime "gpupin-runc=$cache/runc-without-sys-resource" --default-runtime gpupin-runc)
  say "this host lacks CAP_SYS_RESOURCE: dockerd's default runtime drops it from containers (README.md)"
fi
say "starting dockerd (log: $cache/dockerd.log)..."
nohup dockerd "${args[@]}" >"$cache/dockerd.log" 2>&1 &
echo $! >"$cache/dockerd.pid"
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && { say "dockerd is up (pid $(cat "$cache/dockerd.pid"))"; exit 0; }
  kill -0 "$(cat "$cache/dockerd.pid")" 2>/dev/null || break
  sleep 1
done
tail -n 20 "$cache/dockerd.log" >&2
die "dockerd did not come up (log: $cache/dockerd.log)"
