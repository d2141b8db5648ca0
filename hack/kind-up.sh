#!/usr/bin/env bash
# The kind tier's cluster: one kind node named $GPUPIN_KIND_CLUSTER (gpupin-kind) with gpupin's
# image (built from the Dockerfile) and the Ollama image loaded. Prints the kubeconfig's path
# on stdout (nothing else); progress on stderr. Idempotent: a cluster made from the same node
# image and config is kept (started again if its node was stopped), so a second run takes
# seconds plus the image builds.
#
# GPUPIN_KIND_MODE picks how:
#   stock    kind on PATH and a Docker engine that can pull (a laptop): plain `kind create
#            cluster`, kind's own node image, ollama/ollama pulled by the node.
#   offline  no container registry reachable (gpupin's CI): Docker from Debian, the node image
#            and an Ollama stand-in built from package registries (hack/kind-offline/).
#   auto     (default) stock when `kind` is on PATH and Docker answers; else offline as root
#            with apt-get and Go; else exit 3 with the reason (make kind reports it as skipped).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cluster=${GPUPIN_KIND_CLUSTER:-gpupin-kind}
mode=${GPUPIN_KIND_MODE:-auto}
gpupin_image=gpupin.local/gpupin:kind
ollama_image=$(sed -n 's/^  ollamaImage: *//p' "$root/charts/gpupin/values.yaml")   # the chart's default
kubeconfig="$root/.cluster/kind/kubeconfig"
python=${PYTHON:-$root/.venv/bin/python}
say() { echo "kind-up: $*" >&2; }
die() { say "error: $*"; exit 1; }
cannot() { say "no kind cluster here: $*"; exit 3; }
build() {  # docker build, quiet; its errors on stderr, less the legacy builder's deprecation notice
  local rc=0 log; log=$(mktemp)
  docker build -q "$@" >/dev/null 2>"$log" || rc=$?
  grep -v -e 'DEPRECATED: The legacy builder' -e 'BuildKit is currently disabled' -e 'environment-variable\.$' "$log" | grep . >&2 || true
  rm -f "$log"
  return "$rc"
}
started=$(date +%s)

if [ "$mode" = auto ]; then
  if command -v kind >/dev/null && docker info >/dev/null 2>&1; then
    mode=stock
  elif [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null && command -v go >/dev/null; then
    mode=offline
  else
    cannot "needs kind on PATH with a running Docker engine (GPUPIN_KIND_MODE=stock), or root with apt-get and Go to build everything locally (GPUPIN_KIND_MODE=offline)"
  fi
fi
case "$mode" in
  stock | offline) say "mode: $mode" ;;
  *) die "GPUPIN_KIND_MODE=$mode: expected auto, stock or offline" ;;
esac
case "$mode" in
  stock)
    command -v kind >/dev/null || die "stock mode needs kind on PATH (or GPUPIN_KIND_MODE=offline: root with apt-get and Go)"
    docker info >/dev/null 2>&1 || die "stock mode needs a running Docker engine (docker info failed)"
    kind=kind node_image="" config=()   # kind's own node image
    ;;
  offline)
    "$root/hack/kind-offline/docker.sh"
    node_image=$("$root/hack/kind-offline/build-node-image.sh")
    kind="${GPUPIN_KIND_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gpupin/kind-v1.37.2}/bin/kind"
    config=(--config "$root/hack/kind-offline/cluster.yaml")
    export DOCKER_BUILDKIT=0   # Debian's Docker 20.10 has no usable BuildKit here
    ;;
esac

# --- the cluster ---------------------------------------------------------------------------
state="$(dirname "$kubeconfig")"
mkdir -p "$state"
node="$cluster-control-plane"
exists() { local clusters; clusters=$("$kind" get clusters 2>/dev/null || true); grep -qx "$cluster" <<<"$clusters"; }
# What the cluster was made from (the node image's ID and the cluster config), recorded in the
# node itself: every checkout sees the same record (the cluster's name is shared).
record=/kind/gpupin-identity
identity() {
  { [ -n "$node_image" ] && docker image inspect -f '{{.Id}}' "$node_image"; cat ${config[@]+"${config[1]}"} /dev/null; } \
    | cksum | cut -d" " -f1   # cksum: POSIX, also on macOS
}
if exists; then
  if [ "$(docker inspect -f '{{.State.Running}}' "$node" 2>/dev/null)" != true ]; then
    say "cluster $cluster's node is stopped: starting it"
    docker start "$node" >/dev/null
  fi
  made_from=$(docker exec "$node" cat "$record" 2>/dev/null || true)
  if [ -z "$made_from" ]; then
    say "cluster $cluster carries no record of what it was made from: recreating it (kubeconfigs of other checkouts stop working)"
    "$kind" delete cluster --name "$cluster" >&2
  elif [ "$made_from" != "$(identity)" ]; then
    say "cluster $cluster was made from another node image or config: recreating it (kubeconfigs of other checkouts stop working)"
    "$kind" delete cluster --name "$cluster" >&2
  else
    say "reusing cluster $cluster (made from the same node image and config)"
  fi
fi
if ! exists; then
  say "creating kind cluster $cluster (cold: ~1-2 min)..."
  t0=$(date +%s)
  "$kind" create cluster --name "$cluster" ${node_image:+--image "$node_image"} ${config[@]+"${config[@]}"} \
    --kubeconfig "$kubeconfig" --wait 5m >&2 || die "kind create cluster failed (see above)"
  identity | docker exec -i "$node" sh -c "cat >$record"
  say "cluster $cluster created in $(( $(date +%s) - t0 )) s"
fi
"$kind" get kubeconfig --name "$cluster" >"$kubeconfig"
for _ in $(seq 1 60); do
  KUBECONFIG=$kubeconfig "${GPUPIN_TOOLS_BIN:+$GPUPIN_TOOLS_BIN/}kubectl" get --raw /readyz >/dev/null 2>&1 && break
  sleep 2
done
KUBECONFIG=$kubeconfig "${GPUPIN_TOOLS_BIN:+$GPUPIN_TOOLS_BIN/}kubectl" get --raw /readyz >/dev/null \
  || die "the API server of $cluster does not answer /readyz"

# --- the images ----------------------------------------------------------------------------
if [ "$mode" = offline ]; then
  # The build cannot reach a package index (a container does not trust this host's egress CA):
  # the wheels come from the host, and the Dockerfile installs them (its PIP_* build args).
  wheelhouse="$root/build/wheelhouse"
  # the image's python3 is Debian bookworm's 3.11: compiled wheels must be for 3.11 too
  host_python=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  [ "$host_python" = 3.11 ] || die "the offline image build needs wheels for Python 3.11, and $python is $host_python"
  want=$( { echo "$host_python"; cat "$root/pyproject.toml" "$root/constraints.txt"; } | sha256sum | cut -c1-16)
  if [ "$(cat "$wheelhouse/.stamp" 2>/dev/null)" != "$want" ]; then
    say "building the wheelhouse for the image (pip wheel)..."
    rm -rf "$wheelhouse"; mkdir -p "$wheelhouse"
    "$python" -m pip wheel -q --disable-pip-version-check -c "$root/constraints.txt" -w "$wheelhouse" "$root" setuptools wheel >&2 \
      || die "pip wheel failed"
    rm -f "$wheelhouse"/gpupin-*.whl   # the image builds gpupin from the source it copies
    echo "$want" >"$wheelhouse/.stamp"
  fi
  # python:3.11-slim, which the Dockerfile names, is Debian's python3 (3.11) here
  base=$(docker image inspect -f '{{index .Config.Labels "gpupin.dev/inputs"}}' python:3.11-slim 2>/dev/null || true)
  if docker image inspect python:3.11-slim >/dev/null 2>&1 && [ -z "$base" ]; then
    say "using the python:3.11-slim already in Docker"
  else
    docker tag gpupin.local/debian-python:bookworm python:3.11-slim
  fi
  build_args=(--build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS=/src/build/wheelhouse)
  # the Ollama image: the same version built for CPU, under the chart's default name
  engines=$("$root/hack/build-engines.sh")
  built=$("$engines/ollama" --version 2>&1 | awk '{print $NF}' | tail -1)
  [ "${ollama_image##*:}" = "$built" ] \
    || die "the chart's ollamaImage is $ollama_image, but hack/build-engines.sh builds Ollama $built: change both pins together"
  context=$(mktemp -d); trap 'rm -rf "$context"' EXIT; cp "$engines/ollama" "$context/ollama"
  say "building $ollama_image (Ollama $built for CPU, hack/kind-offline/ollama.Dockerfile)..."
  build -f "$root/hack/kind-offline/ollama.Dockerfile" --build-arg BASE=gpupin.local/debian-python:bookworm \
    -t "$ollama_image" "$context" || die "building $ollama_image failed"
  rm -rf "$context"
  load=("$gpupin_image" "$ollama_image")
else
  build_args=()
  load=("$gpupin_image")   # the node pulls $ollama_image itself
fi
say "building $gpupin_image from the Dockerfile..."
t0=$(date +%s)
build ${build_args[@]+"${build_args[@]}"} -t "$gpupin_image" "$root" || die "docker build of $gpupin_image failed"
say "built $gpupin_image in $(( $(date +%s) - t0 )) s; loading ${load[*]} into $cluster..."
"$kind" load docker-image --name "$cluster" "${load[@]}" >&2
printf 'GPUPIN_KIND_MODE=%s\nGPUPIN_KIND_IMAGE=%s\nGPUPIN_KIND_CLUSTER=%s\n' "$mode" "$gpupin_image" "$cluster" \
  >"$(dirname "$kubeconfig")/env"
say "ready in $(( $(date +%s) - started )) s (KUBECONFIG=$kubeconfig)"
echo "$kubeconfig"
