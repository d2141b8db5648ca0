"""``device-plugin``: ``nvidia.com/gpu: N`` and the node; the kubelet picks which N.

The NVIDIA device plugin cannot be told which card, so gpupin uses only nodes whose GPUs are all
alike (any N of them is the plan), and no GPU is shared by two pods.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gpupin import constants
from gpupin.kernel.state import NodeFacts
from gpupin.pinning.base import PinningMode
from gpupin.placement import Placement


class DevicePlugin(PinningMode):
    name = "device-plugin"
    shares_gpus = False

    def node_usable(self, node: NodeFacts) -> bool:
        return not node.mixed

    def unusable_message(self, nodes: Sequence[str]) -> str:
        return (
            f"pinning mode device-plugin cannot choose a card on nodes with mismatched GPUs "
            f"({', '.join(nodes)}): nvidia.com/gpu lets the kubelet pick any of them. Use pinning mode "
            "visible-devices or dra on such nodes"
        )

    def add_resources(self, resources: dict[str, Any], placement: Placement) -> None:
        resources.setdefault("limits", {})[constants.GPU_RESOURCE] = str(len(placement.gpus))
