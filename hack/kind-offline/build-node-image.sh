#!/usr/bin/env bash
# Builds a kind node image for Kubernetes v1.37.2 from local sources only: Debian packages
# (debootstrap), Go modules (test/kind/tools: kind, containerd, runc, crictl, CNI plugins,
# CoreDNS, kubeadm, kubelet, kube-proxy; the control-plane images reuse the KWOK tier's
# binaries) and the pause program compiled from the k8s.io/kubernetes module. For hosts that reach package registries but no container
# registry (see README.md beside this file). Prints the image's name on stdout; progress
# goes to stderr. Needs a running Docker engine (hack/kind-offline/docker.sh), Go, gcc and
# root (debootstrap).
#
# Everything is cached: binaries under $cache/bin with a stamp per Go module, the two
# debootstrap roots as tarballs, the images in Docker under labels that carry the hash of
# their inputs. A warm run takes a few seconds; cold ~10 minutes on 2 cores.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
k8s_version=v1.37.2
kind_version=v0.33.0
suite=bookworm            # Debian 12: python3 is 3.11, like the python:3.11-slim the Dockerfile names
cache="${GPUPIN_KIND_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gpupin/kind-$k8s_version}"
bin="$cache/bin"
node_image="gpupin.local/kind-node:$k8s_version"
base_image="gpupin.local/kind-base:$kind_version"
python_image="gpupin.local/debian-python:$suite"
mkdir -p "$bin/cni"

say() { echo "kind-offline: $*" >&2; }
die() { say "error: $*"; exit 1; }
started=$(date +%s)

command -v docker >/dev/null && docker info >/dev/null 2>&1 || die "no Docker engine answers (run hack/kind-offline/docker.sh first)"
command -v go >/dev/null || die "Go is required to build kind, containerd, runc, crictl, the CNI plugins and CoreDNS"
command -v gcc >/dev/null || die "gcc is required (runc uses cgo; pause is C)"

# One build at a time per cache: a second caller waits, then finds everything warm.
exec 9>"$cache/.lock"
flock 9

# Host packages: debootstrap (the Debian roots) and libseccomp-dev (runc's seccomp, via cgo).
missing=()
command -v debootstrap >/dev/null || missing+=(debootstrap)
[ -f /usr/include/seccomp.h ] || missing+=(libseccomp-dev)
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null || die "needs ${missing[*]}: apt-get install ${missing[*]}"
  say "installing ${missing[*]} (apt)..."
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >"$cache/apt.log" 2>&1; then
    apt-get update -q >>"$cache/apt.log" 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >>"$cache/apt.log" 2>&1 \
      || { tail -n 20 "$cache/apt.log" >&2; die "apt-get install ${missing[*]} failed (log: $cache/apt.log)"; }
  fi
fi

# --- Go binaries ------------------------------------------------------------------------
tools="$root/test/kind/tools"
k8s_tools="$tools/kubernetes"   # kubeadm, kubelet, kube-proxy
ldflags_k8s="-s -w -X k8s.io/component-base/version.gitVersion=$k8s_version \
 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37 \
 -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/client-go/pkg/version.gitVersion=$k8s_version"
# output | module dir | package | cgo | usual cold time on 2 cores | extra flags
targets=(
  "kind|$tools/kind|sigs.k8s.io/kind|0|10 s|"
  "runc|$tools/runc|github.com/opencontainers/runc|1|20 s|-tags seccomp"
  "containerd|$tools/containerd|github.com/containerd/containerd/v2/cmd/containerd|0|70 s|"
  "containerd-shim-runc-v2|$tools/containerd|github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2|0|10 s|"
  "ctr|$tools/containerd|github.com/containerd/containerd/v2/cmd/ctr|0|20 s|"
  "crictl|$tools/crictl|sigs.k8s.io/cri-tools/cmd/crictl|0|40 s|"
  "cni/ptp|$tools/cni-plugins|github.com/containernetworking/plugins/plugins/main/ptp|0|5 s|"
  "cni/loopback|$tools/cni-plugins|github.com/containernetworking/plugins/plugins/main/loopback|0|5 s|"
  "cni/host-local|$tools/cni-plugins|github.com/containernetworking/plugins/plugins/ipam/host-local|0|5 s|"
  "cni/portmap|$tools/cni-plugins|github.com/containernetworking/plugins/plugins/meta/portmap|0|5 s|"
  "coredns|$tools/coredns|github.com/coredns/coredns|0|2 min|"
  "kubeadm|$k8s_tools|k8s.io/kubernetes/cmd/kubeadm|0|1 min|"
  "kubelet|$k8s_tools|k8s.io/kubernetes/cmd/kubelet|0|2 min|"
  "kube-proxy|$k8s_tools|k8s.io/kubernetes/cmd/kube-proxy|0|1 min|"
)
total=$(( ${#targets[@]} + 1 )); i=0
for t in "${targets[@]}"; do
  IFS='|' read -r out dir pkg cgo expect extra <<<"$t"
  i=$((i + 1))
  ldflags="-s -w"; case "$dir" in "$k8s_tools") ldflags=$ldflags_k8s ;; esac
  want=$( { echo "$pkg $cgo $extra $ldflags"; cat "$dir/go.mod" "$dir/go.sum"; } | sha256sum | cut -c1-16)
  stamp="$bin/.$(tr / _ <<<"$out").stamp"
  [ -x "$bin/$out" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && continue
  say "[$i/$total] building $out (cold: ~$expect)..."
  t0=$(date +%s)
  # shellcheck disable=SC2086  # $extra holds flags
  (cd "$dir" && CGO_ENABLED=$cgo go build -trimpath $extra -ldflags "$ldflags" -o "$bin/$out.tmp" "$pkg") \
    || die "go build $pkg failed$( [ "$cgo" = 1 ] && echo " (runc needs libseccomp-dev: apt-get install libseccomp-dev)")"
  mv "$bin/$out.tmp" "$bin/$out"; echo "$want" >"$stamp"
  say "[$i/$total] $out built in $(( $(date +%s) - t0 )) s"
done
# pause: the one C program of a node, from the k8s.io/kubernetes module (static, like upstream's)
i=$((i + 1))
pause_src=$(cd "$k8s_tools" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c
want=$(sha256sum "$pause_src" | cut -c1-16)
if [ ! -x "$bin/pause" ] || [ "$(cat "$bin/.pause.stamp" 2>/dev/null)" != "$want" ]; then
  say "[$i/$total] compiling pause (gcc -static)..."
  gcc -Os -static -DVERSION="\"$k8s_version-gpupin\"" -o "$bin/pause" "$pause_src" || die "gcc -static pause.c failed (needs libc6-dev)"
  echo "$want" >"$bin/.pause.stamp"
fi
kind="$bin/kind"
k8s_bin=$("$root/hack/build-cluster-tools.sh" kube-apiserver kube-controller-manager kube-scheduler kubectl etcd)

# --- helpers ------------------------------------------------------------------------------
# An image's input hash lives in its label gpupin.dev/inputs; equal hash: nothing to do.
image_inputs() { docker image inspect -f '{{index .Config.Labels "gpupin.dev/inputs"}}' "$1" 2>/dev/null || true; }
# import DIR as IMAGE with the given Dockerfile-style changes (a tar of DIR's contents)
import_dir() {
  local dir=$1 image=$2 inputs=$3; shift 3
  local changes=(--change "LABEL gpupin.dev/inputs=$inputs")
  local c; for c in "$@"; do changes+=(--change "$c"); done
  tar -C "$dir" -c . | docker import "${changes[@]}" - "$image" >/dev/null
}
files_hash() { cat "$@" | sha256sum | cut -c1-16; }

# --- Debian roots (debootstrap from the mirror apt uses here) ----------------------------
# The Debian mirror apt uses for $suite (deb822 or one-line sources), else debootstrap's default.
mirror=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk -v suite="$suite" '
  /^URIs:/ {uri = $2} /^$/ {uri = ""}
  /^Suites:/ {for (i = 2; i <= NF; i++) if ($i == suite && uri ~ /debian\/?$/) {print uri; exit}}' || true)
[ -n "$mirror" ] || mirror=$(awk -v suite="$suite" '$1 == "deb" && $3 == suite {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
debootstrap_root() {  # NAME PACKAGES...: $cache/rootfs-NAME.tar, built once per package list
  local name=$1; shift
  local packages; packages=$(IFS=,; echo "$*")
  local tarball="$cache/rootfs-$name.tar" want; want=$(echo "$suite $packages" | sha256sum | cut -c1-16)
  if [ -f "$tarball" ] && [ "$(cat "$tarball.stamp" 2>/dev/null)" = "$want" ]; then return; fi
  [ "$(id -u)" -eq 0 ] || die "debootstrap needs root"
  say "debootstrap $suite '$name' (cold: ~1 min)..."
  local t0; t0=$(date +%s)
  local dir="$cache/rootfs-$name.tmp"; rm -rf "$dir"
  debootstrap --variant=minbase --include="$packages" "$suite" "$dir" ${mirror:+"$mirror"} >"$cache/debootstrap-$name.log" 2>&1 \
    || { tail -n 20 "$cache/debootstrap-$name.log" >&2; die "debootstrap $name failed (log: $cache/debootstrap-$name.log)"; }
  rm -rf "$dir/var/cache/apt/archives/"*.deb "$dir/var/lib/apt/lists/"*
  tar -C "$dir" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball" && rm -rf "$dir"
  echo "$want" >"$tarball.stamp"
  say "debootstrap '$name' done in $(( $(date +%s) - t0 )) s"
}
# the node: the packages kind's base image installs (images/base/Dockerfile), less NFS/iSCSI
node_packages=(systemd conntrack iptables nftables iproute2 ethtool util-linux mount kmod libseccomp2
  pigz fuse-overlayfs e2fsprogs bash ca-certificates curl jq procps)
python_packages=(python3 python3-venv python-is-python3 ca-certificates)
debootstrap_root node "${node_packages[@]}" & node_root=$!
debootstrap_root python "${python_packages[@]}" & python_root=$!
wait "$node_root" || exit 1
wait "$python_root" || exit 1

# Debian with python3 (3.11): the stand-in for python:3.11-slim and the base of the Ollama image.
want=$(cat "$cache/rootfs-python.tar.stamp")
if [ "$(image_inputs "$python_image")" != "$want" ]; then
  say "importing $python_image..."
  docker import --change "LABEL gpupin.dev/inputs=$want" --change 'CMD ["python3"]' "$cache/rootfs-python.tar" "$python_image" >/dev/null
fi

# --- the kind base image: kind's files from its module, our binaries, two host fixes ------
kind_src=$(cd "$tools/kind" && go list -m -f '{{.Dir}}' sigs.k8s.io/kind)/images/base/files
base_inputs=$(files_hash "$cache/rootfs-node.tar.stamp" "$0" "$here/cni.conflist" "$here/retag-archive.py" \
  "$bin"/.*.stamp "$tools/kind/go.sum")
if [ "$(image_inputs "$base_image")" != "$base_inputs" ]; then
  say "assembling $base_image (kind's base image, from local parts)..."
  stage="$cache/base.tmp"; rm -rf "$stage"; mkdir -p "$stage"
  tar -C "$stage" -xf "$cache/rootfs-node.tar"
  cp -r "$kind_src/kind" "$stage/kind"; chmod -R u+w,go-w "$stage/kind"; chmod 0755 "$stage/kind" "$stage/kind/bin" "$stage"/kind/bin/*
  install -m 0755 "$kind_src"/usr/local/bin/* "$stage/usr/local/bin/"
  mkdir -p "$stage/etc/containerd" "$stage/etc/default" "$stage/etc/sysctl.d" "$stage/etc/systemd/system/kubelet.service.d" \
    "$stage/LICENSES" "$stage/opt/cni/bin" "$stage/etc/cni/net.d" "$stage/etc/kubernetes/manifests"
  install -m 0644 "$kind_src/etc/crictl.yaml" "$stage/etc/"
  install -m 0644 "$kind_src"/etc/containerd/* "$stage/etc/containerd/"
  install -m 0644 "$kind_src"/etc/default/* "$stage/etc/default/"
  install -m 0644 "$kind_src"/etc/sysctl.d/* "$stage/etc/sysctl.d/"
  install -m 0644 "$kind_src"/etc/systemd/system/*.service "$kind_src"/etc/systemd/system/*.slice "$stage/etc/systemd/system/"
  install -m 0644 "$kind_src"/etc/systemd/system/kubelet.service.d/* "$stage/etc/systemd/system/kubelet.service.d/"
  install -m 0644 "$kind_src"/LICENSES/* "$stage/LICENSES/"
  install -m 0755 "$bin/containerd" "$bin/containerd-shim-runc-v2" "$bin/ctr" "$bin/crictl" "$stage/usr/local/bin/"
  install -m 0755 "$bin/runc" "$stage/usr/local/sbin/runc"
  install -m 0755 "$bin"/cni/* "$stage/opt/cni/bin/"
  # host fix: pod sandboxes may not raise oom_score_adj here (see README.md)
  sed -i 's/^\(\s*restrict_oom_score_adj\) = false/\1 = true/' "$stage/etc/containerd/config.toml"
  grep -q 'restrict_oom_score_adj = true' "$stage/etc/containerd/config.toml" || die "kind's containerd config has no restrict_oom_score_adj to set"
  # no kindnet (its module is not published): a static CNI config for the single node
  install -m 0644 "$here/cni.conflist" "$stage/etc/cni/net.d/10-gpupin-ptp.conflist"
  # what the base Dockerfile's RUN lines do
  "$bin/ctr" oci spec | python3 -c '
import json, sys
spec = json.load(sys.stdin)
spec.setdefault("hooks", {}).setdefault("createContainer", []).append({"path": "/kind/bin/mount-product-files.sh"})
spec["process"].pop("rlimits", None)
json.dump(spec, sys.stdout, indent=2)' >"$stage/etc/containerd/cri-base.json"
  find "$stage/lib/systemd/system/sysinit.target.wants/" -name systemd-tmpfiles-setup.service -delete
  rm -f "$stage"/lib/systemd/system/multi-user.target.wants/* "$stage"/etc/systemd/system/*.wants/* \
    "$stage"/lib/systemd/system/local-fs.target.wants/* "$stage"/lib/systemd/system/sockets.target.wants/*udev* \
    "$stage"/lib/systemd/system/sockets.target.wants/*initctl* "$stage"/lib/systemd/system/basic.target.wants/*
  echo "ReadKMsg=no" >>"$stage/etc/systemd/journald.conf"
  ln -sf /usr/lib/systemd/systemd "$stage/sbin/init"
  mkdir -p "$stage/etc/systemd/system/multi-user.target.wants"
  for unit in kubelet containerd undo-mount-hacks; do
    ln -sf "/etc/systemd/system/$unit.service" "$stage/etc/systemd/system/multi-user.target.wants/$unit.service"
  done
  ln -sf /dev/null "$stage/etc/systemd/system/systemd-binfmt.service"
  import_dir "$stage" "$base_image.tmp" "$base_inputs"
  rm -rf "$stage"
  # docker import takes no STOPSIGNAL: a one-step build adds it (systemd stops on SIGRTMIN+3)
  printf 'FROM %s\nENV container=docker\nSTOPSIGNAL SIGRTMIN+3\nENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]\n' \
    "$base_image.tmp" | DOCKER_BUILDKIT=0 docker build -q -t "$base_image" - 2>&1 >/dev/null | grep -v -e DEPRECATED \
    -e 'BuildKit is currently disabled' -e 'environment-variable\.$' -e '^$' >&2 || true
  [ "$(image_inputs "$base_image")" = "$base_inputs" ] || die "adding STOPSIGNAL to $base_image failed"
  docker rmi "$base_image.tmp" >/dev/null
fi

# --- the node image -----------------------------------------------------------------------
node_inputs=$(files_hash <(echo "$base_inputs") "$k8s_bin"/.*.stamp "$bin"/.*.stamp)
if [ "$(image_inputs "$node_image")" = "$node_inputs" ]; then
  say "node image $node_image is up to date ($(( $(date +%s) - started )) s)"
  echo "$node_image"
  exit 0
fi
say "building the control-plane images and $node_image..."
t0=$(date +%s)
work="$cache/node.tmp"; rm -rf "$work"; mkdir -p "$work/kubernetes/server/bin"
out="$work/kubernetes/server/bin"
echo "$k8s_version" >"$work/kubernetes/version"
for b in kubeadm kubelet kube-proxy; do install -m 0755 "$bin/$b" "$out/$b"; done
install -m 0755 "$k8s_bin/kubectl" "$out/kubectl"
# The names kubeadm will ask containerd for (etcd, CoreDNS, pause) and the ones kind's build
# asks for (kindnet, local-path): kind pulls every one it does not find in the image tars.
mapfile -t wanted < <("$bin/kubeadm" config images list --kubernetes-version "$k8s_version" 2>/dev/null)
image_of() { local n; for n in "${wanted[@]}"; do case "$n" in */"$1":*) echo "$n"; return;; esac; done; die "kubeadm lists no $1 image"; }
sandbox=$(sed -n 's/^\s*sandbox_image = "\(.*\)"/\1/p' "$kind_src/etc/containerd/config.toml")
kindnetd=$(sed -n 's/^const kindnetdImage = "\(.*\)"/\1/p' "$(dirname "$kind_src")/../../pkg/build/nodeimage/const_cni.go")
storage=$(sed -n 's/^const storage\(Provisioner\|Helper\)Image = "\(.*\)"/\2/p' "$(dirname "$kind_src")/../../pkg/build/nodeimage/const_storage.go")
[ -n "$sandbox" ] && [ -n "$kindnetd" ] && [ -n "$storage" ] || die "cannot read the image names kind $kind_version asks for"
one_binary_image() {  # IMAGE BINARY [ENTRYPOINT]: the binary in /usr/local/bin of an empty image
  local image=$1 binary=$2 entry=${3:-}
  local dir="$work/img"; rm -rf "$dir"; mkdir -p "$dir/usr/local/bin" "$dir/tmp" "$dir/etc"
  install -m 0755 "$binary" "$dir/usr/local/bin/"
  [ -n "$entry" ] && ln -s "/usr/local/bin/$(basename "$binary")" "$dir/$entry"
  local changes=('ENV PATH=/usr/local/bin:/usr/bin:/bin')
  [ -n "$entry" ] && changes+=("ENTRYPOINT [\"/$entry\"]")
  import_dir "$dir" "$image" "$node_inputs" "${changes[@]}"
}
for c in kube-apiserver kube-controller-manager kube-scheduler; do one_binary_image "$(image_of "$c")" "$k8s_bin/$c"; done
one_binary_image "$(image_of etcd)" "$k8s_bin/etcd"
one_binary_image "$(image_of coredns)" "$bin/coredns" coredns
one_binary_image "$sandbox" "$bin/pause" pause
# kube-proxy programs nftables: it runs on the node's own Debian root (nft, iptables, conntrack)
dir="$work/img"; rm -rf "$dir"; mkdir -p "$dir"; tar -C "$dir" -xf "$cache/rootfs-node.tar"
install -m 0755 "$bin/kube-proxy" "$dir/usr/local/bin/kube-proxy"
import_dir "$dir" "$(image_of kube-proxy)" "$node_inputs"
rm -rf "$dir"
# placeholders for the images kind's build insists on and this cluster does not run
# (disableDefaultCNI; no default storage provisioner): the pause image under their names
for n in $kindnetd $storage; do docker tag "$sandbox" "$n"; done
save() {  # TAR IMAGE...: docker save, with a `repositories` entry first listing every full name:
  # kind counts an image as built only from the first metadata entry it meets in each tar
  local tarball=$1; shift
  docker save -o "$work/save.tar" "$@"
  python3 "$here/retag-archive.py" "$work/save.tar" "$tarball" "$@"
  rm -f "$work/save.tar"
}
save "$out/kube-apiserver.tar" "$(image_of kube-apiserver)" "$(image_of etcd)" "$(image_of coredns)" "$sandbox" $kindnetd $storage
save "$out/kube-controller-manager.tar" "$(image_of kube-controller-manager)"
save "$out/kube-scheduler.tar" "$(image_of kube-scheduler)"
save "$out/kube-proxy.tar" "$(image_of kube-proxy)"
tar -C "$work" -czf "$work/kubernetes-server-linux-amd64.tar.gz" kubernetes
"$kind" build node-image --type file "$work/kubernetes-server-linux-amd64.tar.gz" \
  --base-image "$base_image" --image "$node_image.tmp" >"$cache/node-image.log" 2>&1 \
  || { tail -n 30 "$cache/node-image.log" >&2; die "kind build node-image failed (log: $cache/node-image.log)"; }
# kind's storage manifest would run the placeholder provisioner; without it kind applies a
# plain StorageClass of its own (no provisioner), which is what this cluster has
cid=$(docker create --entrypoint /bin/rm "$node_image.tmp" -f /kind/manifests/default-storage.yaml)
docker start -a "$cid" >/dev/null
docker commit --change "LABEL gpupin.dev/inputs=$node_inputs" \
  --change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' --change 'CMD []' "$cid" "$node_image" >/dev/null
docker rm "$cid" >/dev/null; docker rmi "$node_image.tmp" >/dev/null
rm -rf "$work"
say "node image $node_image built in $(( $(date +%s) - t0 )) s (all: $(( $(date +%s) - started )) s)"
echo "$node_image"
