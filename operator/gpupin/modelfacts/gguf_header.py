"""Model facts from a GGUF header (Ollama's model format, and GGUF repos on Hugging Face).

The header (magic, key/values, tensor infos) is read with the ``gguf`` package. Only the first
bytes of a multi-GB file are needed: :func:`facts_from_gguf_header` writes them to a sparse file
as long as the whole blob, so ``gguf.GGUFReader`` can map it without the weights being there.
Keys follow llama.cpp's ``{arch}.block_count``, ``{arch}.attention.head_count_kv`` … naming.

Raises :class:`GGUFHeaderError` when the bytes are not a GGUF header or end inside it
(:attr:`GGUFHeaderError.truncated`: read more and try again).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from typing import Any

from gpupin.modelfacts.facts import ModelFacts

# Architectures whose sliding-window layers alternate with full ones, and how many of every
# ``period`` layers are global (llama.cpp and Ollama hard-code these per architecture).
_SLIDING_PATTERN: dict[str, tuple[int, int]] = {
    "gemma2": (2, 1),
    "gemma3": (6, 1),
    "gpt-oss": (2, 1),
    "cohere2": (4, 1),
}
_EMBEDDING_ARCHS = ("bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "t5encoder", "modern-bert")


class GGUFHeaderError(ValueError):
    def __init__(self, message: str, truncated: bool = False) -> None:
        super().__init__(message)
        self.truncated = truncated


def file_type_name(file_type: int) -> str:
    """``general.file_type`` 15 → ``Q4_K_M`` (llama.cpp's LlamaFileType names)."""
    import gguf

    try:
        return gguf.LlamaFileType(file_type).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    except ValueError:
        return f"type {file_type}"


def facts_from_gguf_header(
    name: str,
    header: bytes,
    blob_bytes: int,
    *,
    projector_bytes: int = 0,
    origin: str = "",
    read_at: str | None = None,
    ollama_names: tuple[str, ...] = (),
    hf_names: tuple[str, ...] = (),
) -> ModelFacts:
    """Facts of the model whose GGUF blob (``blob_bytes`` long) starts with ``header``."""
    if header[:4] != b"GGUF":
        raise GGUFHeaderError(f"{name}: the model blob does not start with the GGUF magic")
    with tempfile.NamedTemporaryFile(suffix=".gguf", delete=False) as handle:
        handle.write(header)
        handle.truncate(max(blob_bytes, len(header)))
        path = handle.name
    try:
        return _facts_from_file(
            name, path, len(header), projector_bytes, origin, read_at, ollama_names, hf_names, blob_bytes
        )
    finally:
        os.unlink(path)


def _facts_from_file(
    name: str,
    path: str,
    available: int,
    projector_bytes: int,
    origin: str,
    read_at: str | None,
    ollama_names: tuple[str, ...],
    hf_names: tuple[str, ...],
    blob_bytes: int,
) -> ModelFacts:
    import gguf

    try:
        reader = gguf.GGUFReader(path)
    except Exception as err:  # the reader raises ValueError/IndexError/struct errors on cut headers
        raise GGUFHeaderError(
            f"{name}: GGUF header not readable from {available} bytes: {err}", True
        ) from err
    if reader.data_offset > available + int(getattr(reader, "alignment", 32)):  # data starts aligned
        raise GGUFHeaderError(f"{name}: GGUF header is longer than the {available} bytes read", True)
    kv = {key: _value(field) for key, field in reader.fields.items()}
    arch = str(kv.get("general.architecture", ""))

    def get(key: str, default: Any = 0) -> Any:
        return kv.get(f"{arch}.{key}", default)

    layers = int(get("block_count"))
    heads = _scalar(get("attention.head_count"))
    kv_heads = _scalar(get("attention.head_count_kv", heads)) or heads
    hidden = int(get("embedding_length"))
    key_length = int(get("attention.key_length", 0)) or (hidden // heads if heads else 0)
    value_length = int(get("attention.value_length", 0)) or key_length
    window = int(get("attention.sliding_window", 0)) or None
    sliding = 0
    if window:
        period, global_ = _SLIDING_PATTERN.get(arch, (1, 0))
        sliding = layers - (layers // period) * global_ if period > 1 else layers
    tokens = kv.get("tokenizer.ggml.tokens")
    vocab = len(tokens) if isinstance(tokens, list) else int(get("vocab_size", 0))
    weights = sum(int(t.n_bytes) for t in reader.tensors)
    by_name = {str(t.name): int(t.n_bytes) for t in reader.tensors}
    parameters = sum(int(t.n_elements) for t in reader.tensors)
    file_type = kv.get("general.file_type")
    embedding = arch in _EMBEDDING_ARCHS or "pooling_type" in {k.rsplit(".", 1)[-1] for k in kv}
    if not layers or not heads:
        raise GGUFHeaderError(f"{name}: GGUF header gives no {arch}.block_count or attention.head_count")
    return ModelFacts(
        id=name.lower(),
        parameters=parameters,
        layers=layers,
        attention_heads=heads,
        kv_heads=kv_heads,
        head_dim=key_length,
        value_head_dim=value_length if value_length != key_length else None,
        hidden_size=hidden,
        vocab_size=vocab,
        context_length=int(get("context_length")),
        dtype="gguf",
        ollama_names=ollama_names,
        hf_names=hf_names,
        architecture=arch,
        sliding_window=window,
        sliding_layers=sliding,
        experts=int(get("expert_count", 0)),
        experts_used=int(get("expert_used_count", 0)),
        kv_lora_rank=int(get("attention.kv_lora_rank", 0)),
        qk_rope_head_dim=int(get("rope.dimension_count", 0)) if get("attention.kv_lora_rank", 0) else 0,
        embedding=embedding,
        tied_embeddings="output.weight" not in by_name,
        token_embedding_bytes=by_name.get("token_embd.weight"),
        vision=projector_bytes > 0 or any(k.startswith(("clip.", f"{arch}.vision.")) for k in kv),
        projector_bytes=projector_bytes,
        vision_graph_bytes=vision_graph(arch, kv),
        gguf_repo=bool(hf_names),
        ollama_quantization=file_type_name(int(file_type)) if file_type is not None else "",
        ollama_weights_bytes=weights or blob_bytes - reader.data_offset,
        origin=origin or f"GGUF header of {name}",
        read_at=read_at,
        extra={"gguf_kv_count": len(kv)},
    )


def _scalar(value: Any) -> int:
    """A head count may be one number or one per layer (then the largest)."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return max((int(v) for v in value), default=0)
    return int(value or 0)


def _value(field: Any) -> Any:
    try:
        return field.contents()
    except Exception:  # a field type the reader cannot decode: not one sizing needs
        return None


def vision_graph(arch: str, kv: dict[str, Any]) -> int:
    """The image encoder's graph for one image, as Ollama estimates it (``VisionGraphSize`` in
    ``fs/ggml/ggml.go``, v0.10): the image, its patches and the patches × patches attention
    scores of every head, in float32. 0 for a model without ``{arch}.vision.*`` keys."""

    def get(key: str, default: int = 0) -> int:
        value = kv.get(f"{arch}.vision.{key}", default)
        return int(value) if isinstance(value, int | float) else default

    image, patch = get("image_size"), get("patch_size")
    heads, embed, channels = get("attention.head_count"), get("embedding_length"), get("num_channels", 3)
    if not patch or not heads:
        return 0
    if arch == "qwen25vl":
        pixels = get("max_pixels", 28 * 28 * 1280)
        patches = pixels // (patch * patch)
        return 4 * (
            pixels * channels
            + patches * channels * patch * patch
            + patches * patches * heads
            + embed * patches
        )
    patches = (image // patch) ** 2
    return 4 * (image * image * channels + embed * patch + patches * patches * heads)
