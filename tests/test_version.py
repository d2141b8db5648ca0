"""One version: ``gpupin.__version__`` is written once; the package metadata reads it
(pyproject's dynamic version), and the chart's version and appVersion — the image tag it deploys
by default — and the rendered manifests must say the same (a release bumps all by hand, this
test says which one was forgotten)."""

from __future__ import annotations

import re
import tomllib

import yaml

import gpupin

from helpers import REPO


def test_every_place_that_names_the_version_names_gpupins() -> None:
    version = gpupin.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+([-.+][0-9A-Za-z.]+)?", version), version
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "gpupin.__version__"}
    chart = yaml.safe_load((REPO / "charts" / "gpupin" / "Chart.yaml").read_text())
    assert (chart["version"], chart["appVersion"]) == (version, version), "charts/gpupin/Chart.yaml"
    manifests = (REPO / "manifests" / "gpupin.yaml").read_text()
    named = set(re.findall(r"app\.kubernetes\.io/version: \"?([^\"\s]+)", manifests))
    assert named == {version}, "manifests/gpupin.yaml (make manifests)"
    images = set(re.findall(r"image: \S*gpupin:(\S+)", manifests))
    assert images == {version}, "the manifests deploy gpupin's own image at its version"


def test_the_release_workflow_releases_that_version() -> None:
    """The release workflow (it cannot run here: no Docker engine, no registry) at least parses,
    runs on version tags, refuses a tag that is not gpupin's version, tests before it pushes, and
    renders the manifests with the script `make manifests` uses."""
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "release.yaml").read_text())
    assert workflow[True]["push"]["tags"] == ["v*.*.*"]  # YAML 1.1 reads the key `on` as True
    steps = workflow["jobs"]["release"]["steps"]
    scripts = [s.get("run", "") for s in steps]
    check = next(i for i, s in enumerate(scripts) if "gpupin.__version__" in s)
    tests = scripts.index("make test")
    push = next(i for i, s in enumerate(steps) if s.get("with", {}).get("push") is True)
    assert check < tests < push, "the version is checked and the tests pass before anything is pushed"
    assert any("hack/render-manifests.sh" in s for s in scripts)
