"""vLLM 0.33's rules on what it can serve, read in its released source: quantization kernels by
compute capability, the architectures it refuses in float16, how tensor parallel splits the heads,
and how a checkpoint's quantization shows when only its name is known. Used by
:mod:`gpupin.engines.vllm` before it places a model."""

from __future__ import annotations

import re

from gpupin.sizing import Estimate, ModelFacts

_NAME_QUANT: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"bnb|bitsandbytes", re.I), "bitsandbytes-4bit"),
    (re.compile(r"mxfp4", re.I), "mxfp4"),
    (re.compile(r"fp8|w8a8", re.I), "fp8"),
    (re.compile(r"int8|8bit|w8a16", re.I), "w8a8-int8"),  # before GPTQ: GPTQ-Int8 is 8-bit
    (re.compile(r"awq", re.I), "awq"),
    (re.compile(r"gptq", re.I), "gptq"),
    (re.compile(r"int4|4bit|w4a16", re.I), "w4a16"),
)
"""A checkpoint's quantization from its name, when its config.json was not read."""
_EIGHT_BIT = frozenset({"fp8", "w8a8-int8"})


def quantization_from_name(name: str) -> str | None:
    """``Qwen/Qwen2.5-7B-Instruct-AWQ`` → ``awq``; None when the repo name says nothing."""
    for pattern, method in _NAME_QUANT:
        if pattern.search(name.rsplit("/", 1)[-1]):
            return method
    return None


def name_weight_bytes(method: str) -> tuple[float, str]:
    """(bytes per parameter, label) of weights quantized as a name says: 8-bit ≈ 1.1 and 4-bit ≈
    0.7 bytes, as AWQ/GPTQ/FP8 checkpoints keep their embeddings in 16 bit."""
    return (1.1, "8-bit") if method in _EIGHT_BIT else (0.7, "4-bit")


QUANT_MIN_CC: dict[str, tuple[int, int]] = {
    "fp8": (7, 5),
    "w8a8-fp8": (7, 5),
    "w8a16-fp8": (7, 5),
    "w8a8-int8": (7, 5),
    "w8a16-int8": (7, 5),
    "w4a16": (7, 5),
    "awq": (7, 5),
    "gptq": (7, 5),
    "nvfp4": (7, 5),
    "mxfp4": (8, 0),
    "experts_int8": (8, 0),
    "fbgemm_fp8": (8, 0),
}
"""The oldest compute capability vLLM 0.33.0 serves each quantization on, read in its source
(``get_min_capability`` of each config under ``model_executor/layers/quantization/``, enforced by
``VllmConfig._get_quantization_config``; Marlin's own floor of 7.5 in ``marlin_utils.py``). FP8
below 8.9 runs weight-only (W8A16) through the Humming/Marlin kernels, with 16-bit activations."""

_NO_FLOAT16 = ("Gemma2", "Gemma3", "Glm4")
"""Architectures vLLM 0.33 refuses in float16 (``_FLOAT16_NOT_SUPPORTED_MODELS`` in
``vllm/config/model.py``): on GPUs without bfloat16 it falls back to float32."""
GGUF_NAME = re.compile(r"gguf", re.I)


_NO_FLOAT16_NAME = re.compile(r"gemma-?[23]|medgemma|glm-?4", re.I)


def no_float16(est: Estimate) -> bool:
    """vLLM refuses float16 for the model's architecture (by its name when it has no facts)."""
    if est.facts is not None and est.facts.architecture:
        return est.facts.architecture.startswith(_NO_FLOAT16)
    return bool(_NO_FLOAT16_NAME.search(est.model))


def quantization_of(est: Estimate) -> str | None:
    """The checkpoint's quantization: from its config.json when read, else from its name."""
    if est.facts is not None:
        return est.facts.quantization
    return quantization_from_name(est.model)


def arch_name(est: Estimate) -> str:
    if est.facts is None or not est.facts.architecture:
        return "Gemma/GLM-4, by its name"
    return est.facts.architecture.removesuffix("ForCausalLM").removesuffix("ForConditionalGeneration")


def tensor_parallel_problem(facts: ModelFacts | None, size: int) -> str | None:
    """Why vLLM cannot shard the model over ``size`` ranks: the size must divide the attention
    heads (``ModelConfig.verify_with_parallel_config``), and divide the KV heads or be a multiple
    of them (KV heads are then replicated; ``QKVParallelLinear``)."""
    if size == 1:
        return None
    if facts is None:  # heads unknown: only the sizes every common architecture divides by
        return None if size in (2, 4, 8) else "gpupin does not know its heads, so only 2, 4 or 8 are offered"
    if facts.attention_heads % size:
        return f"it does not divide the {facts.attention_heads} attention heads"
    kv = facts.kv_heads
    if not facts.kv_lora_rank and kv % size and size % kv:
        return f"it neither divides the {kv} KV heads nor is a multiple of them"
    return None


def gguf_message(model: str) -> str:
    if model.lower().startswith(("hf.co/", "huggingface.co/")):
        return (
            f"{model} is a GGUF, which vLLM 0.33 does not load (GGUF is a plugin it lacks). "
            "Use engine: ollama with the same name"
        )
    return (
        f"{model} is a repo of GGUF files, which vLLM 0.33 does not load (GGUF is a plugin it lacks). "
        f"Use engine: ollama with hf.co/{model}:<quantization>, e.g. hf.co/{model}:Q4_K_M"
    )
