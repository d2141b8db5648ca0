"""Model facts from a Hugging Face repo's ``config.json`` and safetensors header(s).

:func:`facts_from_hf` is pure: the caller (:mod:`gpupin.modelsource`, or a test with recorded
files) hands it the parsed ``config.json`` and the parameter counts by dtype that the safetensors
headers declare (``huggingface_hub``'s ``SafetensorsRepoMetadata.parameter_count``). Field names
follow ``transformers``; multimodal configs nest the language model under ``text_config``.

Raises :class:`ConfigError` when ``config.json`` lacks what sizing needs (layers, heads).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gpupin.modelfacts.facts import ModelFacts

SAFETENSORS_DTYPE_BYTES: dict[str, float] = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
}
"""Bytes per element of safetensors dtypes (the header's ``dtype`` strings)."""

EMBEDDING_ARCHITECTURES = frozenset(
    {
        "BertModel",
        "RobertaModel",
        "XLMRobertaModel",
        "NomicBertModel",
        "MPNetModel",
        "DistilBertModel",
        "ModernBertModel",
        "GteModel",
        "NewModel",
        "JinaBertModel",
        "BgeM3EmbeddingModel",
    }
)
"""Encoder architectures that embed (vLLM serves them with its pooling runner); a name ending in
``EmbeddingModel`` too. Not every ``…Model`` is one: ``GPT2LMHeadModel`` and ``ChatGLMModel`` generate."""


class ConfigError(ValueError):
    """A config.json gpupin cannot size from; the message names the missing field."""


def facts_from_hf(
    repo: str,
    config: Mapping[str, Any],
    parameter_count: Mapping[str, int] | None = None,
    *,
    origin: str = "",
    read_at: str | None = None,
    ollama_names: tuple[str, ...] = (),
) -> ModelFacts:
    """The facts of ``repo`` from its config.json and its safetensors parameter counts by dtype.

    ``parameter_count``: ``{"BF16": 8030261248}`` or ``{"F8_E4M3": …, "BF16": …}`` (elements per
    safetensors dtype); it gives the exact parameter count and the checkpoint's bytes. Without it
    the count is derived from the shape (embeddings + attention + MLP per layer), within a few %.
    """
    text = _text_config(config)
    arch = (
        _first(config.get("architectures"))
        or _first(text.get("architectures"))
        or str(config.get("model_type", ""))
    )
    layers = _int(text, "num_hidden_layers", "n_layer", "num_layers")
    heads = _int(text, "num_attention_heads", "n_head")
    if not layers or not heads:
        raise ConfigError(
            f"config.json of {repo} gives no num_hidden_layers or num_attention_heads (architecture {arch or 'unknown'})"
        )

    hidden = _int(text, "hidden_size", "n_embd", "d_model") or 0
    kv_heads = _int(text, "num_key_value_heads", "n_head_kv") or heads
    kv_lora = _int(text, "kv_lora_rank") or 0
    rope_dim = _int(text, "qk_rope_head_dim") or 0
    head_dim = _int(text, "head_dim") or (hidden // heads if hidden else 0)
    value_dim = None
    if kv_lora:
        nope = _int(text, "qk_nope_head_dim") or 0
        head_dim = nope + rope_dim
        value_dim = _int(text, "v_head_dim") or head_dim
    if not head_dim:
        raise ConfigError(
            f"config.json of {repo} gives neither head_dim nor hidden_size (architecture {arch})"
        )
    vocab = _int(text, "vocab_size") or _int(config, "vocab_size") or 0
    context = _int(text, "max_position_embeddings", "n_positions", "seq_length") or 0
    window, sliding = _sliding(text, layers)
    experts = _int(text, "num_local_experts", "num_experts", "n_routed_experts") or 0
    used = _int(text, "num_experts_per_tok", "num_experts_per_token", "moe_topk") or 0
    dtype = str(text.get("torch_dtype") or text.get("dtype") or config.get("torch_dtype") or "bfloat16")
    quant = quantization_of(config.get("quantization_config") or text.get("quantization_config"))
    embedding = arch in EMBEDDING_ARCHITECTURES or arch.endswith("EmbeddingModel")
    if parameter_count:
        parameters = sum(parameter_count.values())
        weights: int | None = int(
            sum(SAFETENSORS_DTYPE_BYTES.get(k, 2) * v for k, v in parameter_count.items())
        )
        # GPTQ/AWQ pack 8 four-bit weights in one I32: count them as the weights they hold
        if quant in ("gptq", "awq", "w4a16") and "I32" in parameter_count:
            parameters += 7 * parameter_count["I32"]
    else:
        intermediate = _int(text, "moe_intermediate_size" if experts else "intermediate_size") or 4 * hidden
        parameters = _shape_parameters(
            hidden, layers, heads, kv_heads, head_dim, intermediate, vocab, experts
        )
        weights = None
    return ModelFacts(
        id=repo.lower(),
        parameters=parameters,
        layers=layers,
        attention_heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        hidden_size=hidden,
        vocab_size=vocab,
        context_length=context,
        dtype=dtype,
        ollama_names=ollama_names,
        hf_names=(repo,),
        architecture=arch,
        value_head_dim=value_dim,
        sliding_window=window,
        sliding_layers=sliding,
        experts=experts,
        experts_used=used,
        kv_lora_rank=kv_lora,
        qk_rope_head_dim=rope_dim,
        quantization=quant,
        hf_weights_bytes=weights,
        embedding=embedding,
        tied_embeddings=bool(text.get("tie_word_embeddings", config.get("tie_word_embeddings", False))),
        vision="vision_config" in config,
        origin=origin or f"config.json of {repo}",
        read_at=read_at,
    )


def quantization_of(qc: Mapping[str, Any] | None) -> str | None:
    """The quantization a ``quantization_config`` declares, as gpupin names it: ``fp8``,
    ``w8a8-fp8``/``w8a16-fp8``/``w8a8-int8``/``w4a16`` (compressed-tensors schemes), ``awq``,
    ``gptq``, ``mxfp4``, ``nvfp4``, ``bitsandbytes-4bit``/``-8bit``; None when unquantized."""
    if not qc:
        return None
    method = str(qc.get("quant_method", "")).lower()
    if method == "compressed-tensors":
        return _compressed_tensors_scheme(qc)
    if method == "bitsandbytes":
        return (
            "bitsandbytes-4bit" if qc.get("load_in_4bit") or qc.get("_load_in_4bit") else "bitsandbytes-8bit"
        )
    if method == "modelopt":
        algo = str(qc.get("quant_algo", "")).lower()
        return "nvfp4" if "fp4" in algo else "fp8"
    return method or None


def _compressed_tensors_scheme(qc: Mapping[str, Any]) -> str:
    for group in (qc.get("config_groups") or {}).values():
        weights = group.get("weights") or {}
        acts = group.get("input_activations") or {}
        bits = int(weights.get("num_bits", 16))
        kind = str(weights.get("type", "int"))
        if bits == 8 and kind == "float":
            return "w8a8-fp8" if acts and str(acts.get("type")) == "float" else "w8a16-fp8"
        if bits == 8:
            return "w8a8-int8" if acts else "w8a16-int8"
        if bits == 4 and kind == "float":
            return "nvfp4" if acts else "w4a16-fp4"
        if bits == 4:
            return "w4a16"
    return "compressed-tensors"


def _text_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
    text = config.get("text_config") or config.get("llm_config")
    if isinstance(text, Mapping):
        merged = dict(config)
        merged.update(text)
        return merged
    return config


def _sliding(text: Mapping[str, Any], layers: int) -> tuple[int | None, int]:
    """(window, how many layers use it). ``layer_types`` names each layer; Gemma 2 alternates;
    Gemma 3's ``sliding_window_pattern`` N means N-1 local layers per global one."""
    window = _int(text, "sliding_window")
    if not window or text.get("use_sliding_window") is False:
        return None, 0
    types = text.get("layer_types")
    if isinstance(types, list) and types:
        return window, sum(1 for t in types if "sliding" in str(t))
    pattern = _int(text, "sliding_window_pattern")
    if pattern:
        return window, layers - layers // pattern
    model_type = str(text.get("model_type", ""))
    if model_type.startswith("gemma2") or model_type.startswith("cohere2"):
        return window, layers // 2
    return window, layers


def _shape_parameters(
    hidden: int,
    layers: int,
    heads: int,
    kv_heads: int,
    head_dim: int,
    intermediate: int,
    vocab: int,
    experts: int,
) -> int:
    attention = hidden * head_dim * (heads * 2 + kv_heads * 2)
    mlp = 3 * hidden * intermediate * max(experts, 1)
    return layers * (attention + mlp) + 2 * vocab * hidden


def _int(config: Mapping[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = config.get(key)
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float) and value:
            return int(value)
    return None


def _first(value: Any) -> str:
    return str(value[0]) if isinstance(value, list) and value else ""
