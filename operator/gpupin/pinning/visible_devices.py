"""``visible-devices``: the container runtime exposes exactly the planned GPUs.

``NVIDIA_VISIBLE_DEVICES`` names the GPU UUIDs, with the NVIDIA runtime class and no
``nvidia.com/gpu`` request; the container sees them as 0..n-1. ``CUDA_VISIBLE_DEVICES`` repeats
the choice for CUDA: by UUID where the engine accepts that, else 0..n-1. The scheduler does no GPU
accounting, so gpupin must be the only GPU allocator on those nodes; in exchange Ollama pods can
share a GPU by memory.
"""

from __future__ import annotations

from typing import Any

from gpupin.pinning.base import PinningMode
from gpupin.placement import Placement


class VisibleDevices(PinningMode):
    name = "visible-devices"
    shares_gpus = True

    def env(self, placement: Placement, cuda_visible_uuids: bool) -> list[dict[str, str]]:
        renumbered = ",".join(str(i) for i in range(len(placement.gpus)))
        if all(g.uuid.startswith(("GPU-", "MIG-")) for g in placement.gpus):
            visible = ",".join(placement.gpu_uuids)
            cuda = visible if cuda_visible_uuids else renumbered
        else:  # GPUs known from GFD labels have no UUID: host indices, renumbered from 0 inside
            visible = ",".join(str(g.index) for g in placement.gpus)
            cuda = renumbered
        return [
            {"name": "NVIDIA_VISIBLE_DEVICES", "value": visible},
            {"name": "CUDA_VISIBLE_DEVICES", "value": cuda},
            *super().env(placement, cuda_visible_uuids),
        ]

    def pod_fields(self, placement: Placement, runtime_class_name: str | None) -> dict[str, Any]:
        return {"runtimeClassName": runtime_class_name} if runtime_class_name else {}
