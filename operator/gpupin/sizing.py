"""How much GPU memory a model needs, per engine.

Memory = weights + KV cache + runtime overhead:

- weights: parameters × bytes per parameter of the dtype or quantization (Ollama: the
  GGUF download size when the model data knows it);
- KV cache: 2 × layers × kv_heads × head_dim × bytes per element × tokens. Ollama keeps
  ``context × numParallel`` tokens per loaded model; vLLM must hold at least one
  sequence of ``max_model_len`` tokens or it refuses to start;
- overhead per GPU: Ollama ~457 MiB of CUDA context per runner plus its compute graph
  (4 × min(context, 512) × (hidden + vocab) bytes, as Ollama's own estimator did);
  vLLM 2 GiB per rank (CUDA context, activation peak, CUDA graphs: vLLM's logs show
  1.5–3 GiB).

Sources, in order: ``models[].vram`` from the spec; the package's model data
(``data/models.yaml``); the size in the name (``14b``, ``7B``) at the engine's default
precision. A model none of them can size gets a :class:`SizingError` that tells the
user to set ``vram``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal

import yaml

from gpupin.api.v1alpha1 import LLMDeploymentSpec, ModelRef, ResolvedEngine
from gpupin.quantity import GiB, MiB, format_gb, format_gib, parse_bytes

OLLAMA_CUDA_OVERHEAD = 457 * MiB
OLLAMA_BATCH = 512
OLLAMA_UNKNOWN_GRAPH = 512 * MiB
VLLM_RANK_OVERHEAD = 2 * GiB
# vLLM's --max-model-len when neither the spec nor the model data gives one. gpupin then
# renders it into the pod, so what runs is what was planned.
VLLM_ASSUMED_CONTEXT = 8192

# Bytes per parameter of GGUF quantizations, including their block scales.
OLLAMA_QUANT_BYTES: dict[str, float] = {
    "q2_k": 0.35,
    "q3_k_s": 0.46,
    "q3_k_m": 0.49,
    "q3_k_l": 0.53,
    "q4_0": 0.56,
    "q4_1": 0.63,
    "q4_k_s": 0.58,
    "q4_k_m": 0.61,
    "q5_0": 0.69,
    "q5_1": 0.75,
    "q5_k_s": 0.69,
    "q5_k_m": 0.71,
    "q6_k": 0.82,
    "q8_0": 1.06,
    "f16": 2.0,
    "fp16": 2.0,
    "bf16": 2.0,
}
OLLAMA_DEFAULT_QUANT = "q4_k_m"
KV_CACHE_BYTES = {"f16": 2.0, "q8_0": 1.0, "q4_0": 0.5}

DTYPE_BYTES = {"bfloat16": 2.0, "float16": 2.0, "half": 2.0, "float32": 4.0}
# Hugging Face repos whose name says they are quantized. AWQ/GPTQ keep embeddings in 16 bit,
# so small models come out near 0.7 bytes per parameter.
HF_QUANT_HINTS: tuple[tuple[re.Pattern[str], float, str], ...] = (
    (re.compile(r"(awq|gptq|int4|4bit|bnb-4bit|w4a16)", re.I), 0.7, "4-bit"),
    (re.compile(r"(fp8|int8|8bit|w8a8|w8a16)", re.I), 1.1, "8-bit"),
)

_SIZE_RE = re.compile(r"(?<![a-z0-9.])(?:(\d+)x)?(\d+(?:\.\d+)?)([bm])(?![a-z0-9])", re.I)


@dataclass(frozen=True)
class ModelFacts:
    """One entry of data/models.yaml."""

    id: str
    ollama_names: tuple[str, ...]
    hf_names: tuple[str, ...]
    parameters: int
    layers: int
    attention_heads: int
    kv_heads: int
    head_dim: int
    hidden_size: int
    vocab_size: int
    context_length: int
    dtype: str
    ollama_quantization: str
    ollama_weights_bytes: int
    source: str

    def kv_bytes_per_token(self, bytes_per_element: float) -> float:
        return 2 * self.layers * self.kv_heads * self.head_dim * bytes_per_element


@dataclass(frozen=True)
class Estimate:
    """What one model needs, in parts, so messages can show the arithmetic."""

    model: str
    source: Literal["spec", "data", "name"]
    weights_bytes: int
    kv_bytes: int
    overhead_per_gpu: int
    weights_label: str
    """How the weights were sized: "Q4_K_M", "bfloat16", …"""
    context_tokens: int
    facts: ModelFacts | None = None
    fixed_total: int | None = None
    """spec.models[].vram: the total, overriding every part."""
    assumed_context: bool = False
    """True when the context is gpupin's assumption (vLLM then renders --max-model-len)."""

    def need_on(self, gpus: int) -> int:
        """Total memory when spread over ``gpus`` GPUs (each pays the per-GPU overhead)."""
        if self.fixed_total is not None:
            return self.fixed_total
        return self.weights_bytes + self.kv_bytes + gpus * self.overhead_per_gpu

    def per_gpu(self, gpus: int) -> int:
        """Memory per GPU when split equally (vLLM tensor parallel ranks)."""
        return math.ceil(self.need_on(gpus) / gpus)

    def explain(self, gpus: int = 1) -> str:
        """``~10.1 GiB (8.4 GiB Q4_K_M weights + 0.8 GiB KV cache for 4096 tokens + 0.9 GiB runtime)``."""
        if self.fixed_total is not None:
            return f"{format_gib(self.fixed_total)} (spec.models vram)"
        weights = f"{format_gib(self.weights_bytes)} {self.weights_label} weights"
        if self.weights_label in ("bfloat16", "float16", "float32"):
            weights += f" ({format_gb(self.weights_bytes)})"
        context = f"{self.context_tokens} tokens" + (" (assumed)" if self.assumed_context else "")
        parts = [
            weights,
            f"{format_gib(self.kv_bytes)} KV cache for {context}",
            f"{format_gib(gpus * self.overhead_per_gpu)} runtime",
        ]
        basis = "" if self.source == "data" else ", sized from the parameter count in its name"
        return f"~{format_gib(self.need_on(gpus))} ({' + '.join(parts)}{basis})"


class SizingError(ValueError):
    """The model cannot be sized; the message tells the user to set ``vram``."""


@cache
def model_data() -> tuple[dict[str, ModelFacts], dict[str, ModelFacts]]:
    """The packaged model data, indexed by normalized Ollama name and by Hugging Face id."""
    raw = yaml.safe_load(resources.files("gpupin").joinpath("data/models.yaml").read_text())
    by_ollama: dict[str, ModelFacts] = {}
    by_hf: dict[str, ModelFacts] = {}
    for entry in raw["models"]:
        facts = ModelFacts(
            id=entry["id"],
            ollama_names=tuple(entry["names"].get("ollama", [])),
            hf_names=tuple(entry["names"].get("huggingface", [])),
            parameters=int(entry["parameters"]),
            layers=int(entry["layers"]),
            attention_heads=int(entry["attentionHeads"]),
            kv_heads=int(entry["kvHeads"]),
            head_dim=int(entry["headDim"]),
            hidden_size=int(entry["hiddenSize"]),
            vocab_size=int(entry["vocabSize"]),
            context_length=int(entry["contextLength"]),
            dtype=entry["dtype"],
            ollama_quantization=entry["ollama"]["quantization"],
            ollama_weights_bytes=int(entry["ollama"]["weightsBytes"]),
            source=" ".join(str(entry["source"]).split()),
        )
        for name in facts.ollama_names:
            by_ollama[normalize_ollama(name)] = facts
        for name in facts.hf_names:
            by_hf[name.lower()] = facts
    return by_ollama, by_hf


def normalize_ollama(name: str) -> str:
    """``registry.ollama.ai/library/Qwen2.5`` → ``qwen2.5:latest``."""
    name = name.lower()
    for prefix in ("registry.ollama.ai/", "library/"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    if ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return name


def lookup(name: str, engine: ResolvedEngine) -> ModelFacts | None:
    """The model data entry for a name, trying both naming schemes."""
    by_ollama, by_hf = model_data()
    if engine == "ollama":
        found = by_ollama.get(normalize_ollama(name))
        if found:
            return found
        base, _, tag = normalize_ollama(name).partition(":")
        size = tag.split("-", 1)[0]
        return by_ollama.get(f"{base}:{size}") or by_hf.get(name.lower())
    return by_hf.get(name.lower()) or by_ollama.get(normalize_ollama(name))


def parameters_from_name(name: str) -> int | None:
    """``Qwen2.5-14B-Instruct`` → 14e9; ``mixtral:8x7b`` → 56e9 (conservative for MoE); None if absent."""
    tail = name.rsplit("/", 1)[-1]
    candidates = [tail.split(":", 1)[1]] if ":" in tail else []
    candidates.append(tail)
    for text in candidates:
        match = _SIZE_RE.search(text)
        if match:
            experts = int(match.group(1) or 1)
            unit = 1e9 if match.group(3).lower() == "b" else 1e6
            return int(experts * float(match.group(2)) * unit)
    return None


def _ollama_quant(name: str) -> str | None:
    tag = normalize_ollama(name).rsplit(":", 1)[-1]
    for token in re.split(r"[-_.](?=[a-z])", tag):
        if token in OLLAMA_QUANT_BYTES:
            return token
    match = re.search(r"(q\d_k_[sml]|q\d_k|q\d_\d|f16|fp16|bf16)", tag)
    return match.group(1) if match else None


def _kv_per_token_guess(parameters: int) -> float:
    """KV bytes per token (f16) when the architecture is unknown: modern GQA models need about
    16 KiB per billion parameters, between 32 KiB (1B) and 320 KiB (70B)."""
    return min(max(16384 * parameters / 1e9, 32768), 327680)


def estimate(model: ModelRef, spec: LLMDeploymentSpec) -> Estimate:
    """Size one model of a deployment for its engine; raise :class:`SizingError` if impossible."""
    engine = spec.resolved_engine
    facts = lookup(model.name, engine)
    if engine == "ollama":
        result = _estimate_ollama(model.name, spec, facts)
    else:
        result = _estimate_vllm(model.name, spec, facts)
    if model.vram is not None:
        return Estimate(
            model=model.name,
            source="spec",
            weights_bytes=result.weights_bytes if result else 0,
            kv_bytes=result.kv_bytes if result else 0,
            overhead_per_gpu=result.overhead_per_gpu if result else 0,
            weights_label=result.weights_label if result else "",
            context_tokens=result.context_tokens if result else 0,
            facts=facts,
            fixed_total=parse_bytes(model.vram),
            assumed_context=result.assumed_context if result else False,
        )
    if result is None:
        index = [m.name for m in spec.models].index(model.name)
        raise SizingError(
            f"cannot size {model.name}: it is not in gpupin's model data and its name gives no parameter "
            f"count (like 7b or 14B); set spec.models[{index}].vram to the GPU memory it needs, e.g. vram: 16Gi"
        )
    return result


def _estimate_ollama(name: str, spec: LLMDeploymentSpec, facts: ModelFacts | None) -> Estimate | None:
    options = spec.ollama_options
    quant = _ollama_quant(name)
    parameters = facts.parameters if facts else parameters_from_name(name)
    if parameters is None:
        return None
    default_tag = facts is not None and (quant is None or quant == facts.ollama_quantization.lower())
    if facts and default_tag:
        weights = facts.ollama_weights_bytes
        label = facts.ollama_quantization
    else:
        quant = quant or OLLAMA_DEFAULT_QUANT
        weights = int(parameters * OLLAMA_QUANT_BYTES[quant])
        label = quant.upper()
    context = min(options.context_length, facts.context_length) if facts else options.context_length
    tokens = context * options.num_parallel
    kv_element = KV_CACHE_BYTES[options.kv_cache_type]
    if facts:
        kv_per_token = facts.kv_bytes_per_token(kv_element)
        graph = 4 * min(context, OLLAMA_BATCH) * (facts.hidden_size + facts.vocab_size)
    else:
        kv_per_token = _kv_per_token_guess(parameters) * kv_element / 2
        graph = OLLAMA_UNKNOWN_GRAPH
    return Estimate(
        model=name,
        source="data" if facts else "name",
        weights_bytes=weights,
        kv_bytes=math.ceil(kv_per_token * tokens),
        overhead_per_gpu=OLLAMA_CUDA_OVERHEAD + graph,
        weights_label=label,
        context_tokens=tokens,
        facts=facts,
    )


def _estimate_vllm(name: str, spec: LLMDeploymentSpec, facts: ModelFacts | None) -> Estimate | None:
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
    kv_per_token = facts.kv_bytes_per_token(kv_element) if facts else _kv_per_token_guess(parameters)
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
