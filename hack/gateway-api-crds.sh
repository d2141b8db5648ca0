#!/usr/bin/env bash
# Prints the directory of the Gateway API's standard-channel CRDs (HTTPRoute, Gateway, …) from the
# sigs.k8s.io/gateway-api Go module at the version below, downloaded through the Go module proxy
# into the module cache (checksum-verified; a warm run takes well under a second). The tests
# install them into the real API server to check the HTTPRoutes gpupin makes; nothing is copied
# into the work tree.
set -euo pipefail

version=v1.6.3   # sigs.k8s.io/gateway-api: the newest that go 1.26 takes (needs no newer toolchain)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
go mod init gpupin.local/gateway-api-crds >/dev/null 2>&1
dir=$(go mod download -json "sigs.k8s.io/gateway-api@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -n "$dir" ] && [ -d "$dir/config/crd/standard" ] || { echo "gateway-api-crds: no CRDs in module sigs.k8s.io/gateway-api@$version" >&2; exit 1; }
echo "$dir/config/crd/standard"
