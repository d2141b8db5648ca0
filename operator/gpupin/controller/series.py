"""The cluster as gpupin sees it, for Prometheus: read from the operator's cache when it scrapes
(through :class:`~gpupin.controller.metrics.LoopSnapshot`, on the loop that owns the cache), so a
series goes the moment what it describes does — and a node with nothing placed shows 0 instead
of no series.

- ``gpupin_gpu_reserved_bytes{node, UUID, gpu, namespace, pod, llmdeployment}``: bytes a gpupin
  pod's placement reserves on one GPU, one series per pod and GPU. ``UUID`` and ``gpu`` (the NVML
  index) are dcgm-exporter's label names, so its series join on ``UUID`` even where it cannot map
  a GPU to a pod itself (visible-devices pinning uses no device-plugin allocation), e.g.
  ``DCGM_FI_DEV_FB_USED * on(UUID) group_right() (0 * gpupin_gpu_reserved_bytes + 1)`` (gpupin's
  side may hold several pods per GPU: Ollama pods share).
- ``gpupin_gpu_memory_bytes{node, UUID, gpu, modelName}``: each GPU's total memory, bytes.
- ``gpupin_node_gpus{node}``: GPUs in each node's inventory (capacity; 0 for a node reporting none).
- ``gpupin_gpus_allocated{node}``: GPUs gpupin's pods hold on each node, 0 where none.
- ``gpupin_llmdeployment_condition{namespace, llmdeployment, condition, status, reason}``: 1 for
  each condition of each LLMDeployment's status as last written (kube-state-metrics' style: alert
  on ``condition="Placed", status="False"``; ``sum by (reason)`` counts deployments by reason).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily

from gpupin.controller.cache import ClusterCache
from gpupin.controller.metrics import LoopSnapshot
from gpupin.controller.podstate import is_finished, placement_of
from gpupin.inventory import Inventory

Sample = tuple[tuple[str, ...], float]
FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "gpupin_gpu_reserved_bytes": (
        "Bytes a gpupin pod's placement reserves on a GPU (UUID and gpu as dcgm-exporter labels them)",
        ("node", "UUID", "gpu", "namespace", "pod", "llmdeployment"),
    ),
    "gpupin_gpu_memory_bytes": ("Total memory of each GPU in the inventory, bytes", ("node", "UUID", "gpu", "modelName")),
    "gpupin_node_gpus": ("GPUs in each node's GPU inventory", ("node",)),
    "gpupin_gpus_allocated": ("GPUs held by gpupin pods, by node (0 where none)", ("node",)),
    "gpupin_llmdeployment_condition": (
        "1 for each condition of each LLMDeployment's status",
        ("namespace", "llmdeployment", "condition", "status", "reason"),
    ),
}  # fmt: skip


def cluster_samples(
    inventory: Inventory,
    pods: Iterable[tuple[dict[str, Any], str]],
    deployments: Iterable[dict[str, Any]],
    held: Mapping[str, int],
) -> dict[str, list[Sample]]:
    """Every family's samples (label values in :data:`FAMILIES`' order). ``pods``: gpupin's pods
    with the name of the LLMDeployment that owns each; ``held``: GPUs they hold by node
    (:meth:`~gpupin.controller.cache.ClusterCache.gpus_per_node`)."""
    memory = {g.uuid: g.memory for node in inventory.nodes for g in node.gpus}
    allocated = {**{node.name: 0 for node in inventory.nodes}, **held}
    reserved: list[Sample] = []
    for pod, owner in pods:
        placement = placement_of(pod)
        if placement is None or not placement.node or is_finished(pod):
            continue
        meta = pod["metadata"]
        for gpu in placement.gpus:
            size = gpu.vram_bytes if gpu.vram_bytes is not None else memory.get(gpu.uuid)
            if size is not None:  # unreadable and unknown: the GPU counts as held, its bytes are not known
                where: tuple[str, ...] = (
                    placement.node,
                    gpu.uuid,
                    str(gpu.index),
                    meta.get("namespace", ""),
                    meta["name"],
                    owner,
                )
                reserved.append((where, float(size)))
    conditions: list[Sample] = []
    for body in deployments:
        meta = body["metadata"]
        for found in (body.get("status") or {}).get("conditions") or []:
            labels = (meta.get("namespace", ""), meta["name"], str(found.get("type", "")),
                      str(found.get("status", "")), str(found.get("reason", "")))  # fmt: skip
            conditions.append((labels, 1.0))
    return {
        "gpupin_gpu_reserved_bytes": reserved,
        "gpupin_gpu_memory_bytes": [
            ((node.name, g.uuid, str(g.index), g.name), float(g.memory))
            for node in inventory.nodes
            for g in node.gpus
        ],
        "gpupin_node_gpus": [((node.name,), float(len(node.gpus))) for node in inventory.nodes],
        "gpupin_gpus_allocated": [((node,), float(count)) for node, count in sorted(allocated.items())],
        "gpupin_llmdeployment_condition": conditions,
    }


def read(cache: ClusterCache) -> dict[str, list[Sample]]:
    """:func:`cluster_samples` of the cache now (on its loop)."""
    owned = ((pod, owner[1]) for pod in cache.pods.values() if (owner := cache.owner_of(pod)) is not None)
    return cluster_samples(cache.inventory(), owned, cache.deployments.values(), cache.gpus_per_node())


class ClusterSeries:
    """The collector: every family of :data:`FAMILIES`, from ``snapshot`` at each scrape."""

    def __init__(self, snapshot: Any) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[GaugeMetricFamily]:
        samples: Mapping[str, list[Sample]] = self.snapshot()
        for name, (text, labels) in FAMILIES.items():
            family = GaugeMetricFamily(name, text, labels=list(labels))
            for values, value in samples.get(name, ()):
                family.add_metric(list(values), value)
            yield family


_registered: list[bool] = []


def watch(cache: ClusterCache, loop: asyncio.AbstractEventLoop) -> None:
    """Register the collector (once per process); it reads ``cache`` on ``loop``."""
    if not _registered:
        REGISTRY.register(ClusterSeries(LoopSnapshot(loop, lambda: read(cache))))
        _registered.append(True)
