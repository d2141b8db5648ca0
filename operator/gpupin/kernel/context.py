"""What a placement strategy is given for one deployment (besides the engine's request)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gpupin.kernel.eligibility import GPUFilter
from gpupin.kernel.state import ClusterState
from gpupin.placement import CurrentPod


@dataclass(frozen=True)
class PlanContext:
    state: ClusterState
    filter: GPUFilter
    owner: str
    """``namespace/name`` of the deployment: whose holds these are."""
    name: str
    """The deployment's name (pod names derive from it)."""
    current: Sequence[CurrentPod]
    """The deployment's existing pods: a re-plan keeps them where they are when it can."""
    exclusive: bool
    """Its pods own their GPUs (the engine or the pinning mode says so)."""
    capacity_exists: Callable[[], bool]
    """Would the deployment be placed if nothing else held any GPU? (tells 'taken' from 'too small')"""
    share_across_namespaces: bool = True
    """A new server may go on a GPU that pods of another namespace hold memory on (shared-server
    engines). False: GPUs are not shared across namespaces; pods already sharing one stay."""
    explain: bool = True
    """Explain a refusal (which GPUs are too small or taken, and by whom). False: a search trying
    placements only needs to know it failed, so the refusal is :data:`UNEXPLAINED`, which is cheap."""

    @property
    def namespace(self) -> str:
        return namespace_of(self.owner)


UNEXPLAINED = "not placed (search)"
"""The message of a refusal made without an explanation (:attr:`PlanContext.explain` False)."""


def namespace_of(owner: str) -> str:
    """The namespace of a holder: owners are ``namespace/name`` (with a suffix such as ``(deleted)``)."""
    return owner.split("/", 1)[0]
