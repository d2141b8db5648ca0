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
import re
from collections.abc import Sequence
from typing import Any

from gpupin import naming, reasons
from gpupin.api.v1alpha1 import LLMDeployment, LLMDeploymentSpec, ModelRef
from gpupin.engines.base import MODELS_PATH, Engine, EnginePod, security_context, service
from gpupin.inventory import short_name
from gpupin.kernel.context import PlanContext
from gpupin.kernel.eligibility import ComputeRequirement
from gpupin.kernel.groups import GroupPlacer, GroupRequest, PlanWarning
from gpupin.kernel.state import Slot
from gpupin.placement import LaunchSettings, Placement
from gpupin.quantity import GiB, format_gib, format_quantity, parse_bytes
from gpupin.sizing import Estimate, ModelFacts, kv_per_token_guess, parameters_from_name

VLLM_MIN_CC = (7, 5)
BF16_MIN_CC = (8, 0)
VLLM_RANK_OVERHEAD = 2 * GiB
VLLM_ASSUMED_CONTEXT = 8192
"""--max-model-len when neither the spec nor the model data gives one; rendered into the pod, so
what runs is what was planned."""
DTYPE_BYTES = {"bfloat16": 2.0, "float16": 2.0, "half": 2.0, "float32": 4.0}
# Hugging Face repos whose name says they are quantized. AWQ/GPTQ keep embeddings in 16 bit,
# so small models come out near 0.7 bytes per parameter.
HF_QUANT_HINTS: tuple[tuple[re.Pattern[str], float, str], ...] = (
    (re.compile(r"(awq|gptq|int4|4bit|bnb-4bit|w4a16)", re.I), 0.7, "4-bit"),
    (re.compile(r"(fp8|int8|8bit|w8a8|w8a16)", re.I), 1.1, "8-bit"),
)


class VLLM(Engine):
    name = "vllm"
    display_name = "vLLM"
    default_image = "vllm/vllm-openai:v0.33.0"
    port = 8000
    owns_gpus = True
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
        dtype = options.dtype if options.dtype != "auto" else (facts.dtype if facts else "bfloat16")
        bytes_per_param = DTYPE_BYTES.get(dtype, 2.0)
        label = "float16" if dtype == "half" else dtype
        for pattern, quant_bytes, quant_label in HF_QUANT_HINTS:
            if pattern.search(name):
                bytes_per_param, label = quant_bytes, quant_label
                break
        assumed = False
        if options.max_model_len is not None:
            context = options.max_model_len
        elif facts is not None:
            context = facts.context_length
        else:
            context, assumed = VLLM_ASSUMED_CONTEXT, True
        kv_element = 2.0 if dtype != "float32" else 4.0
        kv_per_token = facts.kv_bytes_per_token(kv_element) if facts else kv_per_token_guess(parameters)
        return Estimate(
            model=name,
            source="data" if facts else "name",
            weights_bytes=int(parameters * bytes_per_param),
            kv_bytes=math.ceil(kv_per_token * context),
            overhead_per_gpu=VLLM_RANK_OVERHEAD,
            weights_label=label,
            context_tokens=context,
            facts=facts,
            assumed_context=assumed,
        )

    def compute_requirement(self, spec: LLMDeploymentSpec) -> ComputeRequirement:
        if spec.vllm_options.dtype == "bfloat16":
            return ComputeRequirement(
                BF16_MIN_CC,
                "vllm.dtype bfloat16 needs compute capability 8.0 or newer",
                "Use vllm.dtype auto (float16 on older GPUs) or engine: ollama, which runs on older GPUs, "
                "or select newer GPUs",
            )
        return ComputeRequirement(
            VLLM_MIN_CC,
            "vLLM needs compute capability 7.5 or newer",
            "Use engine: ollama, which runs on older GPUs, or select newer GPUs",
        )

    def place(
        self, ctx: PlanContext, spec: LLMDeploymentSpec, estimates: Sequence[Estimate]
    ) -> tuple[list[Placement], str, str]:
        est = estimates[0]
        options = spec.vllm_options
        prefers_bf16 = options.dtype == "auto" and (est.facts is None or est.facts.dtype == "bfloat16")
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
                return LaunchSettings(max_model_len=max_model_len, dtype="half"), [warning]
            return LaunchSettings(max_model_len=max_model_len, dtype=explicit_dtype), []

        def smaller_options() -> list[str]:
            options_ = ["a quantized variant (AWQ, GPTQ, FP8)"]
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
        return EnginePod(container=container, volumes=volumes)

    def services(
        self, deployment: LLMDeployment, labels: dict[str, str], selector: dict[str, str]
    ) -> list[dict[str, Any]]:
        name = naming.deployment_service_name(deployment.metadata.name)
        return [service(name, deployment.metadata.namespace, labels, selector, self.port)]
