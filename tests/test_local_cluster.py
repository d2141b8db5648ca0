"""`make demo` as a user runs it (hack/cluster.py: a KWOK cluster, the chart's RBAC, the agents
and the operator as local processes, the seed's deployments): a second local cluster beside the
tests' own, with its own state directory, name and ports. It comes up, places what the README
says, and its operator answers /healthz and /metrics; `down` stops everything it started."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest

from helpers import REPO, free_port
from kwok import missing_tools, tools_bin

pytestmark = pytest.mark.timeout(400)


def _two_free_ports() -> int:
    for _ in range(20):
        port = free_port()
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise AssertionError("no two free ports in a row")


def test_make_demo_brings_up_a_working_local_cluster(tmp_path: Path) -> None:
    if missing_tools():
        pytest.skip(f"control-plane binaries not built ({', '.join(missing_tools())})")
    port = _two_free_ports()
    env = {
        **os.environ,
        "GPUPIN_TOOLS_BIN": str(tools_bin()),
        "GPUPIN_CLUSTER_STATE": str(tmp_path / "state"),
        "GPUPIN_CLUSTER_NAME": f"demo-{uuid.uuid4().hex[:6]}",
        "GPUPIN_CLUSTER_PORT": str(port),
    }
    script = [sys.executable, str(REPO / "hack" / "cluster.py")]
    try:
        demo = subprocess.run([*script, "demo"], env=env, capture_output=True, text=True, timeout=300)
        assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
        assert "One endpoint per deployment" in demo.stdout
        table = [line for line in demo.stdout.splitlines() if line.startswith("assistant ")]
        assert table and "2/2" in table[0] and "Placed" in table[0], demo.stdout
        assert "chat-tp2 (tensor parallel over the workstation's two cards) refused" in demo.stdout
        with urllib.request.urlopen(f"http://127.0.0.1:{port + 1}/healthz", timeout=5) as answer:
            assert json.loads(answer.read())["phase"] == "running"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            metrics = answer.read().decode()
        assert 'llmdeployment="assistant"' in metrics and "gpupin_gpu_reserved_bytes{" in metrics
    finally:
        down = subprocess.run([*script, "down"], env=env, capture_output=True, text=True, timeout=120)
    assert down.returncode == 0 and "stopped and deleted" in down.stdout, down.stdout + down.stderr
