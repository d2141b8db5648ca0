"""Builders shared by the tests: GPUs, nodes, inventories and deployments in one line each."""

from __future__ import annotations

import itertools
import math
import re
import socket
from pathlib import Path
from typing import Any

from gpupin import constants
from gpupin.api.v1alpha1 import LLMDeployment
from gpupin.inventory import GPU, Inventory, NodeInventory
from gpupin.placement import Plan

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
FIXTURES = REPO / "tests" / "fixtures"

_uuids = itertools.count()

# name, memory, compute capability — as NVML reports them
RTX_4070 = ("NVIDIA GeForce RTX 4070", "12282Mi", "8.9")
RTX_2060 = ("NVIDIA GeForce RTX 2060", "6144Mi", "7.5")
RTX_4090 = ("NVIDIA GeForce RTX 4090", "24564Mi", "8.9")
RTX_3060 = ("NVIDIA GeForce RTX 3060", "12288Mi", "8.6")
A100_80 = ("NVIDIA A100-SXM4-80GB", "81920Mi", "8.0")
A10 = ("NVIDIA A10", "23028Mi", "8.6")
L4 = ("NVIDIA L4", "23034Mi", "8.9")
T4 = ("Tesla T4", "15360Mi", "7.5")
GTX_1080TI = ("NVIDIA GeForce GTX 1080 Ti", "11264Mi", "6.1")


def gpu(index: int, product: tuple[str, str, str], uuid: str | None = None, **extra: Any) -> GPU:
    name, memory, cc = product
    return GPU.model_validate(
        {
            "index": index,
            "uuid": uuid or f"GPU-{next(_uuids):08x}-0000-4000-8000-000000000000",
            "name": name,
            "memory": memory,
            "computeCapability": cc,
            **extra,
        }
    )


def node(name: str, *products: tuple[str, str, str]) -> NodeInventory:
    return NodeInventory(name=name, gpus=[gpu(i, p, uuid=f"GPU-{name}-{i}") for i, p in enumerate(products)])


def inventory(*nodes: NodeInventory) -> Inventory:
    return Inventory(nodes=list(nodes))


def workstation() -> Inventory:
    """The seed's node: RTX 4070 (GPU 0) + RTX 2060 (GPU 1)."""
    return inventory(node("workstation", RTX_4070, RTX_2060))


def deployment(name: str = "d", namespace: str = "default", **spec: Any) -> LLMDeployment:
    return LLMDeployment.model_validate(
        {
            "apiVersion": "gpupin.dev/v1alpha1",
            "kind": "LLMDeployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    )


def models(*names: str) -> list[dict[str, str]]:
    return [{"name": n} for n in names]


def layout(plan: Plan) -> list[tuple[str, tuple[int, ...], tuple[str, ...]]]:
    """A plan's placements as (node, GPU indices, models), sorted: what tables assert on."""
    return sorted((p.node, tuple(g.index for g in p.gpus), tuple(sorted(p.models))) for p in plan.placements)


# GPU Feature Discovery's labels for a node of two A10s (what GFD writes where every card is one model)
GFD_A10 = {
    constants.GFD_PRODUCT_LABEL: "NVIDIA-A10",
    constants.GFD_MEMORY_LABEL: "23028",
    constants.GFD_COUNT_LABEL: "2",
    constants.GFD_CC_MAJOR_LABEL: "8",
    constants.GFD_CC_MINOR_LABEL: "6",
}


_DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def is_dns_1035_label(name: str) -> bool:
    """A valid Service name (and pod hostname): Kubernetes' DNS-1035 label, at most 63 characters."""
    return len(name) <= 63 and _DNS_1035_LABEL.fullmatch(name) is not None


def strictly_equal(a: Any, b: Any) -> bool:
    """Equal, with the same types and key order all the way down (``1`` is not ``True`` nor
    ``1.0``; NaN equals NaN): how data read or written two ways is compared."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(strictly_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(strictly_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


def free_port() -> int:
    """A TCP port on the loopback that nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
