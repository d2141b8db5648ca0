"""Names that gpupin shares with the cluster: API group, annotation and label keys.

They are public: the agent writes the inventory annotation, the operator reads it,
users select pods by these labels. Change none of them without a migration.
"""

from typing import Final

GROUP: Final = "gpupin.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "LLMDeployment"
PLURAL: Final = "llmdeployments"
SINGULAR: Final = "llmdeployment"
SHORT_NAME: Final = "llmd"
CRD_NAME: Final = f"{PLURAL}.{GROUP}"

# On a Node: the GPUs the gpupin agent read with NVML, as compact JSON in the
# inventory format (see gpupin.inventory.NodeInventory).
INVENTORY_ANNOTATION: Final = "gpupin.dev/gpu-inventory"
# On a Node, set by the agent for selection and for people.
GPU_COUNT_LABEL: Final = "gpupin.dev/gpu-count"
MIXED_LABEL: Final = "gpupin.dev/mixed"

# On every child object the operator creates.
DEPLOYMENT_LABEL: Final = "gpupin.dev/deployment"
ENGINE_LABEL: Final = "gpupin.dev/engine"
SPEC_HASH_LABEL: Final = "gpupin.dev/spec-hash"
MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "gpupin"
MANAGED_SELECTOR: Final = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
"""Label selector of every object gpupin makes (its watches, lists and relists)."""
# On pods: one label per GPU the pod holds (key prefix + GPU UUID, value "true"),
# so `kubectl get pods -l gpu.gpupin.dev/GPU-…` finds the holder of a GPU.
GPU_LABEL_PREFIX: Final = "gpu.gpupin.dev/"
# On Ollama pods: one label per model served (key prefix + model slug), which the
# per-model Services select on.
MODEL_LABEL_PREFIX: Final = "model.gpupin.dev/"
# On pods: the placement (node, GPUs with reserved bytes, models) as JSON. The
# operator reads it back to know which GPU memory each pod holds.
PLACEMENT_ANNOTATION: Final = "gpupin.dev/placement"

# GFD labels (NVIDIA GPU Feature Discovery), read for nodes without the inventory
# annotation where they describe every card.
GFD_PRODUCT_LABEL: Final = "nvidia.com/gpu.product"
GFD_MEMORY_LABEL: Final = "nvidia.com/gpu.memory"
GFD_COUNT_LABEL: Final = "nvidia.com/gpu.count"
GFD_CC_MAJOR_LABEL: Final = "nvidia.com/gpu.compute.major"
GFD_CC_MINOR_LABEL: Final = "nvidia.com/gpu.compute.minor"
GPU_RESOURCE: Final = "nvidia.com/gpu"
# Signs that GFD and the device plugin describe MIG devices, not whole GPUs: labels that
# mig.strategy=single adds (gpu.slices.gi, gpu.slices.ci), and the per-profile labels and
# resources of mig.strategy=mixed (nvidia.com/mig-3g.40gb.count, nvidia.com/mig-3g.40gb).
GFD_SLICES_LABEL_PREFIX: Final = "nvidia.com/gpu.slices."
MIG_RESOURCE_PREFIX: Final = "nvidia.com/mig-"
# Named in messages only: GFD sets it under any MIG strategy but none, on MIG-off nodes too.
GFD_MIG_STRATEGY_LABEL: Final = "nvidia.com/mig.strategy"

# The NVIDIA DRA driver's DeviceClass and attribute domain.
DRA_DEVICE_CLASS: Final = "gpu.nvidia.com"
DRA_DRIVER: Final = "gpu.nvidia.com"

# What the kubelet and client-go write into Events (read to explain a pod that is not Ready).
KUBELET_READINESS_FAILED: Final = "Readiness probe failed:"
"""How the kubelet starts the message of an Unhealthy Event for a failed readiness probe."""
KUBELET_COMBINED: Final = "(combined from similar events): "
"""What client-go puts before an Event message that stands for several similar ones."""
