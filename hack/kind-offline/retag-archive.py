#!/usr/bin/env python3
"""Rewrite a `docker save` archive so that `kind build node-image` sees every image in it.

Usage: retag-archive.py IN.tar OUT.tar NAME...

kind reads the image names of each archive from the first metadata entry it meets
(`repositories` or `manifest.json`) and, from `manifest.json`, only the first image; every
other image it then tries to pull. Docker writes `manifest.json` first and shortens names
(`docker.io/kindest/x` becomes `kindest/x`). This writes `repositories` first, listing each
NAME in full, and gives `manifest.json` the full names too, so that containerd imports them
under the names kind and kubeadm ask for.
"""

import io
import json
import sys
import tarfile


def familiar(name: str) -> str:
    """Docker's short form of a full image name (what `docker save` writes)."""
    first, _, rest = name.partition("/")
    if rest and first == "docker.io":
        name = rest
        if name.startswith("library/") and name.count("/") == 1:
            name = name[len("library/") :]
    return name


def main(src: str, dst: str, names: list[str]) -> None:
    full = {familiar(n): n for n in names}
    with tarfile.open(src) as tin:
        members = {m.name: m for m in tin.getmembers()}
        manifest = json.load(tin.extractfile(members["manifest.json"]))  # type: ignore[arg-type]
        repositories: dict[str, dict[str, str]] = {}
        for entry in manifest:
            tags = [full.get(t, t) for t in entry.get("RepoTags") or []]
            entry["RepoTags"] = tags
            layer = entry["Layers"][-1].split("/")[0]
            for tag in tags:
                repo, _, version = tag.rpartition(":")
                repositories.setdefault(repo, {})[version] = layer
        missing = [n for n in names if n not in {t for e in manifest for t in e["RepoTags"]}]
        if missing:
            sys.exit(f"retag-archive: {src} lacks {', '.join(missing)}")
        with tarfile.open(dst, "w") as tout:
            for name, data in (("repositories", repositories), ("manifest.json", manifest)):
                blob = json.dumps(data).encode()
                info = tarfile.TarInfo(name)
                info.size = len(blob)
                tout.addfile(info, io.BytesIO(blob))
            for member in tin.getmembers():
                if member.name in ("repositories", "manifest.json"):
                    continue
                tout.addfile(member, tin.extractfile(member) if member.isfile() else None)


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
