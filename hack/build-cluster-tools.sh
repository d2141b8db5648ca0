#!/usr/bin/env bash
# Builds the pinned control-plane tools (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, etcd, kwok, kwokctl, helm) from the Go modules under
# test/cluster/tools into a cache outside the work tree, and prints where they are.
#
# Each binary is rebuilt only when its module's go.sum changed (a stamp beside it),
# so a warm run takes a second. A cold run takes ~15 minutes on 2 cores; progress is
# printed per binary with the time it usually takes.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/test/cluster/tools"
k8s_version=v1.37.2
cache="${GPUPIN_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gpupin/k8s-$k8s_version}"
bin="$cache/bin"
mkdir -p "$bin"

if ! command -v go >/dev/null; then
  echo "build-cluster-tools: Go is required (go.mod asks for $(awk '/^go /{print $2}' "$tools/kubernetes/go.mod")); install it and retry" >&2
  exit 1
fi

ldflags_k8s="-s -w \
 -X k8s.io/component-base/version.gitVersion=$k8s_version \
 -X k8s.io/component-base/version.gitMajor=1 \
 -X k8s.io/component-base/version.gitMinor=37 \
 -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/client-go/pkg/version.gitVersion=$k8s_version \
 -X k8s.io/client-go/pkg/version.gitMajor=1 \
 -X k8s.io/client-go/pkg/version.gitMinor=37"

# name | module dir | package | usual cold build time on 2 cores | ldflags
targets=(
  "kube-apiserver|kubernetes|k8s.io/kubernetes/cmd/kube-apiserver|~8 min|$ldflags_k8s"
  "kube-controller-manager|kubernetes|k8s.io/kubernetes/cmd/kube-controller-manager|~2.5 min|$ldflags_k8s"
  "kube-scheduler|kubernetes|k8s.io/kubernetes/cmd/kube-scheduler|~15 s|$ldflags_k8s"
  "kubectl|kubernetes|k8s.io/kubernetes/cmd/kubectl|~40 s|$ldflags_k8s"
  "etcd|etcd|.|~1 min|-s -w"
  "kwok|kwok|sigs.k8s.io/kwok/cmd/kwok|~1 min|-s -w"
  "kwokctl|kwok|sigs.k8s.io/kwok/cmd/kwokctl|~30 s|-s -w"
  "helm|helm|helm.sh/helm/v4/cmd/helm|~1 min|-s -w -X helm.sh/helm/v4/internal/version.version=v4.3.1"
)

only=("$@")
wanted() {
  [ ${#only[@]} -eq 0 ] && return 0
  local n; for n in "${only[@]}"; do [ "$n" = "$1" ] && return 0; done
  return 1
}

total=${#targets[@]}; i=0; started=$(date +%s)
for t in "${targets[@]}"; do
  IFS='|' read -r name dir pkg expect flags <<<"$t"
  i=$((i + 1))
  wanted "$name" || continue
  stamp="$bin/.$name.stamp"
  want=$(cat "$tools/$dir/go.sum" "$tools/$dir/go.mod" | sha256sum | cut -c1-16)  # content only: any clone path
  if [ -x "$bin/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    continue
  fi
  echo "build-cluster-tools: [$i/$total] building $name (cold: $expect on 2 cores)..." >&2
  t0=$(date +%s)
  (cd "$tools/$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "$flags" -o "$bin/$name.tmp" "$pkg")
  mv "$bin/$name.tmp" "$bin/$name"
  echo "$want" >"$stamp"
  echo "build-cluster-tools: [$i/$total] $name built in $(( $(date +%s) - t0 )) s" >&2
done
elapsed=$(( $(date +%s) - started ))
[ "$elapsed" -gt 2 ] && echo "build-cluster-tools: done in ${elapsed} s" >&2
echo "$bin"
