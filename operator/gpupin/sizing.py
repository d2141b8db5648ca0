"""What sizing shares across engines: the model data, the :class:`Estimate` and its sources.

Memory = weights + KV cache + runtime overhead; each engine (:mod:`gpupin.engines`) says how it
sizes the three parts for its own precision, cache and runtime. Shared here:

- the package's model data (``data/models.yaml``: layers, heads, context, dtype, and the size of
  Ollama's default GGUF), looked up by Ollama name or Hugging Face id;
- the size in the name (``14b``, ``7B``, ``8x7b``) when the data has no entry;
- ``models[].vram`` from the spec, which overrides every part (:func:`with_spec_vram`);
- the KV cache per token when the architecture is unknown (:func:`kv_per_token_guess`).

A model none of them can size gets a :class:`SizingError` that tells the user to set ``vram``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

import yaml

from gpupin.api.v1alpha1 import LLMDeploymentSpec, ModelRef
from gpupin.quantity import format_gb, format_gib, parse_bytes

# Bytes per parameter of GGUF quantizations, including their block scales.
GGUF_QUANT_BYTES: dict[str, float] = {
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
    """True when the context is gpupin's assumption (the engine then renders it, so what runs is
    what was planned)."""

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


NamingScheme = Literal["ollama", "huggingface"]


class ModelCatalog:
    """Model facts by normalized Ollama name and by Hugging Face id (lower case). Engines read it
    through the registry that holds it (:class:`gpupin.engines.EngineRegistry`), so a test or
    another data source can hand them another catalog; nothing reads it from a global."""

    def __init__(self, entries: Iterable[ModelFacts]) -> None:
        self.entries = tuple(entries)
        self.by_ollama: dict[str, ModelFacts] = {}
        self.by_hf: dict[str, ModelFacts] = {}
        for facts in self.entries:
            for name in facts.ollama_names:
                self.by_ollama[normalize_ollama(name)] = facts
            for name in facts.hf_names:
                self.by_hf[name.lower()] = facts

    @classmethod
    def packaged(cls) -> ModelCatalog:
        """The package's ``data/models.yaml`` (read and parsed on each call: hold the result)."""
        raw = yaml.safe_load(resources.files("gpupin").joinpath("data/models.yaml").read_text())
        return cls(_facts(entry) for entry in raw["models"])

    def lookup(self, name: str, scheme: NamingScheme) -> ModelFacts | None:
        """The entry for a name, trying the engine's naming scheme first, then the other; an
        Ollama tag with a variant (``qwen2.5:14b-instruct-q8_0``) falls back to its size tag."""
        if scheme == "ollama":
            found = self.by_ollama.get(normalize_ollama(name))
            if found:
                return found
            base, _, tag = normalize_ollama(name).partition(":")
            size = tag.split("-", 1)[0]
            return self.by_ollama.get(f"{base}:{size}") or self.by_hf.get(name.lower())
        return self.by_hf.get(name.lower()) or self.by_ollama.get(normalize_ollama(name))


def _facts(entry: dict[str, Any]) -> ModelFacts:
    return ModelFacts(
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


def normalize_ollama(name: str) -> str:
    """``registry.ollama.ai/library/Qwen2.5`` → ``qwen2.5:latest``."""
    name = name.lower()
    for prefix in ("registry.ollama.ai/", "library/"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    if ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return name


def gguf_quantization(tag: str) -> str | None:
    """The GGUF quantization a tag names, lower case (``14b-instruct-q8_0`` → ``q8_0``), if any."""
    tag = tag.lower()
    for token in re.split(r"[-_.](?=[a-z])", tag):
        if token in GGUF_QUANT_BYTES:
            return token
    match = re.search(r"(q\d_k_[sml]|q\d_k|q\d_\d|f16|fp16|bf16)", tag)
    return match.group(1) if match else None


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


def kv_per_token_guess(parameters: int) -> float:
    """KV bytes per token (f16) when the architecture is unknown: modern GQA models need about
    16 KiB per billion parameters, between 32 KiB (1B) and 320 KiB (70B)."""
    return min(max(16384 * parameters / 1e9, 32768), 327680)


def with_spec_vram(
    engine_estimate: Estimate | None, model: ModelRef, spec: LLMDeploymentSpec, facts: ModelFacts | None
) -> Estimate:
    """An engine's estimate, overridden by ``models[].vram`` when the spec gives it; a
    :class:`SizingError` naming the field to set when neither can size the model."""
    result = engine_estimate
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
