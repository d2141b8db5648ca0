"""The LLMDeployment API, ``gpupin.dev/v1alpha1``: the single source of truth.

The CRD YAML in ``crds/`` (and the chart) is generated from these models by
``gpupin.api.crdgen``; a test fails when the committed YAML drifts. Rules that need
only the spec are :data:`gpupin.api.rules.SPEC_RULES`: each is written once as CEL for the
API server and once as Python for ``gpupin plan`` (which has no API server), and a test checks
that the two agree on generated specs. Rules that need cluster facts (the GPUs) live
in the planner with a named reason.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from gpupin.api.rules import HF_REPO_PATTERN, check_scope
from gpupin.quantity import Quantity

MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$"
_HF_REPO_RE = re.compile(HF_REPO_PATTERN)
CC_PATTERN = r"^[0-9]+\.[0-9]+$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
DURATION_PATTERN = r"^-?[0-9]+(ns|us|µs|ms|s|m|h)?([0-9]+(ns|us|µs|ms|s|m|h))*$"
OBJECT_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"

PATTERN_HELP: dict[str, str] = {
    MODEL_NAME_PATTERN: "a model name: an Ollama name (qwen3:8b) or a Hugging Face id (Qwen/Qwen3-8B); "
    "letters, digits and . _ : / @ + -, starting with a letter or digit",
    CC_PATTERN: 'a compute capability MAJOR.MINOR such as "8.0" or "8.9" (quoted, so that 8.10 stays 8.10)',
    DNS_LABEL_PATTERN: "a DNS label: lower-case letters, digits and -, starting and ending with a letter or digit",
    ENV_NAME_PATTERN: "an environment variable name: letters, digits and . _ -, not starting with a digit",
    DURATION_PATTERN: "a duration such as 30s, 5m, 1h30m, 0 (unload at once) or -1 (keep loaded)",
    OBJECT_NAME_PATTERN: "a Kubernetes name: lower-case letters, digits, - and ., starting and ending with "
    "a letter or digit",
}
"""What each pattern above allows, in words: the message for a value that does not match
(error messages show this, never the regular expression)."""

Engine = Literal["vllm", "ollama", "auto"]
ResolvedEngine = Literal["vllm", "ollama"]


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are an error, not ignored
    (a typo such as ``tensorParalelSize`` must not silently plan with the default)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
    )


class ModelRef(ApiModel):
    """A model to serve."""

    name: str = Field(min_length=1, max_length=200, pattern=MODEL_NAME_PATTERN)
    """An Ollama tag (qwen2.5:14b) or a Hugging Face repo id (microsoft/phi-4)."""
    vram: Quantity | None = None
    """GPU memory the model needs in total (e.g. 9Gi), overriding gpupin's estimate. With tensor
    parallelism it is divided equally over the ranks."""


class GPUSelector(ApiModel):
    """Restricts which GPUs the deployment may use. Every field given must match."""

    products: list[str] | None = Field(default=None, min_length=1, max_length=32)
    """NVML product names, e.g. "NVIDIA GeForce RTX 3060" (exact, as `gpupin inventory` prints them)."""
    min_memory: Quantity | None = None
    """Only GPUs with at least this much total memory."""
    min_compute_capability: str | None = Field(default=None, pattern=CC_PATTERN)
    """Only GPUs with at least this CUDA compute capability, e.g. "8.0"."""
    nodes: list[str] | None = Field(default=None, min_length=1, max_length=256)
    """Only GPUs on these nodes."""


class VLLMOptions(ApiModel):
    """vLLM settings (engine vllm)."""

    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    """Fraction of each GPU's memory vLLM takes (--gpu-memory-utilization)."""
    max_model_len: int | None = Field(default=None, ge=16)
    """Context length (--max-model-len); default the model's own. Sizes the KV cache gpupin budgets."""
    dtype: Literal["auto", "bfloat16", "float16", "half", "float32"] = "auto"
    """Weight dtype (--dtype). auto serves bf16 models as float16 on GPUs below compute capability 8.0;
    bfloat16 restricts the deployment to GPUs of 8.0 and above."""
    shm_size: Quantity = "2Gi"
    """Size of the in-memory /dev/shm volume that tensor parallelism needs."""
    args: list[Annotated[str, Field(max_length=4096)]] = Field(default_factory=list, max_length=64)
    """Extra arguments appended to `vllm serve`; not the flags gpupin sets itself (the model,
    --tensor-parallel-size, --max-model-len, --gpu-memory-utilization, --dtype, --served-model-name,
    --host, --port): vLLM keeps the last of a repeated flag, which would undo the plan."""

    @model_validator(mode="after")
    def _rules(self) -> VLLMOptions:
        return check_scope("vllm", self)  # type: ignore[no-any-return]


class OllamaOptions(ApiModel):
    """Ollama settings (engine ollama). gpupin sets them explicitly so the memory it plans is the
    memory Ollama uses."""

    keep_alive: str = Field(default="-1", pattern=DURATION_PATTERN)
    """OLLAMA_KEEP_ALIVE; -1 keeps planned models loaded, so the memory budget stays true."""
    context_length: int = Field(default=4096, ge=256, le=1048576)
    """OLLAMA_CONTEXT_LENGTH: tokens of context per request; sizes the KV cache gpupin budgets."""
    num_parallel: int = Field(default=1, ge=1, le=64)
    """OLLAMA_NUM_PARALLEL: requests served at once per model; multiplies the KV cache."""
    flash_attention: bool | None = None
    """OLLAMA_FLASH_ATTENTION. Unset: Ollama decides per model (on by default for gemma3, qwen3,
    qwen3moe and gpt-oss); false forces it off, true on."""
    kv_cache_type: Literal["f16", "q8_0", "q4_0"] = "f16"
    """OLLAMA_KV_CACHE_TYPE; q8_0 and q4_0 halve and quarter the KV cache (they need flashAttention)."""

    @model_validator(mode="after")
    def _rules(self) -> OllamaOptions:
        return check_scope("ollama", self)  # type: ignore[no-any-return]


class Rollout(ApiModel):
    """How a changed deployment replaces its pods (counted in pods, as a Deployment counts them).

    A new pod goes on free GPUs first when the cluster has them (a surge), and an old pod is
    deleted only once its replacement is Ready; where no GPU is free, old pods are replaced in
    place, at most ``maxUnavailable`` at a time."""

    max_unavailable: int = Field(default=1, ge=0, le=128)
    """Ready pods that may be taken down at once to make room for their replacements. 0: replace
    only by surging onto free GPUs (a rollout then waits while none is free)."""
    max_surge: int = Field(default=1, ge=0, le=128)
    """New pods created on free GPUs beyond the planned count while the old ones still serve. 0:
    always replace in place."""

    @model_validator(mode="after")
    def _rules(self) -> Rollout:
        return check_scope("rollout", self)  # type: ignore[no-any-return]


class EnvVar(ApiModel):
    """An environment variable for the server container (e.g. HF_TOKEN from a Secret)."""

    name: str = Field(min_length=1, max_length=256, pattern=ENV_NAME_PATTERN)
    value: str | None = None
    value_from: dict[str, Any] | None = None
    """A Kubernetes EnvVarSource (secretKeyRef, configMapKeyRef, …), passed through as written."""

    @model_validator(mode="after")
    def _rules(self) -> EnvVar:
        return check_scope("env", self)  # type: ignore[no-any-return]


class Resources(ApiModel):
    """CPU and memory for the server container. GPUs are gpupin's to choose: nvidia.com/gpu is refused here."""

    requests: dict[str, Quantity] | None = Field(default=None, max_length=32)
    limits: dict[str, Quantity] | None = Field(default=None, max_length=32)

    @model_validator(mode="after")
    def _rules(self) -> Resources:
        return check_scope("resources", self)  # type: ignore[no-any-return]


class Storage(ApiModel):
    """Where the server keeps model files. Default: an emptyDir (models are pulled again when the
    pod is recreated)."""

    size: Quantity | None = None
    """Size of the cache: the emptyDir's sizeLimit, or the ephemeral volume's request."""
    storage_class_name: str | None = None
    """Give each pod its own ephemeral PersistentVolumeClaim of this StorageClass (needs size)."""
    existing_claim: str | None = None
    """Mount this existing PersistentVolumeClaim (ReadWriteMany when pods share it)."""

    @model_validator(mode="after")
    def _rules(self) -> Storage:
        return check_scope("storage", self)  # type: ignore[no-any-return]


class LLMDeploymentSpec(ApiModel):
    """What to serve and on which GPUs it may run. gpupin decides the GPU of each pod."""

    engine: Engine = "auto"
    """vllm, ollama, or auto: vllm when exactly one model is listed and its name is a Hugging Face
    repo id (org/name); otherwise ollama."""
    models: list[ModelRef] = Field(
        min_length=1,
        max_length=32,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """Models to serve (names unique). vLLM serves exactly one."""
    replicas: int = Field(default=1, ge=0, le=128)
    """Independent copies: vLLM pods, or for Ollama the number of distinct GPUs holding each model.
    0 pauses the deployment: its pods are deleted and its GPUs freed; the spec is kept."""
    rollout: Rollout | None = None
    """How pods are replaced when the spec, the image or the operator's settings change."""
    tensor_parallel_size: int = Field(default=1, ge=1, le=64)
    """GPUs per vLLM pod (--tensor-parallel-size), all on one node and of one kind unless
    allowMixedGPUs. vLLM only."""
    allow_mixed_gpus: bool = Field(default=False, alias="allowMixedGPUs")
    """Permit a tensor-parallel group over mismatched GPUs; every rank is then sized to the smallest."""
    gpu_selector: GPUSelector | None = Field(default=None, alias="gpuSelector")
    image: str | None = Field(default=None, min_length=1)
    """Server image; default the operator's image for the engine."""
    env: list[EnvVar] = Field(default_factory=list, max_length=128)
    resources: Resources | None = None
    storage: Storage | None = None
    tolerations: list[dict[str, Any]] = Field(default_factory=list, max_length=64)
    """Pod tolerations, e.g. for GPU nodes tainted nvidia.com/gpu:NoSchedule."""
    vllm: VLLMOptions | None = None
    ollama: OllamaOptions | None = None

    @model_validator(mode="after")
    def _spec_rules(self) -> LLMDeploymentSpec:
        names = [m.name for m in self.models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:  # the CRD enforces this with x-kubernetes-list-type: map
            raise ValueError(f"models: {', '.join(duplicates)} listed more than once")
        return check_scope("spec", self)  # type: ignore[no-any-return]

    @property
    def resolved_engine(self) -> ResolvedEngine:
        return resolve_engine(self.engine, [m.name for m in self.models])

    @property
    def vllm_options(self) -> VLLMOptions:
        return self.vllm or _DEFAULT_VLLM

    @property
    def ollama_options(self) -> OllamaOptions:
        return self.ollama or _DEFAULT_OLLAMA


_DEFAULT_VLLM = VLLMOptions()  # frozen models: one default serves every spec without its own
_DEFAULT_OLLAMA = OllamaOptions()


def resolve_engine(engine: Engine, model_names: list[str]) -> ResolvedEngine:
    """What ``engine: auto`` means: vLLM for exactly one Hugging Face repo id, else Ollama."""
    if engine != "auto":
        return engine
    if len(model_names) == 1 and _HF_REPO_RE.match(model_names[0]):
        return "vllm"
    return "ollama"


class ObjectMeta(BaseModel):
    """The part of metadata gpupin reads; the rest is kept but ignored."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, alias_generator=to_camel)

    name: str = Field(min_length=1, max_length=253, pattern=OBJECT_NAME_PATTERN)
    namespace: str = Field(default="default", min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)
    generation: int | None = None
    uid: str | None = None


CONDITION_TYPE_PATTERN = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
CONDITION_MESSAGE_MAX = 32768
"""metav1.Condition's limit on a message, in characters: a longer one is cut (the API server
would refuse the whole status)."""


class Condition(ApiModel):
    """A Kubernetes condition, with metav1.Condition's schema: the same required fields, patterns
    and limits, so that tools that read conditions (kubectl wait, kstatus) read gpupin's."""

    type: str = Field(max_length=316, pattern=CONDITION_TYPE_PATTERN)
    """Placed, Ready, Degraded or EndpointReady."""
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(min_length=1, max_length=1024, pattern=CONDITION_REASON_PATTERN)
    """Why the condition is as it is, in CamelCase (e.g. InsufficientGPUs); scripts match on it."""
    message: str = Field(max_length=CONDITION_MESSAGE_MAX)
    """What happened, for people; may be empty."""
    last_transition_time: str = Field(json_schema_extra={"format": "date-time"})
    """When the status last changed (RFC 3339, UTC)."""
    observed_generation: int | None = Field(default=None, ge=0, json_schema_extra={"format": "int64"})
    """The spec's metadata.generation the condition was set for."""


class GPUStatus(ApiModel):
    index: int
    uuid: str
    name: str
    vram_bytes: int | None = None
    """Memory this placement reserves on the GPU, in bytes (absent when a pod's record of it is
    unreadable: the GPU then counts as wholly held)."""


class PlacementStatus(ApiModel):
    """A pod of the deployment: planned, or of an earlier spec and still running."""

    pod: str
    node: str
    models: list[str]
    gpus: list[GPUStatus]
    state: Literal["Ready", "Starting", "Pending", "Outdated"] | None = None
    """Ready or Starting: the pod runs the current spec; Pending: planned, not created yet (its GPUs
    are being freed, or the rollout has not reached it); Outdated: a pod of an earlier spec or
    placement that keeps serving until it is replaced."""


class ModelSizingStatus(ApiModel):
    """How one model was sized, and where the figures came from."""

    name: str
    vram: str
    """The estimate on one GPU (or models[].vram), e.g. 9.8Gi."""
    source: Literal["spec", "data", "metadata", "name"]
    """spec: models[].vram; data: gpupin's or the cluster's model data; metadata: read from the
    model's registry; name: the parameter count in its name (an estimate to check)."""
    origin: str
    """Where the figures were read, in words (the registry and repo, the data file, the field)."""
    read_at: str | None = None
    """When the metadata was read from the registry (RFC 3339)."""


class LLMDeploymentStatus(ApiModel):
    """Written by the operator; observedGeneration says which spec it describes."""

    observed_generation: int | None = None
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    placements: list[PlacementStatus] = Field(default_factory=list)
    sizing: list[ModelSizingStatus] = Field(default_factory=list)
    """How each model was sized and from what, so a surprising plan can be checked."""
    engine: str | None = None
    """The engine serving the deployment (auto resolved)."""
    model_list: str | None = Field(default=None, alias="models")
    """The spec's models, comma-separated (for kubectl get), followed by "(serving …)" with the
    models that pods of an earlier spec still serve."""
    gpus: int | None = None
    """GPUs held by the deployment's pods (planned pods not created yet do not count)."""
    ready: str | None = None
    """Pods ready to serve the current spec's models / pods wanted, e.g. 2/2 (during a rollout,
    Ready pods of the earlier spec that serve the same models count)."""
    reason: str | None = None
    """The Placed condition's reason."""
    message: str | None = None
    """What happened and, when something is wrong, what to do about it."""
    endpoint: str | None = None
    """The one address that serves every model of the deployment by name (its router's Service,
    ``name.namespace.svc:port``); absent without a router (vLLM: the deployment's Service)."""
    replicas: int | None = None
    """Replicas placed (for the scale subresource)."""
    selector: str | None = None
    """Label selector of the deployment's pods (for the scale subresource)."""


class LLMDeployment(BaseModel):
    """An LLMDeployment object as read from a file or the API."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    api_version: Literal["gpupin.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["LLMDeployment"]
    metadata: ObjectMeta
    spec: LLMDeploymentSpec
    status: LLMDeploymentStatus | None = None

    @property
    def key(self) -> str:
        return f"{self.metadata.namespace}/{self.metadata.name}"
