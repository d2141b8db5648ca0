"""``visible-devices``: the container runtime exposes exactly the planned GPUs.

``NVIDIA_VISIBLE_DEVICES`` names the GPU UUIDs, with the NVIDIA runtime class and no
``nvidia.com/gpu`` request; the container sees them as 0..n-1. ``CUDA_VISIBLE_DEVICES`` repeats
the choice for CUDA: by UUID where the engine accepts that, else 0..n-1. The scheduler does no GPU
accounting, so gpupin must be the only GPU allocator on those nodes; in exchange Ollama pods can
share a GPU by memory.

Only nodes whose GPUs all have a UUID (from the gpupin agent or the DRA driver) are used: GPUs
known only from GFD labels have none, and GFD gives no indices either — gpupin would have to
assume 0..count-1, which names the wrong card wherever another GPU sits between them in PCI order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gpupin.kernel.state import NodeFacts
from gpupin.pinning.base import PinningMode
from gpupin.placement import Placement


class VisibleDevices(PinningMode):
    name = "visible-devices"
    shares_gpus = True

    def node_usable(self, node: NodeFacts) -> bool:
        return node.pinnable_by_uuid

    def unusable_message(self, nodes: Sequence[str]) -> str:
        return (
            f"pinning mode visible-devices names GPUs by UUID, and the GPUs of {', '.join(nodes)} are known "
            "only from GFD labels, which carry no UUID and no index (assuming 0..count-1 can name the wrong "
            "card); run the gpupin agent on those nodes, or use pinning mode device-plugin (the kubelet picks "
            "among alike GPUs) or dra"
        )

    def env(self, placement: Placement, cuda_visible_uuids: bool) -> list[dict[str, str]]:
        visible = ",".join(placement.gpu_uuids)
        cuda = visible if cuda_visible_uuids else ",".join(str(i) for i in range(len(placement.gpus)))
        return [
            {"name": "NVIDIA_VISIBLE_DEVICES", "value": visible},
            {"name": "CUDA_VISIBLE_DEVICES", "value": cuda},
            *super().env(placement, cuda_visible_uuids),
        ]

    def pod_fields(self, placement: Placement, runtime_class_name: str | None) -> dict[str, Any]:
        return {"runtimeClassName": runtime_class_name} if runtime_class_name else {}
