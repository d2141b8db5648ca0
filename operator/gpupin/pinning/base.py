"""What a pinning mode is to gpupin: how a pod is bound to the GPUs the planner chose.

A mode says whether one GPU can be shared by several pods, on which nodes it can pin at all (with
the reason when it cannot), and what it adds to a pod — environment, resources, pod fields — and
which objects beside the pod it needs. The planner and the renderer call it through this
interface; :mod:`gpupin.pinning` is the registry.

Pure: no kopf, no kubernetes. Modes do not import one another or the engines.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from gpupin.kernel.state import NodeFacts
from gpupin.placement import Placement


class PinningMode:
    name: ClassVar[str]
    """The operator's ``--pinning`` value."""
    shares_gpus: ClassVar[bool]
    """One GPU can be handed to several pods (shared Ollama servers); else every pod owns its GPUs."""

    def node_usable(self, node: NodeFacts) -> bool:
        """Can this mode pin chosen GPUs on the node?"""
        return True

    def unusable_message(self, nodes: Sequence[str]) -> str:
        """Why none of ``nodes`` can be used, and what to do (only asked when some cannot)."""
        return f"pinning mode {self.name} cannot pin GPUs on {', '.join(nodes)}"

    def env(self, placement: Placement, cuda_visible_uuids: bool) -> list[dict[str, str]]:
        """Container env that binds the server to the placement's GPUs (first in the env list).
        ``cuda_visible_uuids``: the engine accepts UUIDs in CUDA_VISIBLE_DEVICES."""
        return [{"name": "CUDA_DEVICE_ORDER", "value": "PCI_BUS_ID"}]

    def add_resources(self, resources: dict[str, Any], placement: Placement) -> None:
        """Add to the server container's resources (requests/limits from the spec are there)."""

    def pod_fields(self, placement: Placement, runtime_class_name: str | None) -> dict[str, Any]:
        """Fields of the pod spec this mode sets."""
        return {}

    def objects(self, namespace: str, placement: Placement, labels: dict[str, str]) -> list[dict[str, Any]]:
        """Objects the pod needs, created before it (same name as the pod)."""
        return []
