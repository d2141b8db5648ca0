#!/usr/bin/env bash
# Builds the real Ollama server for CPU from the Go module pinned under
# test/engines/ollama into a cache outside the work tree, and prints the
# directory that holds the `ollama` binary (nothing else goes to stdout).
#
# The module zip lacks the single-header libraries llama.cpp vendors, so they
# come from package registries: nlohmann/json and stb_image.h from Debian's
# nlohmann-json3-dev and libstb-dev, miniaudio.h from the miniaudio sdist on
# PyPI. The binary is rebuilt only when the pins (go.mod, go.sum, the versions
# below) change (a stamp beside it), so a warm run takes a second. A cold run
# takes ~4 minutes on 2 cores (with the Go module downloads).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
mod="$root/test/engines/ollama"
ollama_version=0.17.4        # github.com/ollama/ollama v$ollama_version, required by $mod/go.mod
miniaudio_pypi=1.71          # PyPI sdist that ships miniaudio.h (miniaudio 0.11.25)
debs=(nlohmann-json3-dev libstb-dev)
cache="${GPUPIN_ENGINES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gpupin/engines}"
bin="$cache/ollama-v$ollama_version/bin"
inc="$cache/ollama-v$ollama_version/include"
mkdir -p "$bin"

say() { echo "build-engines: $*" >&2; }
die() { say "$*"; exit 1; }

grep -q "github.com/ollama/ollama v$ollama_version\b" "$mod/go.mod" \
  || die "$mod/go.mod does not require github.com/ollama/ollama v$ollama_version (change both pins together)"
ldflags="-s -w -X github.com/ollama/ollama/version.Version=$ollama_version"
recipe="ollama=$ollama_version miniaudio=$miniaudio_pypi debs=${debs[*]} ldflags=$ldflags cgo=cpu-O2"
want=$( { echo "$recipe"; cat "$mod/go.mod" "$mod/go.sum"; } | sha256sum | cut -c1-16)
stamp="$bin/.ollama.stamp"
if [ -x "$bin/ollama" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "$bin"
  exit 0
fi

# One build at a time per cache (a second caller waits, then finds it warm).
if command -v flock >/dev/null; then
  exec 9>"$cache/.lock"
  flock 9
  if [ -x "$bin/ollama" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    echo "$bin"
    exit 0
  fi
fi

need_go=$(awk '/^go /{print $2}' "$mod/go.mod")
command -v go >/dev/null || die "Go is required (go.mod asks for $need_go); install it and retry"
command -v gcc >/dev/null || die "gcc is required for cgo (apt-get install build-essential)"
command -v g++ >/dev/null || die "g++ is required for cgo (apt-get install build-essential)"
command -v apt-get >/dev/null || die "apt-get is required to fetch the Debian header packages ${debs[*]}"
command -v dpkg-deb >/dev/null || die "dpkg-deb is required to unpack the Debian header packages ${debs[*]}"
python=python3
if ! "$python" -m pip --version >/dev/null 2>&1; then
  python="$root/.venv/bin/python"
  "$python" -m pip --version >/dev/null 2>&1 || die "python3 with pip (or make venv) is required to fetch the miniaudio $miniaudio_pypi sdist"
fi

started=$(date +%s)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# --- vendored headers -------------------------------------------------------
say "[1/2] fetching headers (nlohmann/json, stb_image.h, miniaudio.h; cold: ~10 s)..."
rm -rf "$inc.tmp"
mkdir -p "$inc.tmp/stb" "$inc.tmp/miniaudio" "$tmp/debs" "$tmp/x"
fetch_debs() { (cd "$tmp/debs" && apt-get download -q "${debs[@]}") >"$tmp/apt.log" 2>&1; }
if ! fetch_debs; then
  if [ "$(id -u)" -eq 0 ]; then
    say "apt-get download failed; running apt-get update once and retrying"
    apt-get update -q >"$tmp/apt-update.log" 2>&1 || { cat "$tmp/apt-update.log" >&2; die "apt-get update failed"; }
    fetch_debs || { cat "$tmp/apt.log" >&2; die "apt-get download ${debs[*]} failed"; }
  else
    cat "$tmp/apt.log" >&2
    die "apt-get download ${debs[*]} failed; run 'apt-get update' as root and retry"
  fi
fi
for d in "$tmp"/debs/*.deb; do dpkg-deb -x "$d" "$tmp/x"; done
[ -f "$tmp/x/usr/include/nlohmann/json.hpp" ] || die "nlohmann-json3-dev has no usr/include/nlohmann/json.hpp"
[ -f "$tmp/x/usr/include/stb/stb_image.h" ] || die "libstb-dev has no usr/include/stb/stb_image.h"
cp -r "$tmp/x/usr/include/nlohmann" "$inc.tmp/nlohmann"
cp "$tmp/x/usr/include/stb/stb_image.h" "$inc.tmp/stb/stb_image.h"
"$python" -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
  "miniaudio==$miniaudio_pypi" -d "$tmp/pypi" >"$tmp/pip.log" 2>&1 \
  || { cat "$tmp/pip.log" >&2; die "pip download miniaudio==$miniaudio_pypi failed"; }
tar -xzf "$tmp/pypi/miniaudio-$miniaudio_pypi.tar.gz" -C "$tmp" "miniaudio-$miniaudio_pypi/miniaudio/miniaudio.h" \
  || die "miniaudio-$miniaudio_pypi.tar.gz has no miniaudio/miniaudio.h"
cp "$tmp/miniaudio-$miniaudio_pypi/miniaudio/miniaudio.h" "$inc.tmp/miniaudio/miniaudio.h"
rm -rf "$inc" && mv "$inc.tmp" "$inc"
say "[1/2] headers: $(cd "$tmp/debs" && ls | sed 's/_amd64.deb\|_all.deb//' | tr '\n' ' ')miniaudio-$miniaudio_pypi (PyPI)"

# --- ollama -----------------------------------------------------------------
say "[2/2] building ollama v$ollama_version for CPU (cold: ~4 min on 2 cores)..."
t0=$(date +%s)
(
  cd "$mod"
  export CGO_ENABLED=1
  export CGO_CPPFLAGS="-I$inc"
  export CGO_CFLAGS="-O2" CGO_CXXFLAGS="-O2"   # no -g: debug info only slows the C++ compile
  go build -trimpath -buildvcs=false -ldflags "$ldflags" -o "$bin/ollama.tmp" github.com/ollama/ollama
)
mv "$bin/ollama.tmp" "$bin/ollama"
got=$("$bin/ollama" --version 2>&1 | tail -1)
case "$got" in *"$ollama_version"*) ;; *) die "built ollama reports '$got', expected $ollama_version" ;; esac
echo "$want" >"$stamp"
say "[2/2] ollama built in $(( $(date +%s) - t0 )) s ($got)"
say "done in $(( $(date +%s) - started )) s"
echo "$bin"
