"""Condition types and reasons: the one place they are spelled.

Reasons are CamelCase, as Kubernetes conventions ask; scripts match on them, so
they are part of the API.
"""

from typing import Final

# Condition types
PLACED: Final = "Placed"
READY: Final = "Ready"
DEGRADED: Final = "Degraded"
ENDPOINT_READY: Final = "EndpointReady"
"""Only for a deployment with a router (Ollama, the operator's --router-image): its one endpoint
answers (the router's Deployment has a ready pod)."""

# Placed=True
PLACED_OK: Final = "Placed"
PAUSED: Final = "Paused"
"""replicas: 0: no pods, no GPUs held (Placed=True, Ready=False)."""
# Placed=True, with a warning the user should read
MIXED_GPUS_ALLOWED: Final = "MixedGPUsAllowed"
DTYPE_FALLBACK: Final = "DtypeFallback"

# Placed=False: what the planner refused and why
INVALID_SPEC: Final = "InvalidSpec"
UNKNOWN_MODEL_SIZE: Final = "UnknownModelSize"
UNKNOWN_MODEL: Final = "UnknownModel"
"""The model's registry (Hugging Face, Ollama) says the name does not exist."""
UNSUPPORTED_MODEL: Final = "UnsupportedModel"
"""The engine cannot serve this model as asked (a GGUF repo on vLLM, maxModelLen above the
model's context, a quantization its image has no kernels for) or gpupin cannot size it from its
metadata. A tensor parallel size its heads do not divide is InvalidSpec."""
NO_MATCHING_GPU: Final = "NoMatchingGPU"
UNSUPPORTED_COMPUTE_CAPABILITY: Final = "UnsupportedComputeCapability"
HETEROGENEOUS_TENSOR_PARALLEL: Final = "HeterogeneousTensorParallel"
TOO_FEW_GPUS: Final = "TooFewGPUs"
INSUFFICIENT_VRAM: Final = "InsufficientVRAM"
INSUFFICIENT_GPUS: Final = "InsufficientGPUs"
PINNING_UNSUPPORTED: Final = "PinningUnsupported"
NODE_INVENTORY_PROBLEM: Final = "NodeInventoryProblem"
"""Every GPU the deployment could use is on a node whose GPU inventory cannot be read now (or was
reported gone): such GPUs keep their pods and take no new ones."""
POLICY_REFUSED: Final = "PolicyRefused"
"""The spec uses what the cluster admin's policy (operator flags: --allowed-images, env from Secrets,
existing claims, StorageClasses) does not allow; the message names each field and the flag. Pods an
earlier spec or policy made keep serving."""

# Ready=True / False: how the deployment's pods are doing. The first two are the plain
# states; the others name what went wrong in a pod (the message names the pod and the cause).
PODS_READY: Final = "PodsReady"
PODS_NOT_READY: Final = "PodsNotReady"
NOT_PLACED: Final = "NotPlaced"
ROLLING_OUT: Final = "RollingOut"
"""Pods of an earlier spec are being replaced; Ready says whether as many pods serve as planned."""
EARLIER_SPEC_SERVING: Final = "EarlierSpecServing"
"""The current spec is not placed; pods of an earlier spec keep serving until it can be."""
PARTLY_SERVING: Final = "PartlyServing"
"""Some replicas serve; the rest cannot be placed (a scale-up that does not fit)."""
POD_REJECTED: Final = "PodRejected"
"""The API server refused an object gpupin made (422, 400, 403: admission, quota); not retried
until the spec changes or the resync period passes."""
INTERNAL_ERROR: Final = "InternalError"
"""The operator failed on this deployment (a bug); retried with backoff."""
IMAGE_PULL_FAILED: Final = "ImagePullFailed"
MODEL_PULL_FAILED: Final = "ModelPullFailed"
SERVER_CRASHED: Final = "ServerCrashed"
UNSCHEDULABLE: Final = "Unschedulable"
MODEL_ON_CPU: Final = "ModelOnCPU"
"""Ollama put part of a model in system memory: it serves, slowly, and gpupin's estimate was low."""
MODEL_NOT_LOADED: Final = "ModelNotLoaded"
POD_PROBLEMS: Final = frozenset(
    {
        IMAGE_PULL_FAILED,
        MODEL_PULL_FAILED,
        SERVER_CRASHED,
        UNSCHEDULABLE,
        MODEL_ON_CPU,
        MODEL_NOT_LOADED,
    }
)

REFUSALS: Final = frozenset(
    {
        INVALID_SPEC,
        UNKNOWN_MODEL_SIZE,
        UNKNOWN_MODEL,
        UNSUPPORTED_MODEL,
        NO_MATCHING_GPU,
        UNSUPPORTED_COMPUTE_CAPABILITY,
        HETEROGENEOUS_TENSOR_PARALLEL,
        TOO_FEW_GPUS,
        INSUFFICIENT_VRAM,
        INSUFFICIENT_GPUS,
        PINNING_UNSUPPORTED,
        NODE_INVENTORY_PROBLEM,
        POLICY_REFUSED,
    }
)
WARNINGS: Final = frozenset({MIXED_GPUS_ALLOWED, DTYPE_FALLBACK})

# EndpointReady
ROUTER_READY: Final = "RouterReady"
ROUTER_NOT_READY: Final = "RouterNotReady"
"""The router's Deployment has no ready pod yet (starting, image not pulled, unschedulable)."""
