"""What sizing shares across engines: the model data, the :class:`Estimate` and its sources.

Memory = weights + KV cache + runtime overhead; each engine (:mod:`gpupin.engines`) says how it
sizes the three parts for its own precision, cache and runtime. Shared here:

- the catalog of :class:`~gpupin.modelfacts.ModelFacts` (the package's ``data/models.yaml``, a
  cluster's model data, what was read from registries), looked up by Ollama name or Hugging Face
  id, with the names registries refused and why others were not read;
- GGUF quantization tags (``Q4_K_M``, ``UD-Q4_K_XL``, ``IQ4_XS``) and their bytes per parameter;
- the size in the name (``14b``, ``7B``, ``8x7b``) when nothing else knows the model;
- ``models[].vram`` from the spec, which overrides every part (:func:`with_spec_vram`);
- the KV cache per token when the architecture is unknown (:func:`kv_per_token_guess`).

A model none of them can size gets a :class:`SizingError` that tells the user to set ``vram``
(or, for a name its registry refused, why).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Literal

from gpupin.api.v1alpha1 import LLMDeploymentSpec, ModelRef
from gpupin.modelfacts import ModelFacts
from gpupin.modelfacts.data import ModelDataError, parse_model_data

__all__ = [
    "GGUF_QUANT_BYTES",
    "Estimate",
    "ModelCatalog",
    "ModelDataError",
    "ModelFacts",
    "SizingError",
    "gguf_quant_bytes",
    "gguf_quantization",
    "kv_per_token_guess",
    "normalize_ollama",
    "parameters_from_name",
    "parse_model_data",
    "source_of",
    "with_spec_vram",
]
from gpupin.quantity import format_gb, format_gib, parse_bytes

# Bytes per parameter of GGUF quantizations, including their block scales (llama.cpp's bits per
# weight / 8, plus the 16-bit embeddings and output layer the K-quants keep at higher precision).
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
    "iq1_s": 0.22,
    "iq1_m": 0.24,
    "iq2_xxs": 0.28,
    "iq2_xs": 0.31,
    "iq2_s": 0.33,
    "iq2_m": 0.35,
    "iq3_xxs": 0.40,
    "iq3_xs": 0.43,
    "iq3_s": 0.45,
    "iq3_m": 0.47,
    "iq4_xs": 0.55,
    "iq4_nl": 0.58,
    "mxfp4": 0.55,
    "tq1_0": 0.21,
    "tq2_0": 0.26,
    "f16": 2.0,
    "fp16": 2.0,
    "bf16": 2.0,
    "f32": 4.0,
}
_K_QUANT = re.compile(r"^(?:ud-)?q(\d)_k(?:_([a-z0-9]+))?$")
_QUANT_TOKEN = re.compile(r"^(?:ud-)?(?:[it]?q\d(?:_[a-z0-9]+)*|f16|fp16|bf16|f32|mxfp4)$")

_SIZE_RE = re.compile(r"(?<![a-z0-9.])(?:(\d+)x)?(\d+(?:\.\d+)?)([bm])(?![a-z0-9])", re.I)


@dataclass(frozen=True)
class Estimate:
    """What one model needs, in parts, so messages can show the arithmetic."""

    model: str
    source: Literal["spec", "data", "metadata", "name"]
    """Where the figures come from: models[].vram, model data (bundled or the cluster's), the
    model's own metadata read from its registry, or the parameter count in its name."""
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

    kv_shards_max: int = 0
    """Over how many ranks the KV cache can be split at most (vLLM: the KV heads, 1 for an MLA
    latent; more ranks hold copies); 0: any number."""

    def need_on(self, gpus: int) -> int:
        """Total bytes when spread over ``gpus`` GPUs (each pays the per-GPU overhead, and holds
        its share of the KV cache, or a copy when there are more ranks than KV heads)."""
        if self.fixed_total is not None:
            return self.fixed_total
        shards = min(gpus, self.kv_shards_max) if self.kv_shards_max else gpus
        return self.weights_bytes + math.ceil(self.kv_bytes * gpus / shards) + gpus * self.overhead_per_gpu

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
        basis = ", sized from the parameter count in its name" if self.source == "name" else ""
        return f"~{format_gib(self.need_on(gpus))} ({' + '.join(parts)}{basis})"


def source_of(facts: ModelFacts | None) -> Literal["data", "metadata", "name"]:
    """An :class:`Estimate`'s ``source`` for facts from data, from metadata read at ``read_at``,
    or none (the name)."""
    if facts is None:
        return "name"
    return "metadata" if facts.read_at else "data"


class SizingError(ValueError):
    """The model cannot be sized; the message tells the user what to do. ``reason`` is the
    refusal reason: ``UnknownModelSize`` (nothing sizes it) or ``UnknownModel`` (its registry
    says it does not exist)."""

    def __init__(self, message: str, reason: str = "UnknownModelSize") -> None:
        super().__init__(message)
        self.reason = reason


NamingScheme = Literal["ollama", "huggingface"]


class ModelCatalog:
    """Model facts by normalized Ollama name and by Hugging Face id (lower case). Engines read it
    through the registry that holds it (:class:`gpupin.engines.EngineRegistry`), so a test or
    another data source can hand them another catalog; nothing reads it from a global."""

    def __init__(
        self,
        entries: Iterable[ModelFacts],
        refused: Mapping[str, tuple[str, str]] | None = None,
        notes: Mapping[str, str] | None = None,
    ) -> None:
        self.entries = tuple(entries)
        self.refused: dict[str, tuple[str, str]] = {k.lower(): v for k, v in (refused or {}).items()}
        """Names (lower case) their registry answered for with a refusal: (reason, message) —
        ``UnknownModel`` when it does not exist, ``UnsupportedModel`` when the engine cannot serve it."""
        self.notes: dict[str, str] = {k.lower(): v for k, v in (notes or {}).items()}
        """Names (lower case) whose metadata could not be read → why (shown where they are sized)."""
        self.by_ollama: dict[str, ModelFacts] = {}
        self.by_hf: dict[str, ModelFacts] = {}
        for facts in self.entries:
            for name in facts.ollama_names:
                self.by_ollama[normalize_ollama(name)] = facts
            for name in facts.hf_names:
                self.by_hf[name.lower()] = facts
        self.by_hf_repo_name: dict[str, ModelFacts] = {}
        """By the part of a Hugging Face id after the organisation: what a GGUF repo of the model
        (``hf.co/unsloth/Qwen3-8B-GGUF``) is named after."""
        for facts in self.entries:
            for name in facts.hf_names:
                self.by_hf_repo_name[name.lower().rsplit("/", 1)[-1]] = facts  # later data wins

    @classmethod
    def packaged(cls) -> ModelCatalog:
        """The package's ``data/models.yaml`` (read and parsed on each call: hold the result)."""
        text = resources.files("gpupin").joinpath("data/models.yaml").read_text()
        return cls(parse_model_data(text, "gpupin's bundled model data"))

    def overlay(
        self,
        entries: Iterable[ModelFacts],
        refused: Mapping[str, tuple[str, str]] | None = None,
        notes: Mapping[str, str] | None = None,
    ) -> ModelCatalog:
        """This catalog with ``entries`` over it (a name they carry resolves to them) and more
        names known not to exist."""
        return ModelCatalog(
            (*self.entries, *entries), {**self.refused, **(refused or {})}, {**self.notes, **(notes or {})}
        )

    def lookup(self, name: str, scheme: NamingScheme) -> ModelFacts | None:
        """The entry for a name, trying the engine's naming scheme first, then the other; an
        Ollama tag with a variant (``qwen2.5:14b-instruct-q8_0``) falls back to its size tag."""
        if scheme == "ollama":
            found = self.by_ollama.get(normalize_ollama(name))
            if found:
                return found
            base, _, tag = normalize_ollama(name).partition(":")
            size = tag.split("-", 1)[0]
            found = self.by_ollama.get(f"{base}:{size}") or self.by_hf.get(name.lower())
            if found is None and base.startswith(("hf.co/", "huggingface.co/")):
                repo = base.rsplit("/", 1)[-1].removesuffix("-gguf").removesuffix("_gguf")
                found = self.by_hf_repo_name.get(repo)
            return found
        return self.by_hf.get(name.lower()) or self.by_ollama.get(normalize_ollama(name))


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
    """The GGUF quantization a tag names, lower case, if any: ``14b-instruct-q8_0`` → ``q8_0``,
    ``UD-Q4_K_XL`` → ``ud-q4_k_xl``, ``IQ4_XS`` → ``iq4_xs``. Case-insensitive."""
    tag = tag.lower().rsplit(":", 1)[-1]
    tokens = re.split(r"[-.](?=[a-z])", tag)
    for i, token in enumerate(tokens):
        if token == "ud" and i + 1 < len(tokens):
            token = f"ud-{tokens[i + 1]}"
        if _QUANT_TOKEN.match(token):
            return token
    match = re.search(r"(?:ud-)?(?:[it]?q\d(?:_[a-z0-9]+)*|f16|fp16|bf16)", tag)
    return match.group(0) if match else None


def gguf_quant_bytes(quant: str) -> tuple[float, str] | None:
    """(bytes per parameter, the quantization it is sized as) for a tag's quantization, or None.

    Exact llama.cpp types are in :data:`GGUF_QUANT_BYTES`. Unsloth's dynamic mixes (``Q4_K_XL``,
    ``UD-Q4_K_XL``) and bare K-quants (``q5_K``) are mixes within their K-quant family: sized like
    ``_M`` of the family (``Q6_K``, ``Q2_K`` have one size; ``Q8_K_XL`` like ``Q8_0``)."""
    quant = quant.lower()
    if quant in GGUF_QUANT_BYTES:
        return GGUF_QUANT_BYTES[quant], quant.upper()
    plain = quant.removeprefix("ud-")
    if plain in GGUF_QUANT_BYTES:
        return GGUF_QUANT_BYTES[plain], plain.upper()
    match = _K_QUANT.match(quant)
    if match:
        bits = match.group(1)
        for like in (f"q{bits}_k_m", f"q{bits}_k", f"q{bits}_0"):
            if like in GGUF_QUANT_BYTES:
                return GGUF_QUANT_BYTES[like], like.upper()
    return None


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
            f"cannot size {model.name}: gpupin's model data does not know it and its name gives no parameter "
            f"count (like 7b or 14B). Set spec.models[{index}].vram to the GPU memory it needs: its download "
            "size plus its KV cache (about 1.3 × the download at 4096 tokens)"
        )
    return result
