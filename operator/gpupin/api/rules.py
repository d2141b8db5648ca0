"""Rules that need only the spec: once as CEL for the API server, once as Python for ``gpupin plan``.

``scope`` is the schema node a rule hangs on (spec, ollama, vllm, storage, env, resources); the
models of :mod:`gpupin.api.v1alpha1` call :func:`check_scope` for their node, and
:mod:`gpupin.api.crdgen` attaches the CEL to the same node of the CRD. A test checks that the two
agree on generated specs. This module imports no model: rules read the node they are given.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# A Hugging Face repo id: exactly one slash, no tag. `auto` picks vLLM for these.
HF_REPO_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9._-]+$"


@dataclass(frozen=True)
class SpecRule:
    """A rule that needs only the spec: CEL for the API server, Python for `gpupin plan`.

    ``scope`` is the schema node the rule hangs on (spec, ollama, storage, rollout, env, resources);
    ``cel`` sees that node as ``self`` and ``check`` receives the same node as a model.
    """

    scope: str
    field: str
    cel: str
    message: str
    check: Callable[[Any], bool]
    message_expression: str | None = None
    """CEL for the API server's message (it may name the offending value), with ``describe`` its
    Python twin; ``message`` stays the static fallback."""
    describe: Callable[[Any], str] | None = None


_AUTO_PICKS_VLLM = f"size(self.models) == 1 && self.models[0].name.matches('{HF_REPO_PATTERN}')"
# CEL twins of LLMDeploymentSpec.resolved_engine, one per engine: each says "resolves to X" in
# full, so a rule stays right when another engine joins the enum (never "not vLLM, so Ollama").
_VLLM = f"(self.engine == 'vllm' || (self.engine == 'auto' && {_AUTO_PICKS_VLLM}))"
_OLLAMA = f"(self.engine == 'ollama' || (self.engine == 'auto' && !({_AUTO_PICKS_VLLM})))"

# The flags gpupin renders for vLLM (gpupin.engines.vllm), with vLLM's aliases (-tp) and the underscore
# spelling its FlexibleArgumentParser also accepts (vllm/utils/argparse_utils.py, 0.33.0).
VLLM_RESERVED_ARG_PATTERN = (
    r"^(--(model|tensor[-_]parallel[-_]size|max[-_]model[-_]len|gpu[-_]memory[-_]utilization|dtype"
    r"|served[-_]model[-_]name|host|port)|-tp)(=.*)?$"
)
_VLLM_RESERVED_ARG_RE = re.compile(VLLM_RESERVED_ARG_PATTERN)

# Environment variables a deployment may not set. NVIDIA_* and CUDA_* choose the GPUs a container
# sees (NVIDIA_VISIBLE_DEVICES=all would reach every GPU of the node, another tenant's included) or
# how CUDA numbers them; ROCR_/HIP_VISIBLE_DEVICES and GPU_DEVICE_ORDINAL are Ollama's other GPU
# selectors; the rest are what gpupin sets from spec fields and sizes the pod by (Ollama's settings,
# the model caches' path). gpupin's own values also come last in the container (Kubernetes keeps the
# last of duplicate names), so an object stored before this rule still cannot override them.
RESERVED_ENV_PATTERN = (
    r"^((NVIDIA|CUDA)_.*|ROCR_VISIBLE_DEVICES|HIP_VISIBLE_DEVICES|GPU_DEVICE_ORDINAL|HF_HOME"
    r"|OLLAMA_(HOST|MODELS|KEEP_ALIVE|CONTEXT_LENGTH|NUM_PARALLEL|MAX_LOADED_MODELS|FLASH_ATTENTION"
    r"|KV_CACHE_TYPE))$"
)
_RESERVED_ENV_RE = re.compile(RESERVED_ENV_PATTERN)


_RESERVED_ENV_MESSAGE = (
    "NVIDIA_* and CUDA_* variables choose the GPUs a container sees, as do ROCR_VISIBLE_DEVICES, "
    "HIP_VISIBLE_DEVICES and GPU_DEVICE_ORDINAL; HF_HOME and OLLAMA_HOST, _MODELS, _KEEP_ALIVE, "
    "_CONTEXT_LENGTH, _NUM_PARALLEL, _MAX_LOADED_MODELS, _FLASH_ATTENTION, _KV_CACHE_TYPE are set from "
    "the spec: GPUs are chosen by models, tensorParallelSize and gpuSelector, Ollama's settings by "
    "spec.ollama (keepAlive, contextLength, numParallel, flashAttention, kvCacheType)"
)


@functools.lru_cache(maxsize=4096)  # asked for every env entry of every container rendered
def reserved_env_name(name: str) -> bool:
    """Whether ``name`` is an environment variable gpupin sets and a deployment may not."""
    return _RESERVED_ENV_RE.match(name) is not None


SPEC_RULES: tuple[SpecRule, ...] = (
    SpecRule(
        scope="spec",
        field="spec.models",
        cel=f"!{_VLLM} || size(self.models) == 1",
        message="vLLM serves exactly one model; list one, or use engine: ollama to serve several",
        check=lambda s: s.resolved_engine != "vllm" or len(s.models) == 1,
    ),
    SpecRule(
        scope="spec",
        field="spec.tensorParallelSize",
        cel=f"self.tensorParallelSize == 1 || {_VLLM}",
        message="tensorParallelSize is for vLLM only; Ollama spreads a model over GPUs by itself",
        check=lambda s: s.tensor_parallel_size == 1 or s.resolved_engine == "vllm",
    ),
    SpecRule(
        scope="spec",
        field="spec.vllm",
        cel=f"!has(self.vllm) || {_VLLM}",
        message="vllm settings need engine: vllm (auto picks vLLM only for one Hugging Face repo id)",
        check=lambda s: s.vllm is None or s.resolved_engine == "vllm",
    ),
    SpecRule(
        scope="spec",
        field="spec.ollama",
        cel=f"!has(self.ollama) || {_OLLAMA}",
        message="ollama settings need engine: ollama",
        check=lambda s: s.ollama is None or s.resolved_engine == "ollama",
    ),
    SpecRule(
        scope="ollama",
        field="spec.ollama.kvCacheType",
        cel="self.kvCacheType == 'f16' || (has(self.flashAttention) && self.flashAttention)",
        message="a quantized KV cache (q8_0, q4_0) needs flashAttention: true",
        check=lambda o: o.kv_cache_type == "f16" or o.flash_attention is True,
    ),
    SpecRule(
        scope="vllm",
        field="spec.vllm.args",
        cel=f"!has(self.args) || self.args.all(a, !a.matches('{VLLM_RESERVED_ARG_PATTERN}'))",
        message="vllm.args must not repeat a flag gpupin sets (the model, --tensor-parallel-size, "
        "--max-model-len, --gpu-memory-utilization, --dtype, --served-model-name, --host, --port): vLLM "
        "keeps the last one, which would undo the plan; use tensorParallelSize and vllm.maxModelLen, "
        "gpuMemoryUtilization and dtype",
        check=lambda v: not any(_VLLM_RESERVED_ARG_RE.match(a) for a in v.args),
    ),
    SpecRule(
        scope="storage",
        field="spec.storage",
        cel="!has(self.existingClaim) || (!has(self.storageClassName) && !has(self.size))",
        message="existingClaim mounts a claim you made; it takes neither storageClassName nor size",
        check=lambda st: st.existing_claim is None or (st.storage_class_name is None and st.size is None),
    ),
    SpecRule(
        scope="storage",
        field="spec.storage",
        cel="!has(self.storageClassName) || has(self.size)",
        message="storageClassName needs size: the size of each pod's model cache volume",
        check=lambda st: st.storage_class_name is None or st.size is not None,
    ),
    SpecRule(
        scope="rollout",
        field="spec.rollout",
        cel="(has(self.maxUnavailable) ? self.maxUnavailable : 1) > 0 || (has(self.maxSurge) ? self.maxSurge : 1) > 0",
        message="maxUnavailable and maxSurge cannot both be 0: a pod could then never be replaced",
        check=lambda r: r.max_unavailable > 0 or r.max_surge > 0,
    ),
    SpecRule(
        scope="env",
        field="spec.env",
        cel=f"!self.name.matches('{RESERVED_ENV_PATTERN}')",
        message=_RESERVED_ENV_MESSAGE,
        check=lambda e: not reserved_env_name(e.name),
        message_expression=f'self.name + " is gpupin\'s to set: {_RESERVED_ENV_MESSAGE}"',
        describe=lambda e: f"{e.name} is gpupin's to set: {_RESERVED_ENV_MESSAGE}",
    ),
    SpecRule(
        scope="env",
        field="spec.env",
        cel="!(has(self.value) && has(self.valueFrom))",
        message="an env var takes value or valueFrom, not both",
        check=lambda e: not (e.value is not None and e.value_from is not None),
    ),
    SpecRule(
        scope="resources",
        field="spec.resources",
        cel="(!has(self.limits) || !('nvidia.com/gpu' in self.limits))"
        " && (!has(self.requests) || !('nvidia.com/gpu' in self.requests))",
        message="nvidia.com/gpu is gpupin's to set: choose GPUs with models, tensorParallelSize and gpuSelector",
        check=lambda r: (
            "nvidia.com/gpu" not in (r.limits or {}) and "nvidia.com/gpu" not in (r.requests or {})
        ),
    ),
)


def _scoped_rules(scope: str) -> list[SpecRule]:
    return [rule for rule in SPEC_RULES if rule.scope == scope]


def check_scope(scope: str, node: Any) -> Any:
    """``node`` unchanged, or ValueError with the message of every rule of ``scope`` it breaks."""
    broken = [rule for rule in _scoped_rules(scope) if not rule.check(node)]
    if broken:
        raise ValueError("; ".join(rule.describe(node) if rule.describe else rule.message for rule in broken))
    return node
