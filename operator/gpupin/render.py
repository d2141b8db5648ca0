"""Render a plan into the Kubernetes objects the operator creates, as plain dicts.

Pure: no kubernetes imports. One Pod per placement, the objects its pinning mode needs before it
(a ResourceClaimTemplate in the ``dra`` mode), and the engine's Services (one per vLLM deployment,
one per Ollama model selecting only the pods that hold it).

A pod is assembled from three parts, each from its own room: what every gpupin pod has (labels,
the node, the placement annotation, the model cache volume, the spec's env, resources and
tolerations — here), the engine's containers and probes (:mod:`gpupin.engines`), and what binds
it to its GPUs (:mod:`gpupin.pinning`).

Every object carries a spec-hash label; the operator replaces a pod whose hash changed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from gpupin import constants, naming, pinning
from gpupin.api.v1alpha1 import LLMDeployment, LLMDeploymentSpec
from gpupin.engines import ENGINES, Engine, EngineRegistry
from gpupin.engines.base import container_env
from gpupin.pinning import PinningMode, PinningModeName
from gpupin.placement import Placement, Plan


@dataclass(frozen=True)
class RenderConfig:
    """Operator-wide settings that shape every pod (flags and env of `gpupin operator`)."""

    pinning: PinningModeName = "visible-devices"
    runtime_class_name: str | None = "nvidia"
    """RuntimeClass of the NVIDIA container runtime (visible-devices mode); empty for none."""
    images: tuple[tuple[str, str], ...] = ()
    """(engine name, image) pairs; an engine not named uses its own default image."""
    require_gpu: bool = True
    """An Ollama pod is Ready only when its models are wholly in GPU memory. False for clusters
    without GPUs (kind, demos), where Ollama serves from the CPU."""

    def image(self, engine: Engine) -> str:
        return dict(self.images).get(engine.name) or engine.default_image


def render(
    deployment: LLMDeployment, plan: Plan, config: RenderConfig, engines: EngineRegistry = ENGINES
) -> list[dict[str, Any]]:
    """Every object a placed plan needs; nothing for a refused one. Raises
    :class:`gpupin.engines.UnknownEngine` for a plan of an engine the registry lacks."""
    if not plan.placed:
        return []
    engine = engines.get(plan.engine)
    mode = pinning.get(config.pinning)
    labels = common_labels(deployment, engine.name)
    objects: list[dict[str, Any]] = []
    for placement in plan.placements:
        objects.extend(mode.objects(deployment.metadata.namespace, placement, dict(labels)))
        objects.append(render_pod(deployment, placement, config, engine, mode))
    objects.extend(engine.services(deployment, labels, selector(deployment)))
    return [with_spec_hash(obj) for obj in objects]


def spec_hash(obj: dict[str, Any]) -> str:
    """A short hash of everything in the object but the hash label itself."""
    body = json.loads(json.dumps(obj))
    body.get("metadata", {}).get("labels", {}).pop(constants.SPEC_HASH_LABEL, None)
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]


def with_spec_hash(obj: dict[str, Any]) -> dict[str, Any]:
    obj["metadata"].setdefault("labels", {})[constants.SPEC_HASH_LABEL] = spec_hash(obj)
    return obj


def common_labels(deployment: LLMDeployment, engine: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": engine,
        "app.kubernetes.io/instance": naming.label_value(deployment.metadata.name),
        "app.kubernetes.io/component": "llm-server",
        constants.MANAGED_BY_LABEL: constants.MANAGED_BY,
        constants.DEPLOYMENT_LABEL: naming.label_value(deployment.metadata.name),
        constants.ENGINE_LABEL: engine,
    }


def selector(deployment: LLMDeployment) -> dict[str, str]:
    """The labels that select every pod of a deployment (the scale subresource reports them)."""
    return {constants.DEPLOYMENT_LABEL: naming.label_value(deployment.metadata.name)}


def render_pod(
    deployment: LLMDeployment, placement: Placement, config: RenderConfig, engine: Engine, mode: PinningMode
) -> dict[str, Any]:
    """The pod of one placement: the engine's containers, pinned by the operator's mode."""
    spec = deployment.spec
    part = engine.pod(spec, placement, spec.image or config.image(engine), config.require_gpu)
    labels = common_labels(deployment, engine.name)
    for gpu in placement.gpus:
        labels[naming.gpu_label_key(gpu.uuid)] = "true"
    labels.update(part.labels)
    container = part.container
    container["env"] = container_env(
        [*mode.env(placement, engine.cuda_visible_uuids), *container["env"]], spec
    )
    resources = _resources(spec)
    mode.add_resources(resources, placement)
    if resources:
        container["resources"] = resources
    pod_spec: dict[str, Any] = {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchFields": [
                                {"key": "metadata.name", "operator": "In", "values": [placement.node]}
                            ]
                        }
                    ]
                }
            }
        },
        "enableServiceLinks": False,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": [_models_volume(spec), *part.volumes],
    }
    if part.init_containers:
        pod_spec["initContainers"] = part.init_containers
    if spec.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in spec.tolerations]
    pod_spec.update(mode.pod_fields(placement, config.runtime_class_name))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": placement.pod,
            "namespace": deployment.metadata.namespace,
            "labels": labels,
            "annotations": {constants.PLACEMENT_ANNOTATION: placement.to_annotation()},
        },
        "spec": pod_spec,
    }


def _resources(spec: LLMDeploymentSpec) -> dict[str, Any]:
    if spec.resources is None:
        return {}
    result: dict[str, Any] = {}
    for part in ("requests", "limits"):
        values = getattr(spec.resources, part)
        if values:
            result[part] = {name: str(value) for name, value in values.items()}
    return result


def _models_volume(spec: LLMDeploymentSpec) -> dict[str, Any]:
    """The model cache every engine mounts: a claim of the user's, a per-pod ephemeral claim,
    or an emptyDir (optionally size-limited)."""
    storage = spec.storage
    models: dict[str, Any] = {"name": "models"}
    if storage and storage.existing_claim:
        models["persistentVolumeClaim"] = {"claimName": storage.existing_claim}
    elif storage and storage.storage_class_name and storage.size is not None:
        models["ephemeral"] = {
            "volumeClaimTemplate": {
                "metadata": {"labels": {constants.MANAGED_BY_LABEL: constants.MANAGED_BY}},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": storage.storage_class_name,
                    "resources": {"requests": {"storage": str(storage.size)}},
                },
            }
        }
    else:
        models["emptyDir"] = {"sizeLimit": str(storage.size)} if storage and storage.size is not None else {}
    return models
