"""Render a plan into the Kubernetes objects the operator creates, as plain dicts.

Pure: no kubernetes imports. One Pod per placement (plus a ResourceClaimTemplate in
the ``dra`` pinning mode), and Services: one per vLLM deployment, one per Ollama
model selecting only the pods that hold it.

How a pod is pinned to its GPUs depends on the pinning mode:

- ``visible-devices``: ``NVIDIA_VISIBLE_DEVICES`` and ``CUDA_VISIBLE_DEVICES`` name the
  GPU UUIDs, with the NVIDIA runtime class and no ``nvidia.com/gpu`` request. The
  container toolkit exposes exactly those GPUs; the scheduler does no GPU accounting,
  so gpupin must be the only GPU allocator on those nodes.
- ``dra``: a ResourceClaimTemplate per pod whose CEL selectors name each GPU's UUID;
  the scheduler allocates exactly those devices.
- ``device-plugin``: ``nvidia.com/gpu: N`` and the node; the kubelet picks which N, so
  the planner only uses nodes whose GPUs are all alike.

Every object carries a spec-hash label; the operator replaces a pod whose hash changed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from gpupin import constants, naming, ollama_hooks
from gpupin.api.v1alpha1 import LLMDeployment, LLMDeploymentSpec
from gpupin.planner import PinningMode, Placement, Plan
from gpupin.quantity import format_quantity, parse_bytes

OLLAMA_PORT = 11434
VLLM_PORT = 8000
MODELS_PATH = "/models"
CLAIM_NAME = "gpus"
MODEL_PULL_CONTAINER = "pull-models"
"""The Ollama init container that pulls the models (the operator reads its termination message)."""


@dataclass(frozen=True)
class RenderConfig:
    """Operator-wide settings that shape every pod (flags and env of `gpupin operator`)."""

    pinning: PinningMode = "visible-devices"
    runtime_class_name: str | None = "nvidia"
    """RuntimeClass of the NVIDIA container runtime (visible-devices mode); empty for none."""
    ollama_image: str = "ollama/ollama:0.17.4"
    vllm_image: str = "vllm/vllm-openai:v0.33.0"
    require_gpu: bool = True
    """An Ollama pod is Ready only when its models are wholly in GPU memory. False for clusters
    without GPUs (kind, demos), where Ollama serves from the CPU."""


def render(deployment: LLMDeployment, plan: Plan, config: RenderConfig) -> list[dict[str, Any]]:
    """Every object a placed plan needs; nothing for a refused one."""
    if not plan.placed:
        return []
    objects: list[dict[str, Any]] = []
    for placement in plan.placements:
        if config.pinning == "dra":
            objects.append(_claim_template(deployment, placement))
        objects.append(render_pod(deployment, plan, placement, config))
    objects.extend(_services(deployment, plan))
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


def placement_annotation(placement: Placement, exclusive: bool) -> str:
    """What the pod holds, for the operator to read back: node, GPUs with reserved bytes, models,
    and whether it owns the GPUs (vLLM, or any pod in the dra and device-plugin modes)."""
    body = {k: v for k, v in placement.as_json().items() if k != "pod"} | {"exclusive": exclusive}
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def render_pod(
    deployment: LLMDeployment, plan: Plan, placement: Placement, config: RenderConfig
) -> dict[str, Any]:
    spec = deployment.spec
    engine = plan.engine
    labels = common_labels(deployment, engine)
    for gpu in placement.gpus:
        labels[naming.gpu_label_key(gpu.uuid)] = "true"
    if engine == "ollama":
        for model in placement.models:
            labels[naming.model_label_key(model)] = "true"
    exclusive = engine == "vllm" or config.pinning != "visible-devices"
    if engine == "vllm":
        container = _vllm_container(spec, placement, config)
    else:
        container = _ollama_container(spec, placement, config)
    container["env"] = [*_pinning_env(placement, config, engine), *container["env"], *_user_env(spec)]
    resources = _resources(spec)
    if config.pinning == "device-plugin":
        resources.setdefault("limits", {})[constants.GPU_RESOURCE] = str(len(placement.gpus))
    if config.pinning == "dra":
        resources["claims"] = [{"name": CLAIM_NAME}]
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
        "volumes": _volumes(spec, placement),
    }
    if engine == "ollama":
        pod_spec["initContainers"] = [_ollama_pull_container(spec, placement, config)]
    if spec.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in spec.tolerations]
    if config.pinning == "visible-devices" and config.runtime_class_name:
        pod_spec["runtimeClassName"] = config.runtime_class_name
    if config.pinning == "dra":
        pod_spec["resourceClaims"] = [{"name": CLAIM_NAME, "resourceClaimTemplateName": placement.pod}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": placement.pod,
            "namespace": deployment.metadata.namespace,
            "labels": labels,
            "annotations": {constants.PLACEMENT_ANNOTATION: placement_annotation(placement, exclusive)},
        },
        "spec": pod_spec,
    }


def _pinning_env(placement: Placement, config: RenderConfig, engine: str) -> list[dict[str, str]]:
    """``NVIDIA_VISIBLE_DEVICES`` makes the container runtime expose exactly the planned GPUs, which
    the container then sees as 0..n-1. ``CUDA_VISIBLE_DEVICES`` repeats the choice for CUDA: by UUID
    for Ollama (CUDA and Ollama accept UUIDs), but as 0..n-1 for vLLM, which before 0.33 converts
    each entry with ``int()`` and crashes on a ``GPU-…`` UUID (vllm-project/vllm#20939)."""
    env = [{"name": "CUDA_DEVICE_ORDER", "value": "PCI_BUS_ID"}]
    if config.pinning != "visible-devices":
        return env  # the DRA driver or the device plugin tells the container runtime which GPUs
    renumbered = ",".join(str(i) for i in range(len(placement.gpus)))
    if all(g.uuid.startswith(("GPU-", "MIG-")) for g in placement.gpus):
        visible = ",".join(placement.gpu_uuids)
        cuda = visible if engine == "ollama" else renumbered
    else:  # GPUs known from GFD labels have no UUID: host indices, renumbered from 0 inside
        visible = ",".join(str(g.index) for g in placement.gpus)
        cuda = renumbered
    return [
        {"name": "NVIDIA_VISIBLE_DEVICES", "value": visible},
        {"name": "CUDA_VISIBLE_DEVICES", "value": cuda},
        *env,
    ]


def _user_env(spec: LLMDeploymentSpec) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = []
    for var in spec.env:
        item: dict[str, Any] = {"name": var.name}
        if var.value_from is not None:
            item["valueFrom"] = var.value_from
        else:
            item["value"] = var.value or ""
        result.append(item)
    return result


def _resources(spec: LLMDeploymentSpec) -> dict[str, Any]:
    if spec.resources is None:
        return {}
    result: dict[str, Any] = {}
    for part in ("requests", "limits"):
        values = getattr(spec.resources, part)
        if values:
            result[part] = {name: str(value) for name, value in values.items()}
    return result


def _volumes(spec: LLMDeploymentSpec, placement: Placement) -> list[dict[str, Any]]:
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
    volumes = [models]
    if spec.resolved_engine == "vllm" and spec.tensor_parallel_size > 1:
        shm = format_quantity(parse_bytes(spec.vllm_options.shm_size))
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm}})
    return volumes


_SECURITY = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def _ollama_container(spec: LLMDeploymentSpec, placement: Placement, config: RenderConfig) -> dict[str, Any]:
    options = spec.ollama_options
    env = [
        {"name": "OLLAMA_HOST", "value": f"0.0.0.0:{OLLAMA_PORT}"},
        {"name": "OLLAMA_MODELS", "value": MODELS_PATH},
        {"name": "OLLAMA_KEEP_ALIVE", "value": options.keep_alive},
        {"name": "OLLAMA_CONTEXT_LENGTH", "value": str(options.context_length)},
        {"name": "OLLAMA_NUM_PARALLEL", "value": str(options.num_parallel)},
        {"name": "OLLAMA_MAX_LOADED_MODELS", "value": str(len(placement.models))},
    ]
    if options.flash_attention is not None:  # unset: Ollama decides per model (on for gemma3, qwen3, …)
        env.append({"name": "OLLAMA_FLASH_ATTENTION", "value": "1" if options.flash_attention else "0"})
    env.append({"name": "OLLAMA_KV_CACHE_TYPE", "value": options.kv_cache_type})
    return {
        "name": "ollama",
        "image": spec.image or config.ollama_image,
        "args": ["serve"],
        "ports": [{"name": "http", "containerPort": OLLAMA_PORT, "protocol": "TCP"}],
        "env": env,
        # Load every planned model without generating and keep it resident, so the memory the
        # planner budgeted is the memory Ollama holds. The hook returns at once and never fails.
        "lifecycle": {
            "postStart": {
                "exec": {
                    "command": ["/bin/bash", "-c", ollama_hooks.preload_script(placement.models, OLLAMA_PORT)]
                }
            }
        },
        "startupProbe": {
            "httpGet": {"path": "/", "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 60,
        },
        "livenessProbe": {
            "httpGet": {"path": "/", "port": "http"},
            "periodSeconds": 20,
            "failureThreshold": 3,
        },
        # Ready once every planned model is loaded, and wholly on the GPU unless CPU is allowed.
        "readinessProbe": {
            "exec": {
                "command": [
                    "/bin/bash",
                    "-c",
                    ollama_hooks.readiness_script(placement.models, OLLAMA_PORT, config.require_gpu),
                ]
            },
            "periodSeconds": 10,
            "timeoutSeconds": 5,
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "models", "mountPath": MODELS_PATH}],
        "securityContext": _SECURITY,
    }


def _ollama_pull_container(
    spec: LLMDeploymentSpec, placement: Placement, config: RenderConfig
) -> dict[str, Any]:
    """Pull the models into the cache before the server starts, without touching a GPU: the image
    sets NVIDIA_VISIBLE_DEVICES=all, which ``void`` overrides in every pinning mode."""
    env = [
        {"name": "OLLAMA_HOST", "value": f"127.0.0.1:{OLLAMA_PORT}"},
        {"name": "OLLAMA_MODELS", "value": MODELS_PATH},
        {"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"},
    ]
    return {
        "name": MODEL_PULL_CONTAINER,
        "image": spec.image or config.ollama_image,
        "command": ["/bin/bash", "-c", ollama_hooks.pull_script(placement.models, OLLAMA_PORT)],
        "env": [*env, *_user_env(spec)],
        # The last lines of the log (which model, Ollama's error) become the termination message.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "models", "mountPath": MODELS_PATH}],
        "securityContext": _SECURITY,
    }


def _vllm_container(spec: LLMDeploymentSpec, placement: Placement, config: RenderConfig) -> dict[str, Any]:
    options = spec.vllm_options
    model = placement.models[0]
    args = [
        model,
        "--served-model-name",
        model,
        "--host",
        "0.0.0.0",
        "--port",
        str(VLLM_PORT),
        "--gpu-memory-utilization",
        str(options.gpu_memory_utilization),
        "--tensor-parallel-size",
        str(spec.tensor_parallel_size),
    ]
    max_len = options.max_model_len or placement.max_model_len
    if max_len:
        args += ["--max-model-len", str(max_len)]
    dtype = placement.dtype or (options.dtype if options.dtype != "auto" else None)
    if dtype:
        args += ["--dtype", dtype]
    args += list(options.args)
    mounts = [{"name": "models", "mountPath": MODELS_PATH}]
    if spec.tensor_parallel_size > 1:
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    return {
        "name": "vllm",
        "image": spec.image or config.vllm_image,
        "command": ["vllm", "serve"],
        "args": args,
        "ports": [{"name": "http", "containerPort": VLLM_PORT, "protocol": "TCP"}],
        "env": [{"name": "HF_HOME", "value": f"{MODELS_PATH}/huggingface"}],
        # Downloading and loading weights can take many minutes: the startup probe allows 30.
        "startupProbe": {
            "httpGet": {"path": "/health", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 180,
        },
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": "http"},
            "periodSeconds": 20,
            "failureThreshold": 3,
        },
        # /health, not /v1/models: with VLLM_API_KEY or --api-key every /v1 path answers 401, while
        # /health answers 200 once the engine is up (the server listens only after loading the model).
        "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10},
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
        "securityContext": _SECURITY,
    }


def _claim_template(deployment: LLMDeployment, placement: Placement) -> dict[str, Any]:
    """One request per planned GPU, each selecting that GPU by UUID."""
    requests = [
        {
            "name": f"gpu-{i}",
            "exactly": {
                "deviceClassName": constants.DRA_DEVICE_CLASS,
                "selectors": [
                    {
                        "cel": {
                            "expression": f"device.attributes['{constants.DRA_DRIVER}'].uuid == '{gpu.uuid}'"
                        }
                    }
                ],
            },
        }
        for i, gpu in enumerate(placement.gpus)
    ]
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {
            "name": placement.pod,
            "namespace": deployment.metadata.namespace,
            "labels": common_labels(deployment, deployment.spec.resolved_engine),
        },
        "spec": {"spec": {"devices": {"requests": requests}}},
    }


def _services(deployment: LLMDeployment, plan: Plan) -> list[dict[str, Any]]:
    labels = common_labels(deployment, plan.engine)
    base: dict[str, Any] = {"apiVersion": "v1", "kind": "Service"}
    if plan.engine == "vllm":
        return [
            {
                **base,
                "metadata": {
                    "name": naming.deployment_service_name(deployment.metadata.name),
                    "namespace": deployment.metadata.namespace,
                    "labels": dict(labels),
                },
                "spec": {
                    "selector": selector(deployment),
                    "ports": [{"name": "http", "port": VLLM_PORT, "targetPort": "http", "protocol": "TCP"}],
                },
            }
        ]
    services = []
    for model in deployment.spec.models:
        services.append(
            {
                **base,
                "metadata": {
                    "name": naming.model_service_name(deployment.metadata.name, model.name),
                    "namespace": deployment.metadata.namespace,
                    "labels": dict(labels),
                    "annotations": {"gpupin.dev/model": model.name},
                },
                "spec": {
                    "selector": {**selector(deployment), naming.model_label_key(model.name): "true"},
                    "ports": [{"name": "http", "port": OLLAMA_PORT, "targetPort": "http", "protocol": "TCP"}],
                },
            }
        )
    return services
