"""``--kubeconfig``/``--context`` and gpupin's User-Agent, against the real API server.

Aspects: ``gpupin operator`` and ``gpupin agent`` given a kubeconfig of two contexts (its current one
pointing nowhere) and ``--context`` naming the other talk to the cluster through that one alone
(KUBECONFIG, also pointing nowhere, is not read): the operator's Lease, its own requests and kopf's
watches all go there; and every request names gpupin and the component in its User-Agent, kopf's
too, as the fault proxy in front of the server sees them (the proxy only counts here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from gpupin import __version__, constants
from gpupin.inventory import NodeInventory

from faultproxy import FaultProxy
from helpers import RTX_2060, RTX_4070, node
from kwok import Cluster, Env, wait_for

pytestmark = pytest.mark.timeout(180)
NOWHERE = "http://127.0.0.1:1"


def _two_contexts(proxy: FaultProxy, directory: Path) -> tuple[Path, Path]:
    """(a kubeconfig whose current context ``nowhere`` points nowhere and whose ``proxy`` context
    is the proxy's; a kubeconfig with ``nowhere`` alone, for KUBECONFIG)."""
    config = yaml.safe_load(proxy.kubeconfig(directory / "proxy.kubeconfig").read_text())
    config["clusters"].append({"name": "nowhere", "cluster": {"server": NOWHERE}})
    config["contexts"].append({"name": "nowhere", "context": {"cluster": "nowhere", "user": "proxy"}})
    config["current-context"] = "nowhere"
    both = directory / "two-contexts.kubeconfig"
    both.write_text(yaml.safe_dump(config))
    only = directory / "nowhere.kubeconfig"
    only.write_text(
        yaml.safe_dump(
            {
                **config,
                "clusters": config["clusters"][-1:],
                "contexts": config["contexts"][-1:],
            }
        )
    )
    return both, only


def test_the_operator_uses_the_chosen_context_and_names_itself(env: Env) -> None:
    env.node("workstation", RTX_4070, RTX_2060)
    proxy = env.proxy()
    both, nowhere = _two_contexts(proxy, env.tmp)
    operator = env.operator("--kubeconfig", str(both), "--context", "proxy", kubeconfig=nowhere)
    env.apply("assistant", engine="ollama", models=[{"name": "qwen2.5:14b"}])
    wait_for(env.placed("assistant"), what="Placed=True through the chosen context")
    ours = f"gpupin/{__version__} (operator)"
    kopfs = f"{ours} kopf/{metadata.version('kopf')}"
    # kopf logs in after gpupin's start-up (which may have listed the first deployment already):
    # a deployment applied once kopf watches is seen through kopf's watch, on the chosen context
    wait_for(lambda: kopfs in proxy.user_agents, what="kopf's requests through the chosen context")
    env.apply("second", engine="ollama", models=[{"name": "llama3.1:8b"}])
    wait_for(env.placed("second"), what="the second deployment, seen by kopf's watch")
    wait_for(lambda: len(env.pods()) == 2, what="their pods")
    assert operator.alive(), operator.tail()
    assert proxy.count("PUT", r"/leases/gpupin-operator$") + proxy.count("POST", r"/leases$") >= 1
    assert proxy.count("POST", rf"/namespaces/{env.namespace}/pods$") == 2
    assert proxy.count("PATCH", r"/llmdeployments/second/status$") >= 1
    assert set(proxy.user_agents) == {ours, kopfs}


def test_the_agent_uses_the_chosen_context_and_names_itself(
    cluster: Cluster, bare_node: str, tmp_path: Path
) -> None:
    published = node(bare_node, RTX_4070)
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(yaml.safe_dump({"nodes": [published.model_dump(by_alias=True, exclude_none=True)]}))
    proxy = FaultProxy(cluster.kubeconfig).start()
    try:
        both, nowhere = _two_contexts(proxy, tmp_path)
        done = subprocess.run(
            [
                *(sys.executable, "-m", "gpupin", "agent", "--once", "--health-port", "0"),
                *("--fake-inventory", str(inventory), "--node-name", bare_node),
                *("--kubeconfig", str(both), "--context", "proxy"),
            ],
            env={**os.environ, "KUBECONFIG": str(nowhere)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        annotations = cluster.get(f"/api/v1/nodes/{bare_node}")["metadata"]["annotations"]
        seen = json.loads(annotations[constants.INVENTORY_ANNOTATION])
        assert NodeInventory.model_validate({**seen, "name": bare_node}) == published
        assert proxy.count("PATCH", rf"/nodes/{bare_node}$") >= 1
        assert set(proxy.user_agents) == {f"gpupin/{__version__} (agent)"}
    finally:
        proxy.stop()
