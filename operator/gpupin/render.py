"""Render a plan into the Kubernetes objects the operator creates, as plain dicts.

Pure: no kubernetes imports. One Pod per placement, the objects its pinning mode needs before it
(a ResourceClaimTemplate in the ``dra`` mode), the engine's Services (one per vLLM deployment,
one per Ollama model selecting only the pods that hold it) and, when the operator is so configured,
one NetworkPolicy that admits only clients of the deployment's own namespace to its pods.

A pod is assembled from three parts, each from its own room: what every gpupin pod has (labels,
the node, the placement annotation, the model cache volume, the spec's env, resources and
tolerations, no service account token — here), the engine's containers, probes and user
(:mod:`gpupin.engines`), and what binds it to its GPUs (:mod:`gpupin.pinning`).

Every object carries a spec-hash label; the operator replaces a pod whose hash changed. So a
change here (a new pod field) changes every pod's hash: after an operator upgrade every
deployment's pods are replaced, at most ``--max-concurrent-rollouts`` deployments at a time,
within each one's ``rollout`` bounds.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from gpupin import constants, naming, pinning
from gpupin.api.v1alpha1 import LLMDeployment, LLMDeploymentSpec
from gpupin.engines import ENGINES, Engine, EngineRegistry
from gpupin.engines.base import container_env
from gpupin.httproute import http_routes
from gpupin.pinning import PinningMode, PinningModeName
from gpupin.placement import Placement, Plan
from gpupin.quantity import GiB
from gpupin.routerobjects import ROUTER_LABEL, ROUTER_PORT, RouterPod, router_objects

NetworkPolicyMode = Literal["none", "namespace"]
NETWORK_POLICY_MODES: tuple[NetworkPolicyMode, ...] = ("none", "namespace")
CACHE_HEADROOM = 10 * GiB
"""Added to twice the models' size for the ``auto`` cache limit: the Hugging Face cache's own files
(xet chunks, tokenizers) and Ollama's partial downloads."""


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
    default_cache_size: str = "auto"
    """The model cache emptyDir's sizeLimit when spec.storage.size is unset: ``auto`` (from the
    pod's models, see :func:`auto_cache_bytes`), ``none`` (no limit) or a quantity (``200Gi``)."""
    network_policy: NetworkPolicyMode = "none"
    """``namespace``: one NetworkPolicy per deployment admits only pods of its namespace (and of
    :attr:`network_policy_namespaces`) to its pods' serving port; ``none``: no NetworkPolicy."""
    network_policy_namespaces: tuple[tuple[str, str | None], ...] = ()
    """Client namespaces admitted besides the deployment's own, by label: (key, value), or (key,
    None) for "has the label"; empty: none."""
    router_image: str = ""
    """gpupin's own image: each Ollama deployment gets one endpoint, ``gpupin router`` in front of
    its per-model Services (:mod:`gpupin.routerobjects`); empty: no router."""
    router_pod: RouterPod = field(default_factory=RouterPod)
    """Scheduling, pull secrets and resources of every router pod."""
    gateway: tuple[str, str] | None = None
    """(namespace, name) of a Gateway: each Ollama deployment gets an HTTPRoute attached to it that
    routes by model (:mod:`gpupin.httproute`); namespace "" for the deployment's own; None: none."""

    def image(self, engine: Engine) -> str:
        return dict(self.images).get(engine.name) or engine.default_image


def routed(config: RenderConfig, engine: str) -> bool:
    """Whether a deployment of ``engine`` gets a router (one endpoint for its models): Ollama's,
    where the operator has a router image. A vLLM deployment's one Service already serves its
    whole model set."""
    return bool(config.router_image) and engine == "ollama"


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
    sizes = {m.name: m.vram_bytes for m in plan.models}
    objects: list[dict[str, Any]] = []
    for placement in plan.placements:
        objects.extend(mode.objects(deployment.metadata.namespace, placement, dict(labels)))
        objects.append(render_pod(deployment, placement, config, engine, mode, sizes))
    objects.extend(engine.services(deployment, labels, selector(deployment)))
    if routed(config, engine.name):
        objects.extend(
            router_objects(deployment, labels, engine.port, config.router_image, config.router_pod)
        )
    if config.gateway is not None and engine.name == "ollama":
        objects.extend(http_routes(deployment, labels, engine.port, config.gateway))
    if config.network_policy == "namespace":
        objects.append(network_policy(deployment, engine, labels, config.network_policy_namespaces))
        if routed(config, engine.name):  # the router exposes the servers: it admits the same clients
            router_pods = {ROUTER_LABEL: naming.label_value(deployment.metadata.name)}
            objects.append(network_policy(deployment, engine, labels, config.network_policy_namespaces,
                                          (router_pods, ROUTER_PORT)))  # fmt: skip
    plain = _plain_free_form(deployment.spec)
    return [with_spec_hash(obj, plain) for obj in objects]


def spec_hash(obj: dict[str, Any], plain: bool = False) -> str:
    """A short hash of everything in the object but the hash label itself: sha256 of its JSON (keys
    sorted, no spaces, ``json.dumps``'s text with its ASCII escapes), the first 12 hex digits. The
    object is not copied (only the mappings on the way to the label are), so hashing costs one
    encoding of it.

    ``plain``: the caller knows the object holds only dict (str keys), list, str, int, bool and None
    (no float: orjson and ``json.dumps`` write some floats differently; nothing orjson encodes and
    ``json.dumps`` refuses, such as a date). orjson (some ten times faster) then encodes it, and its
    text is used when it is provably ``json.dumps``'s: all ASCII and without DEL (``json.dumps``
    escapes DEL and every non-ASCII character; control characters both escape alike, and both
    sort keys by code point). Otherwise, and for an integer beyond 64 bits, ``json.dumps`` encodes
    it. A hash must never change: a changed hash replaces every running pod on upgrade."""
    metadata = obj.get("metadata")
    labels = metadata.get("labels") if isinstance(metadata, dict) else None
    if isinstance(labels, dict) and constants.SPEC_HASH_LABEL in labels:
        labels = {k: v for k, v in labels.items() if k != constants.SPEC_HASH_LABEL}
        obj = {**obj, "metadata": {**metadata, "labels": labels}}  # type: ignore[dict-item]
    text = b""
    if plain:
        try:
            text = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
        except TypeError:  # orjson.JSONEncodeError is one: an integer beyond 64 bits
            text = b""
        if not text.isascii() or b"\x7f" in text:
            text = b""
    if not text:
        text = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(text).hexdigest()[:12]


def with_spec_hash(obj: dict[str, Any], plain: bool = False) -> dict[str, Any]:
    """``obj`` with its spec-hash label set (``plain``: see :func:`spec_hash`)."""
    obj["metadata"].setdefault("labels", {})[constants.SPEC_HASH_LABEL] = spec_hash(obj, plain)
    return obj


def _plain_free_form(spec: LLMDeploymentSpec) -> bool:
    """Do the parts of the spec that are passed into the objects as written (tolerations, env
    ``valueFrom``) hold only dict, list, str, int, bool and None? Every other rendered value is
    gpupin's own: str, int, bool, None (``tests/test_render_hash.py`` holds render to that)."""
    stack: list[Any] = [*spec.tolerations, *(e.value_from for e in spec.env if e.value_from is not None)]
    while stack:
        value = stack.pop()
        kind = type(value)
        if kind is dict:
            if any(type(key) is not str for key in value):
                return False
            stack.extend(value.values())
        elif kind is list:
            stack.extend(value)
        elif kind is not str and kind is not int and kind is not bool and value is not None:
            return False
    return True


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
    deployment: LLMDeployment,
    placement: Placement,
    config: RenderConfig,
    engine: Engine,
    mode: PinningMode,
    plan_sizes: dict[str, int] | None = None,
) -> dict[str, Any]:
    """The pod of one placement: the engine's containers, pinned by the operator's mode.
    ``plan_sizes``: model → the plan's estimate in bytes (the ``auto`` cache limit reads it)."""
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
        "automountServiceAccountToken": False,  # the servers never call the Kubernetes API
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}, **part.pod_security},
        "containers": [container],
        "volumes": [_models_volume(spec, _cache_limit(config, placement, plan_sizes)), *part.volumes],
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


def auto_cache_bytes(models: list[str] | tuple[str, ...], sizes: dict[str, int]) -> int:
    """The ``auto`` cache limit of a pod (bytes, whole GiB): twice the plan's estimate of its models
    plus :data:`CACHE_HEADROOM`.

    Why from the models and not one figure: the models gpupin serves range from embedding models of
    tens of MB to checkpoints of hundreds of GB (a 70B model in bfloat16 downloads 141 GB); any one
    limit either evicts the pods of large models in a loop (the kubelet evicts a pod whose emptyDir
    outgrows its sizeLimit) or bounds nothing. The estimate (weights, KV cache, runtime on one GPU)
    is at least the downloaded weights for 16-bit and quantized checkpoints; twice it covers a
    float32 checkpoint served in 16 bit, and the headroom the caches' own files."""
    total = 2 * sum(sizes.get(model, 0) for model in models) + CACHE_HEADROOM
    return math.ceil(total / GiB) * GiB


def _cache_limit(config: RenderConfig, placement: Placement, sizes: dict[str, int] | None) -> str | None:
    """The model cache emptyDir's sizeLimit when spec.storage.size is unset (None: no limit)."""
    if config.default_cache_size == "none":
        return None
    if config.default_cache_size == "auto":
        return f"{auto_cache_bytes(placement.models, sizes or {}) // GiB}Gi"
    return config.default_cache_size


def _models_volume(spec: LLMDeploymentSpec, default_limit: str | None = None) -> dict[str, Any]:
    """The model cache every engine mounts: a claim of the user's, a per-pod ephemeral claim,
    or an emptyDir, size-limited by spec.storage.size or else ``default_limit``."""
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
        limit = str(storage.size) if storage and storage.size is not None else default_limit
        models["emptyDir"] = {"sizeLimit": limit} if limit else {}
    return models


def network_policy(
    deployment: LLMDeployment,
    engine: Engine,
    labels: dict[str, str],
    client_namespaces: tuple[tuple[str, str | None], ...] = (),
    guarded: tuple[dict[str, str], int] | None = None,
) -> dict[str, Any]:
    """The deployment's NetworkPolicy: its pods take connections on the engine's port only from pods
    of its own namespace (and of namespaces with the ``client_namespaces`` labels); nothing else
    reaches them. Egress is left open (models are pulled from registries). Enforced only where the
    cluster's network plugin implements NetworkPolicy. ``guarded``: (pod labels, port) of other
    pods to guard so instead (its router's)."""
    peers: list[dict[str, Any]] = [{"podSelector": {}}]  # every pod of the policy's own namespace
    if client_namespaces:
        match: dict[str, Any] = {}
        values = {k: v for k, v in client_namespaces if v is not None}
        exists = [{"key": k, "operator": "Exists"} for k, v in client_namespaces if v is None]
        if values:
            match["matchLabels"] = values
        if exists:
            match["matchExpressions"] = exists
        peers.append({"namespaceSelector": match})
    pods, port = guarded or (selector(deployment), engine.port)
    spec = {
        "podSelector": {"matchLabels": pods},
        "policyTypes": ["Ingress"],
        "ingress": [{"from": peers, "ports": [{"protocol": "TCP", "port": port}]}],
    }
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": network_policy_name(deployment.metadata.name, spec),
            "namespace": deployment.metadata.namespace,
            "labels": dict(labels),
        },
        "spec": spec,
    }


def network_policy_name(deployment: str, spec: dict[str, Any]) -> str:
    """``chat-gpupin-1a2b3c``: beside the user's own NetworkPolicies without taking their names, with
    a hash of its rules — a changed policy is a new object, created while the old one still guards
    the pods (policies add up), then the old one goes. A DNS label like the Services' names,
    shortened with a hash of the deployment's name when it would not be one."""
    rules = naming.short_hash(json.dumps(spec, sort_keys=True))
    candidate = f"{deployment}-gpupin"
    if naming.dns_label(candidate, naming.MAX_NAME - 7) != candidate:
        candidate = (
            f"{naming.dns_label(deployment, naming.MAX_NAME - 21)}-{naming.short_hash(deployment)}-gpupin"
        )
    return f"{candidate}-{rules}"


def parse_namespace_selector(text: str) -> tuple[tuple[str, str | None], ...]:
    """``team=ml,monitoring`` → ``(("team", "ml"), ("monitoring", None))``: namespaces whose labels
    all match (``key=value``, or ``key`` for "has the label"). Raises ValueError naming the part."""
    result: list[tuple[str, str | None]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, eq, value = part.partition("=")
        key = key.strip()
        if not naming.LABEL_KEY.match(key) or (eq and not naming.LABEL_VALUE.match(value.strip())):
            raise ValueError(
                f"--network-policy-namespaces {part!r}: expected key=value or key (namespace labels, "
                "comma-separated), e.g. kubernetes.io/metadata.name=ingress-nginx"
            )
        if any(key == seen for seen, _ in result):
            raise ValueError(
                f"--network-policy-namespaces: label {key} named twice; the labels are ANDed (a namespace "
                "must carry all of them), so a namespace cannot match two values of one key"
            )
        result.append((key, value.strip() if eq else None))
    return tuple(result)
