"""What a live cluster holds now, as the operator would see it on start-up: for ``gpupin plan
--cluster``, so that a dry run plans against the real GPUs and the pods already on them.

The same cache the operator fills from its first lists (every LLMDeployment, gpupin's pods,
every Node and ResourceSlice), and the same rules read from it: the planning inventory (nodes
whose GPU facts cannot be used keep their last good one, or none) and the GPU memory each
deployment's pods hold. Read-only: a LIST of each, nothing written.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpupin import constants
from gpupin.controller.cache import ClusterCache
from gpupin.controller.listing import list_nodes
from gpupin.inventory import Inventory
from gpupin.kernel.state import Frozen
from gpupin.kube import Kube
from gpupin.placement import Hold

MANAGED = constants.MANAGED_SELECTOR


@dataclass(frozen=True)
class ClusterSnapshot:
    inventory: Inventory
    holds: list[Hold]
    """GPU memory held by the pods of every LLMDeployment (owner ``namespace/name``)."""
    frozen: Frozen
    """Nodes and GPUs that keep their pods but take no new ones (as the operator plans)."""
    problems: dict[str, str]
    """Node → why its GPU facts are not used as they are."""
    deployments: int
    pods: int
    """Pods of a live LLMDeployment (what holds GPUs)."""


def read_cluster(kube: Kube) -> ClusterSnapshot:
    """LIST LLMDeployments, gpupin's pods, Nodes and ResourceSlices through ``kube``. Raises
    :class:`gpupin.kube.ApiError` when one cannot be listed (no rights, no CRD)."""
    cache = ClusterCache()
    path = f"/apis/{constants.API_VERSION}/{constants.PLURAL}"
    deployments = kube.request("GET", path).get("items") or []
    for body in deployments:
        cache.deployments.upsert({**body, "kind": constants.KIND, "apiVersion": constants.API_VERSION})
    pods = kube.request("GET", "/api/v1/pods", params={"labelSelector": MANAGED}).get("items") or []
    for pod in pods:
        cache.pods.upsert({**pod, "kind": "Pod", "apiVersion": "v1"})
    cache.load_nodes(*list_nodes(kube))
    owned = sum(1 for pod in cache.pods.values() if cache.owner_of(pod) is not None)
    return ClusterSnapshot(
        cache.inventory(), cache.holds(), cache.frozen(), cache.node_problems, len(deployments), owned
    )
