"""The router's routes file: read strictly, followed when it changes, never emptied by bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpupin.router.proxy import Router
from gpupin.router.source import RoutesError, RoutesFollower, read_routes
from gpupin.router.table import RouteTable

GOOD = """engine: ollama
backends:
  - address: 10.0.3.7:11434
    models: [qwen2.5:14b, nomic-embed-text]
    pod: assistant-1a2b3c
  - address: "[fd00::5]:11434"
    models: [llama3.1:8b]
    ready: false
"""


def test_a_routes_file_becomes_a_table(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(GOOD)
    table = read_routes(path)
    assert table.engine == "ollama"
    assert [b.address for b in table.backends] == ["10.0.3.7:11434", "[fd00::5]:11434"]
    assert [b.address for b in table.ready()] == ["10.0.3.7:11434"]
    assert table.models == ["llama3.1:8b", "nomic-embed-text", "qwen2.5:14b"]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("engine: tgi\n", "engine:"),
        ("engine: ollama\nbackends: [{address: nohost, models: [a]}]\n", "backends[0].address"),
        ("engine: ollama\nbackends: [{address: 'h:1', models: []}]\n", "backends[0].models"),
        (
            "engine: ollama\nbackends: [{address: 'h:1', models: [a], weight: 2}]\n",
            "unknown field; allowed here",
        ),
        ("[1, 2]\n", "expected a mapping"),
        ("engine: [\n", "routes.yaml"),
    ],
)
def test_a_bad_routes_file_is_refused_naming_the_field(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    with pytest.raises(RoutesError) as refused:
        read_routes(path)
    assert str(refused.value).startswith(f"{path}: ") and says in str(refused.value)


def test_the_follower_swaps_the_table_and_keeps_it_through_bad_changes(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(GOOD)
    router = Router(RouteTable("ollama"))
    follower = RoutesFollower(path, router)
    assert follower.poll() and router.table.models == ["llama3.1:8b", "nomic-embed-text", "qwen2.5:14b"]
    assert not follower.poll()  # unchanged: not read again
    path.write_text("engine: ollama\nbackends: [{address: nohost}]\n")
    assert not follower.poll()
    assert router.table.models == ["llama3.1:8b", "nomic-embed-text", "qwen2.5:14b"]  # the last good one
    path.unlink()
    assert not follower.poll() and router.table.models  # a file gone is not "no routes"
    path.write_text("engine: ollama\nbackends: [{address: '10.0.0.9:11434', models: [phi4:14b]}]\n")
    assert follower.poll() and router.table.models == ["phi4:14b"]


def test_a_configmap_volume_swap_is_seen(tmp_path: Path) -> None:
    """A ConfigMap volume replaces its files by repointing a ``..data`` symlink."""
    first, second = tmp_path / "..2026_1", tmp_path / "..2026_2"
    for folder, model in ((first, "a:1b"), (second, "b:1b")):
        folder.mkdir()
        (folder / "routes.yaml").write_text(
            f"engine: ollama\nbackends: [{{address: 'h:1', models: [{model}]}}]\n"
        )
    (tmp_path / "..data").symlink_to(first.name)
    (tmp_path / "routes.yaml").symlink_to("..data/routes.yaml")
    router = Router(RouteTable("ollama"))
    follower = RoutesFollower(tmp_path / "routes.yaml", router)
    follower.poll()
    assert router.table.models == ["a:1b"]
    (tmp_path / "..data_tmp").symlink_to(second.name)
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    assert follower.poll() and router.table.models == ["b:1b"]


def test_gpupin_router_refuses_a_bad_routes_file_in_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "gpupin", "router", "--routes", str(missing)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().startswith(f"gpupin: {missing}: cannot read it")
    assert "Traceback" not in done.stderr
