"""What an engine is to gpupin: the interface every engine module implements.

An engine owns everything about it that varies: how its models are sized, how it is placed
(exclusive tensor-parallel groups or shared per-GPU servers, both in :mod:`gpupin.kernel`), the
compute capability it needs and its advice when it cannot be placed, the launch settings it is
given, its containers and probes, and its Services. The planner and the renderer call it through
this interface and know no engine by name; :mod:`gpupin.engines` is the registry.

Pure: no kopf, no kubernetes. Engines do not import one another or the pinning modes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from gpupin.api.rules import reserved_env_name
from gpupin.api.v1alpha1 import LLMDeployment, LLMDeploymentSpec, ModelRef
from gpupin.kernel.context import PlanContext
from gpupin.kernel.eligibility import ComputeRequirement
from gpupin.placement import Placement
from gpupin.sizing import Estimate, ModelCatalog, ModelFacts, NamingScheme, SizingError, with_spec_vram

MODELS_PATH = "/models"
"""Where every engine's model cache volume is mounted."""


def security_context() -> dict[str, Any]:
    """The container securityContext every engine container gets (restricted Pod Security); a new
    dict each time, so no two containers share one (YAML output would show anchors)."""
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


@dataclass
class EnginePod:
    """An engine's part of a pod; the renderer adds pinning, labels, placement and user settings."""

    container: dict[str, Any]
    """The server container. Its ``env`` follows the user's and the pinning mode's (gpupin's last)."""
    init_containers: list[dict[str, Any]] = field(default_factory=list)
    volumes: list[dict[str, Any]] = field(default_factory=list)
    """Volumes besides ``models`` (which the renderer makes from spec.storage)."""
    labels: dict[str, str] = field(default_factory=dict)
    """Pod labels besides the common ones (Services may select on them)."""
    pod_security: dict[str, Any] = field(default_factory=dict)
    """Pod securityContext settings besides the seccomp profile every pod has (the user and group
    the engine's image can run as, the models volume's group)."""


class Engine(ABC):
    """One LLM server. Subclasses set the class attributes and implement the abstract methods."""

    name: ClassVar[str]
    """The spec's ``engine`` value and the ``gpupin.dev/engine`` label: ``vllm``."""
    display_name: ClassVar[str]
    """How messages name it: ``vLLM``."""
    default_image: ClassVar[str]
    """The image when neither the spec nor the operator's configuration names one."""
    port: ClassVar[int]
    """The HTTP port of the server (container port ``http``)."""
    owns_gpus: ClassVar[bool]
    """A pod owns its GPUs (no other pod may share them, whatever the pinning mode)."""
    cuda_visible_uuids: ClassVar[bool]
    """CUDA_VISIBLE_DEVICES may name GPUs by UUID (else 0..n-1 after NVIDIA_VISIBLE_DEVICES)."""
    naming_scheme: ClassVar[NamingScheme]
    """How its model names are looked up in the model data first."""
    oldest_compute_capability: ClassVar[tuple[int, int] | None] = None
    """The oldest GPUs it runs on at all (None: any); GPUs older than every GPU-owning engine's
    are the ones a shared server opens first."""

    # -- sizing -----------------------------------------------------------------------------

    @abstractmethod
    def size(self, model: ModelRef, spec: LLMDeploymentSpec, facts: ModelFacts | None) -> Estimate | None:
        """The engine's estimate for one model (``facts``: its model data entry, if any); ``None``
        when nothing sizes it (neither data nor a parameter count in the name)."""

    def estimate(self, model: ModelRef, spec: LLMDeploymentSpec, catalog: ModelCatalog) -> Estimate:
        """What one model needs on this engine, ``models[].vram`` overriding; raises
        :class:`gpupin.sizing.SizingError` when it cannot be sized."""
        facts = catalog.lookup(model.name, self.naming_scheme)
        refused = catalog.refused.get(model.name.lower())
        if refused and model.vram is None and facts is None:
            reason, why = refused
            raise SizingError(why, reason)
        return with_spec_vram(self.size(model, spec, facts), model, spec, facts)

    # -- placement --------------------------------------------------------------------------

    def compute_requirement(
        self, spec: LLMDeploymentSpec, estimates: Sequence[Estimate] = ()
    ) -> ComputeRequirement | None:
        """The oldest GPUs the engine runs on with these settings and models (``None``: any)."""
        return None

    @abstractmethod
    def place(
        self, ctx: PlanContext, spec: LLMDeploymentSpec, estimates: Sequence[Estimate]
    ) -> tuple[list[Placement], str, str]:
        """Placements, the Placed reason and the message; raises
        :class:`gpupin.kernel.eligibility.Refusal` when it cannot be placed."""

    # -- rendering --------------------------------------------------------------------------

    @abstractmethod
    def pod(self, spec: LLMDeploymentSpec, placement: Placement, image: str, require_gpu: bool) -> EnginePod:
        """The engine's containers for one placement; the container needs an ``env`` list (the
        renderer puts the pinning mode's entries before it and the spec's after). ``require_gpu``:
        Ready only when the models are wholly in GPU memory, for engines that can fall back to the
        CPU, as Ollama does (false on clusters without GPUs); others ignore it."""

    @abstractmethod
    def services(
        self, deployment: LLMDeployment, labels: dict[str, str], selector: dict[str, str]
    ) -> list[dict[str, Any]]:
        """The Services that route to the deployment's pods (``selector`` selects all of them)."""


def container_env(own: list[dict[str, Any]], spec: LLMDeploymentSpec) -> list[dict[str, Any]]:
    """A container's env, each name once: gpupin's defaults the user may replace (``HOME``: any
    variable of ``own`` that is not reserved), then spec.env, then gpupin's reserved variables, last
    so that they win (Kubernetes keeps the last of duplicate names). The API refuses reserved names
    in spec.env (:func:`gpupin.api.rules.reserved_env_name`); one in a spec that was never validated
    is left out here too, in every pinning mode, so that no user variable can widen the GPUs a pod sees."""
    user = [item for item in user_env(spec) if not reserved_env_name(item["name"])]
    replaced = {item["name"] for item in user}
    defaults = [item for item in own if not reserved_env_name(item["name"]) and item["name"] not in replaced]
    pinned = [item for item in own if reserved_env_name(item["name"])]
    return [*defaults, *user, *pinned]


def user_env(spec: LLMDeploymentSpec) -> list[dict[str, Any]]:
    """spec.env as container env entries."""
    result: list[dict[str, Any]] = []
    for var in spec.env:
        item: dict[str, Any] = {"name": var.name}
        if var.value_from is not None:
            item["valueFrom"] = var.value_from
        else:
            item["value"] = var.value or ""
        result.append(item)
    return result


def service(
    name: str,
    namespace: str,
    labels: dict[str, str],
    selector: dict[str, str],
    port: int,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A ClusterIP Service on the pods' ``http`` port."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels)}
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "selector": selector,
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    }
