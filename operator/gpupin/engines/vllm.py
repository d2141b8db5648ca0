"""vLLM: one model per pod, sharded over ``tensorParallelSize`` GPUs that the pod owns.

- Sizing: parameters × bytes of the dtype (or ~0.7 / ~1.1 bytes for repos named AWQ/GPTQ/INT4 or
  FP8/INT8) + a KV cache for one sequence of ``max_model_len`` tokens (vLLM refuses to start
  without room for one) + 2 GiB per rank (CUDA context, activation peak, CUDA graphs: vLLM's
  logs show 1.5–3 GiB).
- Placement: exclusive tensor-parallel groups (:mod:`gpupin.kernel.groups`); vLLM takes
  ``gpuMemoryUtilization`` of each GPU, and sizes every rank to the smallest GPU of a group.
- Compute capability 7.5 or newer (8.0 for bfloat16); a bfloat16 model on older GPUs is served
  as float16 (``--dtype half``), which the plan says.
- Launch settings: ``--max-model-len`` when the spec gave none and gpupin assumed one, ``--dtype``.
- Pod: ``vllm serve`` with /health probes (/v1 answers 401 with an API key); /dev/shm in memory
  for tensor parallel; one Service per deployment.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from gpupin import naming, reasons
from gpupin.api.v1alpha1 import LLMDeployment, LLMDeploymentSpec, ModelRef
from gpupin.engines.base import MODELS_PATH, Engine, EnginePod, security_context, service
from gpupin.engines.vllm_rules import (
    GGUF_NAME,
    QUANT_MIN_CC,
    arch_name,
    gguf_message,
    name_weight_bytes,
    no_float16,
    quantization_from_name,
    quantization_of,
    tensor_parallel_problem,
)
from gpupin.inventory import short_name
from gpupin.kernel.context import PlanContext
from gpupin.kernel.eligibility import ComputeRequirement, Refusal
from gpupin.kernel.groups import GroupPlacer, GroupRequest, PlanWarning
from gpupin.kernel.state import Slot
from gpupin.modelfacts import DTYPE_BYTES
from gpupin.placement import LaunchSettings, Placement
from gpupin.quantity import GiB, MiB, format_gib, format_quantity, parse_bytes
from gpupin.sizing import Estimate, ModelFacts, kv_per_token_guess, parameters_from_name, source_of

VLLM_MIN_CC = (7, 5)
BF16_MIN_CC = (8, 0)
VLLM_RANK_OVERHEAD = 2 * GiB
VLLM_CONTEXT_OVERHEAD = 512 * MiB
VLLM_CUDA_GRAPHS = 512 * MiB
VLLM_BATCH_TOKENS = 2048
VLLM_ASSUMED_CONTEXT = 8192
"""--max-model-len when neither the spec nor the model data gives one; rendered into the pod, so
what runs is what was planned."""


class VLLM(Engine):
    name = "vllm"
    display_name = "vLLM"
    default_image = "vllm/vllm-openai:v0.33.0"
    port = 8000
    owns_gpus = True
    oldest_compute_capability = VLLM_MIN_CC
    # before 0.33 vLLM converts each CUDA_VISIBLE_DEVICES entry with int() and crashes on a
    # GPU-… UUID (vllm-project/vllm#20939)
    cuda_visible_uuids = False
    naming_scheme = "huggingface"

    def size(self, model: ModelRef, spec: LLMDeploymentSpec, facts: ModelFacts | None) -> Estimate | None:
        name = model.name
        options = spec.vllm_options
        parameters = facts.parameters if facts else parameters_from_name(name)
        if parameters is None:
            return None
        dtype = served_dtype(options.dtype, facts)
        assumed = False
        if options.max_model_len is not None:
            context = options.max_model_len
        elif facts is not None and facts.context_length:
            context = facts.context_length
        else:
            context, assumed = VLLM_ASSUMED_CONTEXT, True
        kv_element = 4.0 if dtype == "float32" else 2.0
        if facts is not None:
            weights, label = _checkpoint_weights(facts, dtype)
            kv = facts.kv_bytes(context, 1, kv_element)
        else:
            weights, label = int(parameters * DTYPE_BYTES.get(dtype, 2.0)), dtype
            method = quantization_from_name(name)
            if method is not None:
                per, label = name_weight_bytes(method)
                weights = int(parameters * per)
            kv = kv_per_token_guess(parameters) * context * kv_element / 2
        return Estimate(
            model=name,
            source=source_of(facts),
            weights_bytes=weights,
            kv_bytes=math.ceil(kv),
            overhead_per_gpu=runtime_bytes(facts, spec.tensor_parallel_size),
            weights_label=label,
            context_tokens=context,
            facts=facts,
            assumed_context=assumed,
            kv_shards_max=(1 if facts.kv_lora_rank else facts.kv_heads) if facts else 0,
        )

    def compute_requirement(
        self, spec: LLMDeploymentSpec, estimates: Sequence[Estimate] = ()
    ) -> ComputeRequirement:
        est = estimates[0] if estimates else None
        quant = quantization_of(est) if est else None
        bf16_only = est is not None and no_float16(est)
        dtype = spec.vllm_options.dtype
        if est is not None and quant in QUANT_MIN_CC:
            cc = QUANT_MIN_CC[quant]
            if bf16_only:  # no float16 for it, and quantized kernels take 16-bit activations only
                cc = max(cc, BF16_MIN_CC)
            if cc > VLLM_MIN_CC:
                return ComputeRequirement(
                    cc,
                    f"{est.model} is {quant.upper()}-quantized"
                    + (f" {arch_name(est)}, which vLLM runs only in bfloat16" if bf16_only else "")
                    + f": vLLM 0.33 needs compute capability {cc[0]}.{cc[1]} or newer for it",
                    "Select GPUs of that capability, or use engine: ollama with a GGUF of the model, which "
                    "runs on older GPUs",
                )
        if est is not None and (dtype == "bfloat16" or (bf16_only and dtype == "auto")):
            why = (
                "vllm.dtype bfloat16 needs compute capability 8.0 or newer"
                if dtype == "bfloat16"
                else f"{est.model} ({arch_name(est)}) does not run in float16 on vLLM, and bfloat16 "
                "needs compute capability 8.0 or newer"
            )
            return ComputeRequirement(
                BF16_MIN_CC,
                why,
                "Use engine: ollama, which runs on older GPUs, select newer GPUs, or vllm.dtype float32 "
                "(twice the weights' memory)",
            )
        return ComputeRequirement(
            VLLM_MIN_CC,
            "vLLM needs compute capability 7.5 or newer",
            "Use engine: ollama, which runs on older GPUs, or select newer GPUs",
        )

    def check_model(self, spec: LLMDeploymentSpec, est: Estimate) -> None:
        """Refuse what vLLM 0.33 would refuse at start-up: an Ollama name (``InvalidSpec``); a GGUF
        repo, a quantization it has no kernels for in its image, a dtype the model or its kernels
        do not take, ``maxModelLen`` above the model's context (``UnsupportedModel``)."""
        facts, name = est.facts, est.model
        if (facts is not None and facts.gguf_repo) or (facts is None and GGUF_NAME.search(name)):
            raise Refusal(reasons.UNSUPPORTED_MODEL, gguf_message(name))
        if ":" in name:  # Hugging Face repo ids have no tag; Ollama names do
            instead = f" (for this model: {facts.hf_names[0]})" if facts and facts.hf_names else ""
            raise Refusal(
                reasons.INVALID_SPEC,
                f"{name} is an Ollama name; vLLM loads Hugging Face repos, org/name{instead}. Or use engine: ollama",
            )
        quant = quantization_of(est)
        dtype = spec.vllm_options.dtype
        if quant and quant.startswith("bitsandbytes"):
            raise Refusal(
                reasons.UNSUPPORTED_MODEL,
                f"{name} is bitsandbytes-quantized, which vLLM 0.33 loads only with a plugin the "
                "vllm/vllm-openai image does not have. Use an AWQ, GPTQ or FP8 variant, or engine: ollama with a GGUF",
            )
        if dtype in ("half", "float16") and no_float16(est):
            raise Refusal(
                reasons.UNSUPPORTED_MODEL,
                f"{name} ({arch_name(est)}) does not run in float16 on vLLM (numerical instability, vLLM "
                "refuses it). Use vllm.dtype auto or bfloat16 (compute capability 8.0+)",
            )
        if quant and dtype == "float32":
            raise Refusal(
                reasons.UNSUPPORTED_MODEL,
                f"{name} is {quant.upper()}-quantized: its kernels take 16-bit activations, not float32. "
                "Use vllm.dtype auto",
            )
        if quant == "mxfp4" and dtype not in ("auto", "bfloat16"):
            raise Refusal(
                reasons.UNSUPPORTED_MODEL,
                f"{name} is MXFP4-quantized: vLLM 0.33 runs it with bfloat16 activations only. Use vllm.dtype auto",
            )
        requested = spec.vllm_options.max_model_len
        if facts is None or not requested or not facts.context_length or requested <= facts.context_length:
            return
        allowed = any(
            v.name == "VLLM_ALLOW_LONG_MAX_MODEL_LEN" and (v.value or "").lower() in ("1", "true")
            for v in spec.env
        )
        args = " ".join(spec.vllm_options.args)
        # the user extends the context (YaRN and the like) through vLLM's own flags
        allowed = allowed or "--rope-scaling" in args or ("--hf-overrides" in args and "rope_scaling" in args)
        if not allowed:
            raise Refusal(
                reasons.UNSUPPORTED_MODEL,
                f"vllm.maxModelLen {requested} is longer than the {facts.context_length} tokens {name} was "
                f"trained for; vLLM refuses to start. Set maxModelLen ≤ {facts.context_length}, extend the "
                "context with vllm.args --hf-overrides (a rope_scaling such as YaRN, as the model card says), "
                "or set env VLLM_ALLOW_LONG_MAX_MODEL_LEN=1 if the model is known to extrapolate",
            )

    def place(
        self, ctx: PlanContext, spec: LLMDeploymentSpec, estimates: Sequence[Estimate]
    ) -> tuple[list[Placement], str, str]:
        est = estimates[0]
        options = spec.vllm_options
        self.check_model(spec, est)
        quantized = quantization_of(est) is not None
        prefers_bf16 = (
            options.dtype == "auto" and not quantized and (est.facts is None or est.facts.dtype == "bfloat16")
        )
        runner = "pooling" if est.facts is not None and est.facts.embedding else None
        explicit_dtype = options.dtype if options.dtype != "auto" else None
        max_model_len = options.max_model_len or (est.context_tokens if est.assumed_context else None)

        def launch(group: Sequence[Slot]) -> tuple[LaunchSettings, list[PlanWarning]]:
            if prefers_bf16 and any(s.cc < BF16_MIN_CC for s in group):
                old = sorted({short_name(s.gpu.name) for s in group if s.cc < BF16_MIN_CC})
                warning = (
                    reasons.DTYPE_FALLBACK,
                    f"{est.model} is bfloat16 but {', '.join(old)} (compute capability below 8.0) has no "
                    "bfloat16: it is served as float16 (--dtype half)",
                )
                return LaunchSettings(max_model_len=max_model_len, dtype="half", runner=runner), [warning]
            return LaunchSettings(max_model_len=max_model_len, dtype=explicit_dtype, runner=runner), []

        def smaller_options() -> list[str]:
            options_ = [] if quantized else ["a quantized variant (AWQ, GPTQ, FP8)"]
            if est.facts is not None and est.facts.ollama_names:
                options_.append(
                    f"engine: ollama with {est.facts.ollama_names[0]} ({est.facts.ollama_quantization}, "
                    f"{format_gib(est.facts.ollama_weights_bytes)} of weights)"
                )
            if est.kv_bytes > est.weights_bytes / 4:
                options_.append("a smaller vllm.maxModelLen (the KV cache grows with it)")
            return options_

        request = GroupRequest(
            estimate=est,
            tensor_parallel=spec.tensor_parallel_size,
            replicas=spec.replicas,
            utilization=options.gpu_memory_utilization,
            utilization_setting="gpuMemoryUtilization",
            allow_mixed=spec.allow_mixed_gpus,
            engine=self.display_name,
            preferred_min_cc=BF16_MIN_CC if prefers_bf16 else None,
            launch=launch,
            smaller_options=smaller_options,
            alternatives=("engine: ollama, which uses each card's full memory (one server per GPU)",),
            tensor_parallel_problem=lambda size: tensor_parallel_problem(est.facts, size),
        )
        return GroupPlacer(ctx, request).run()

    def pod(self, spec: LLMDeploymentSpec, placement: Placement, image: str, require_gpu: bool) -> EnginePod:
        options = spec.vllm_options
        model = placement.models[0]
        args = [
            model,
            "--served-model-name",
            model,
            "--host",
            "0.0.0.0",
            "--port",
            str(self.port),
            "--gpu-memory-utilization",
            str(options.gpu_memory_utilization),
            "--tensor-parallel-size",
            str(spec.tensor_parallel_size),
        ]
        if placement.launch.max_model_len:
            args += ["--max-model-len", str(placement.launch.max_model_len)]
        if placement.launch.dtype:
            args += ["--dtype", placement.launch.dtype]
        if placement.launch.runner:
            args += ["--runner", placement.launch.runner]
        args += list(options.args)
        mounts = [{"name": "models", "mountPath": MODELS_PATH}]
        volumes = []
        if spec.tensor_parallel_size > 1:  # NCCL needs more shared memory than a container's 64 MiB
            mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
            shm = format_quantity(parse_bytes(options.shm_size))
            volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm}})
        container: dict[str, Any] = {
            "name": "vllm",
            "image": image,
            "command": ["vllm", "serve"],
            "args": args,
            "ports": [{"name": "http", "containerPort": self.port, "protocol": "TCP"}],
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
            "securityContext": security_context(),
        }
        # Runs as the image's user, root: the vllm/vllm-openai image installs into /usr/local and
        # writes its caches under HOME=/root (torch.compile, Triton, FlashInfer JIT kernels); under
        # another uid those need HOME and each cache moved, and torch's inductor may name its cache
        # after the user (getpass), which fails for a uid without a passwd entry. Not checked against
        # a running image here (no GPU in the tests), so left as the image has it. The container
        # keeps no capabilities and cannot escalate (security_context).
        return EnginePod(container=container, volumes=volumes)

    def services(
        self, deployment: LLMDeployment, labels: dict[str, str], selector: dict[str, str]
    ) -> list[dict[str, Any]]:
        name = naming.deployment_service_name(deployment.metadata.name)
        return [service(name, deployment.metadata.namespace, labels, selector, self.port)]


def served_dtype(requested: str, facts: ModelFacts | None) -> str:
    """The dtype vLLM computes in: the spec's, else the checkpoint's (a float32 checkpoint is
    served in 16 bit under ``auto``, as vLLM's ``_get_and_verify_dtype`` does)."""
    if requested != "auto":
        return "float16" if requested == "half" else requested
    if facts is None or facts.dtype not in DTYPE_BYTES:
        return "bfloat16"
    return "bfloat16" if facts.dtype == "float32" else facts.dtype


def _checkpoint_weights(facts: ModelFacts, dtype: str) -> tuple[int, str]:
    """(bytes, label) of the weights vLLM loads: a quantized checkpoint as stored; an unquantized
    one converted to the served dtype (exact when the safetensors header was read)."""
    if facts.quantization:
        return facts.checkpoint_bytes(), facts.quantization.upper()
    stored = DTYPE_BYTES.get(facts.dtype, 2.0)
    served = DTYPE_BYTES.get(dtype, 2.0)
    return int(facts.checkpoint_bytes() * served / stored), dtype


def runtime_bytes(facts: ModelFacts | None, tensor_parallel: int) -> int:
    """Per-rank bytes beside weights and KV cache: CUDA context and non-torch memory, the
    activation peak of a profiling batch, CUDA graphs. Scaled by the model's width (the
    activation peak grows with hidden size and vocabulary) so a small model is not dominated by a
    large model's constant; 2 GiB when the shape is unknown."""
    if facts is None or not facts.hidden_size:
        return VLLM_RANK_OVERHEAD
    activations = VLLM_BATCH_TOKENS * (facts.hidden_size * 24 + facts.vocab_size * 4 // 16) // tensor_parallel
    return VLLM_CONTEXT_OVERHEAD + VLLM_CUDA_GRAPHS + activations
