"""What gpupin knows about one model: its shape, its weights and where that knowledge came from.

A :class:`ModelFacts` is built from one of three sources, and says which in :attr:`origin`:

- the model's own metadata: a Hugging Face ``config.json`` with the safetensors header(s)
  (:mod:`gpupin.modelfacts.hf_config`), or the GGUF header of an Ollama model or a GGUF repo
  (:mod:`gpupin.modelfacts.gguf_header`);
- gpupin's bundled model data (``data/models.yaml``), compiled from public copies of that
  metadata (each entry names them); ``gpupin models refresh`` re-reads it from the sources;
- a cluster's own model data (a ConfigMap in the same format).

Every figure is a plain count or a byte size; nothing here reads the network or the clock.
"""

from __future__ import annotations

from dataclasses import dataclass

# Quantization methods of Hugging Face checkpoints (``quantization_config.quant_method`` and, for
# compressed-tensors, the scheme), by the bytes one weight takes including its scales.
QUANT_WEIGHT_BYTES: dict[str, float] = {
    "fp8": 1.0,
    "fbgemm_fp8": 1.0,
    "w8a8-fp8": 1.0,
    "w8a16-fp8": 1.0,
    "w8a8-int8": 1.0,
    "experts_int8": 1.0,
    "awq": 0.53,
    "gptq": 0.53,
    "w4a16": 0.53,
    "mxfp4": 0.53,
    "nvfp4": 0.56,
    "bitsandbytes-4bit": 0.55,
    "bitsandbytes-8bit": 1.0,
}
"""Fallbacks for when the safetensors header is not at hand; with it, the real tensor bytes are used."""


@dataclass(frozen=True)
class ModelFacts:
    """One model's facts. Counts are plain integers; byte sizes are bytes.

    ``parameters`` is the total parameter count (all experts of a mixture-of-experts model).
    ``context_length`` and ``sliding_window`` are tokens (0 / None: not known / no window).
    ``hf_weights_bytes`` is the checkpoint's weight bytes as stored (exact from the safetensors
    header(s); ``None`` when only the count is known, then parameters × bytes of ``dtype``).
    The KV cache per token is :meth:`kv_bytes`; ``sliding_window`` layers hold at most the
    window, MLA models (``kv_lora_rank``) cache one compressed latent per layer.
    """

    id: str
    parameters: int
    layers: int
    attention_heads: int
    kv_heads: int
    head_dim: int
    hidden_size: int
    vocab_size: int
    context_length: int
    dtype: str = "bfloat16"
    ollama_names: tuple[str, ...] = ()
    hf_names: tuple[str, ...] = ()
    architecture: str = ""
    value_head_dim: int | None = None
    """V head size when it differs from K's (MLA, some GGUFs); None: the same as ``head_dim``."""
    sliding_window: int | None = None
    sliding_layers: int = 0
    """How many of ``layers`` attend only to the last ``sliding_window`` tokens."""
    experts: int = 0
    experts_used: int = 0
    kv_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    quantization: str | None = None
    """The checkpoint's quantization (``fp8``, ``w8a8-fp8``, ``awq``, ``gptq``, ``mxfp4``, …); None: unquantized."""
    hf_weights_bytes: int | None = None
    tied_embeddings: bool = False
    """The output layer reuses the token embedding (no separate ``output.weight`` /
    ``lm_head``); else Ollama keeps the token embedding in system memory."""
    token_embedding_bytes: int | None = None
    """Bytes of the GGUF's ``token_embd.weight`` when read from a GGUF header."""
    embedding: bool = False
    """A pooling (embedding) model: no generation, a small or no KV cache."""
    vision: bool = False
    projector_bytes: int = 0
    """Bytes of a vision projector/encoder served beside the language model (Ollama's projector blob)."""
    vision_graph_bytes: int = 0
    """The image encoder's compute graph for one image at its largest size (Ollama's
    ``VisionGraphSize``), held on the first GPU beside the text graph."""
    gguf_repo: bool = False
    """A Hugging Face repo of GGUF files (served by Ollama or llama.cpp, not vLLM)."""
    ollama_quantization: str = ""
    ollama_weights_bytes: int = 0
    """The default (or named) Ollama tag's GGUF: its quantization and its size in bytes."""
    source: str = ""
    origin: str = "gpupin's bundled model data"
    """Where these facts were read: "gpupin's bundled model data", "config.json and safetensors
    headers of org/repo on https://…", "GGUF header of … on …", "ConfigMap ns/name"."""
    read_at: str | None = None
    """When they were read from the source (RFC 3339), None for data shipped with gpupin."""

    @property
    def v_dim(self) -> int:
        return self.value_head_dim if self.value_head_dim is not None else self.head_dim

    def kv_bytes(self, context: int, sequences: int, element_bytes: float, mla_latent: bool = True) -> float:
        """KV cache bytes for ``sequences`` sequences of ``context`` tokens each.

        Full-attention layers hold every token; sliding-window layers at most ``sliding_window``
        per sequence. An MLA model caches ``kv_lora_rank + qk_rope_head_dim`` elements per token
        and layer when ``mla_latent`` (vLLM's MLA backends), else K and V of every head.
        """
        if self.embedding and self.layers == 0:
            return 0.0
        if self.kv_lora_rank and mla_latent:
            per_layer = float(self.kv_lora_rank + self.qk_rope_head_dim)
        else:
            per_layer = float(self.kv_heads * (self.head_dim + self.v_dim))
        full_layers = self.layers - self.sliding_layers
        window = min(self.sliding_window or context, context)
        tokens = full_layers * context + self.sliding_layers * window
        return tokens * sequences * per_layer * element_bytes

    def checkpoint_bytes(self) -> int:
        """Bytes of the Hugging Face weights as vLLM loads them: exact when the safetensors header
        was read, else parameters × bytes of the quantization or dtype."""
        if self.hf_weights_bytes is not None:
            return self.hf_weights_bytes
        per = QUANT_WEIGHT_BYTES.get(self.quantization or "", DTYPE_BYTES.get(self.dtype, 2.0))
        return int(self.parameters * per)


DTYPE_BYTES: dict[str, float] = {
    "bfloat16": 2.0,
    "float16": 2.0,
    "half": 2.0,
    "float32": 4.0,
    "float8_e4m3fn": 1.0,
}
