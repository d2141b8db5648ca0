"""How Ollama 0.17.4 uses GPU memory for one model, as functions of its facts: the KV cache
(cells per layer, sliding windows, padding, cache type), the compute graph (Ollama's own
``GraphSize`` formulas, ``fs/ggml/ggml.go``), the token embedding it keeps in system memory, and
whether flash attention is on. All sizes are bytes; contexts are tokens. Used by
:mod:`gpupin.engines.ollama`."""

from __future__ import annotations

from gpupin.modelfacts import ModelFacts
from gpupin.quantity import MiB

OLLAMA_CUDA_OVERHEAD = 457 * MiB
OLLAMA_BATCH = 512
OLLAMA_UNKNOWN_GRAPH = 512 * MiB

OLLAMA_DEFAULT_QUANT = "q4_k_m"
KV_CACHE_BYTES = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
"""Bytes per KV element by OLLAMA_KV_CACHE_TYPE, with the block scales of ggml's q8_0/q4_0."""
KV_CELLS_PADDING = 256
"""Ollama's Go engine rounds its cache to whole 256-token pages (kvcache/causal.go)."""
FLASH_ATTENTION_ARCHS = frozenset(
    {"bert", "gemma3", "gptoss", "gpt-oss", "mistral3", "qwen3", "qwen3moe", "qwen3vl", "qwen3vlmoe"}
)
"""Where Ollama 0.17.4 turns flash attention on by default (fs/ggml/ggml.go FlashAttention): the
attention scores never fill a context × heads matrix, so the graph stays small."""
_HF_TO_GGUF = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",
    "MixtralForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "Qwen3MoeForCausalLM": "qwen3moe",
    "Gemma2ForCausalLM": "gemma2",
    "Gemma3ForCausalLM": "gemma3",
    "Gemma3ForConditionalGeneration": "gemma3",
    "Mistral3ForConditionalGeneration": "mistral3",
    "Phi3ForCausalLM": "phi3",
    "DeepseekV2ForCausalLM": "deepseek2",
    "DeepseekV3ForCausalLM": "deepseek2",
    "GptOssForCausalLM": "gpt-oss",
    "BertModel": "bert",
    "XLMRobertaModel": "bert",
    "NomicBertModel": "nomic-bert",
    "MllamaForConditionalGeneration": "mllama",
    "Qwen2_5_VLForConditionalGeneration": "qwen25vl",
}


def gguf_architecture(facts: ModelFacts) -> str:
    """The GGUF ``general.architecture`` of a model (facts read from a GGUF carry it already)."""
    return _HF_TO_GGUF.get(facts.architecture, facts.architecture)


def _pad(tokens: int) -> int:
    return -(-tokens // KV_CELLS_PADDING) * KV_CELLS_PADDING


def kv_cache_bytes(
    facts: ModelFacts, arch: str, context: int, parallel: int, cache_type: str, flash_attention: bool
) -> int:
    """Ollama's KV cache: every full-attention layer holds ``context × parallel`` cells (padded
    to 256), a sliding-window layer ``window × parallel + batch`` when that is smaller (gpt-oss
    keeps 4096 tokens on its window layers); K and V of every KV head per cell. MLA models
    (deepseek2) cache K of ``kv_lora_rank + rope`` and V of ``kv_lora_rank`` per layer."""
    # a quantized cache type falls back to f16 when flash attention is off (Ollama's own rule)
    element = KV_CACHE_BYTES.get(cache_type, 2.0) if flash_attention else 2.0
    batch = min(context, OLLAMA_BATCH)
    full = _pad(context * parallel)
    window = 4096 if arch in ("gpt-oss", "gptoss") else facts.sliding_window or 0
    sliding = _pad(window * parallel + batch) if window and window < context else full
    if facts.kv_lora_rank:
        per_cell = 2 * facts.kv_lora_rank + facts.qk_rope_head_dim
    else:
        per_cell = facts.kv_heads * (facts.head_dim + facts.v_dim)
    cells = (facts.layers - facts.sliding_layers) * full + facts.sliding_layers * sliding
    return int(cells * per_cell * element)


def graph_bytes(facts: ModelFacts, arch: str, context: int, kv: int, flash_attention: bool) -> int:
    """The compute graph of a fully offloaded model for one 512-token batch (``context`` =
    context × parallel), as Ollama 0.17.4 estimates it in ``fs/ggml/ggml.go`` (``GraphSize``,
    ``fullOffload``). With flash attention the context × heads score matrix is never built; the
    Go engine then measures a graph near the output layer's ``4 × batch × (embedding + vocab)``."""
    batch = min(context, OLLAMA_BATCH)
    embed, vocab, heads = facts.hidden_size, facts.vocab_size, facts.attention_heads
    output = 4 * batch * (embed + vocab)
    if facts.embedding:  # no output layer over the vocabulary: the encoder's own activations
        return max(4 * batch * embed, 16384 * context)
    if flash_attention:
        return max(output, (4 + context // 1024 + 110) * MiB)
    if arch in ("llama", "llama4"):
        return max(4 * batch * (1 + 4 * embed + context * (1 + heads)), output)
    if arch in ("gemma", "gemma2"):
        attn = 4 * batch * (2 + context + context * heads + 2 * embed + 2 * facts.head_dim * heads)
        return max(output, attn)
    if arch == "deepseek2":
        return max(
            4 * batch * (3 * embed + vocab), 4 * batch * (3 * embed + 2 + context * (1 + facts.kv_heads))
        )
    if arch in ("qwen2", "phi2", "phi3", "command-r"):
        return max(output, 4 * batch * (1 + 2 * embed + context + context * heads))
    heads_kv = max(facts.kv_heads, 1)
    return max(output, heads // heads_kv * kv // 6)


_BASE_BITS = {"2": 2.625, "3": 3.4375, "4": 4.5, "5": 5.5, "6": 6.5625, "8": 8.5}
"""Bits per weight of llama.cpp's base types (Q4_K, Q5_K, …): a K-quant file stores its token
embedding in its base type (only ``output.weight`` is raised, to Q6_K)."""


def cpu_token_embedding(facts: ModelFacts, quantization: str) -> int:
    """Bytes of the token embedding Ollama keeps in system memory: the whole ``token_embd`` when
    the model has a separate output layer (it is a lookup table, read a row per token); none when
    the output layer reuses it (it is then on the GPU)."""
    if facts.tied_embeddings or facts.embedding:
        return 0
    if facts.token_embedding_bytes is not None:
        return facts.token_embedding_bytes
    quant = quantization.lower().removeprefix("iq").removeprefix("q")
    if quant.startswith(("f16", "fp16", "bf16")):
        bits = 16.0
    elif quant.startswith("f32"):
        bits = 32.0
    else:
        bits = _BASE_BITS.get(quant[:1], 4.5)
    return int(facts.vocab_size * facts.hidden_size * bits / 8)


def flash_attention(facts: ModelFacts, arch: str, requested: bool | None) -> bool:
    """Whether Ollama 0.17.4 runs the model with flash attention: never where it does not support
    it (embedding models, gemma2, K and V heads of different sizes: ``SupportsFlashAttention`` in
    ``fs/ggml/ggml.go``), else the spec's ``flashAttention``, else the architecture's default."""
    if facts.embedding or arch == "gemma2" or facts.head_dim != facts.v_dim or not facts.head_dim:
        return False
    return requested if requested is not None else arch in FLASH_ATTENTION_ARCHS
