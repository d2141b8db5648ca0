"""`gpupin plan --cluster` against the real API server: it plans on the GPUs the cluster's nodes
report and counts the GPU memory its pods already hold, so a dry run says what the operator would
do now; a deployment in the files that already runs is planned as if replaced (its own pods hold
nothing against it). Nothing is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from gpupin import constants

from helpers import RTX_2060, RTX_4070
from kwok import Env, wait_for


def _plan(env: Env, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpupin", "plan", *args, "-o", "json", "--model-metadata", "offline"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "KUBECONFIG": "/nonexistent"},  # only --kubeconfig may point at the cluster
    )  # fmt: skip


def _file(path: Path, name: str, namespace: str, model: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": constants.API_VERSION, "kind": constants.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"engine": "ollama", "models": [{"name": model}]},
    }))  # fmt: skip
    return path


def test_a_dry_run_plans_against_what_the_cluster_holds_now(env: Env) -> None:
    workstation = env.node("workstation", RTX_4070, RTX_2060)
    env.operator()
    env.apply("assistant", engine="ollama", models=[{"name": "qwen2.5:14b"}])  # ~9.8 GiB: the 4070 only
    wait_for(lambda: len(env.pods()) == 1, what="its pod on the 4070")
    rivals = _file(env.tmp / "rival.yaml", "rival", env.namespace, "qwen2.5:14b")
    cluster = ("--cluster", "--kubeconfig", str(env.cluster.kubeconfig))

    on_file = env.tmp / "inventory.yaml"
    on_file.write_text(yaml.safe_dump({"nodes": [workstation.model_dump(by_alias=True)]}))
    empty = _plan(env, "-f", str(rivals), "--inventory", str(on_file))
    assert empty.returncode == 0, "on an empty inventory the rival fits: " + empty.stderr

    held = _plan(env, "-f", str(rivals), *cluster)
    assert held.returncode == 1, held.stderr  # refused: the 4070 is taken by assistant's pod
    (plan,) = json.loads(held.stdout)["deployments"]
    assert plan["outcome"] != "Placed" and plan["placements"] == [], plan
    assert "1 pod(s) of 1 LLMDeployment(s) in place, 1 GPU(s) held" in held.stderr, held.stderr

    itself = _file(env.tmp / "assistant.yaml", "assistant", env.namespace, "qwen2.5:14b")
    again = _plan(env, "-f", str(itself), *cluster)
    assert again.returncode == 0, again.stderr + again.stdout  # its own pod does not hold against it
    assert len(env.pods()) == 1, "a dry run writes nothing"

    both = _plan(env, "-f", str(rivals), "--inventory", str(on_file), *cluster)
    assert both.returncode == 2 and "--inventory FILE or --cluster" in both.stderr
    lost = _plan(env, "-f", str(rivals), "--cluster", "--kubeconfig", str(env.tmp / "none"))
    assert lost.returncode == 2 and "--kubeconfig" in lost.stderr and "Traceback" not in lost.stderr
