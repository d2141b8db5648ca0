"""Model facts from a GGUF header (Ollama's model format, and GGUF repos on Hugging Face).

Only the header of a multi-GB blob is needed (magic, key/values, tensor infos). It is read here
from the bytes in memory, one value at a time, keeping the keys sizing needs and only the length
of arrays (the tokenizer's 150k+ strings and merges are skipped, not decoded): ``gguf``'s own
``GGUFReader`` needs a file (the operator's root file system is read-only) and builds an object per
token (a 7 MB header with its tokenizer merges took seconds and hundreds of MB in one measurement
on the 2-core development machine). The
``gguf`` package still gives the format's constants: value types, quantization block sizes and
file type names; ``tests/test_modelsource.py`` checks this reader against ``GGUFReader``.
Keys follow llama.cpp's ``{arch}.block_count``, ``{arch}.attention.head_count_kv`` … naming.

Raises :class:`GGUFHeaderError` when the bytes are not a GGUF header or end inside it
(:attr:`GGUFHeaderError.truncated`: read more and try again).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from gpupin.modelfacts.facts import ModelFacts

# Architectures whose sliding-window layers alternate with full ones, and how many of every
# ``period`` layers are global (llama.cpp and Ollama hard-code these per architecture).
_SLIDING_PATTERN: dict[str, tuple[int, int]] = {
    "gemma2": (2, 1),
    "gemma3": (6, 1),
    "gpt-oss": (2, 1),
    "gptoss": (2, 1),
    "cohere2": (4, 1),
}
_EMBEDDING_ARCHS = ("bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "t5encoder", "modern-bert")
_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9
_KEEP_ARRAY = 4096
"""Numeric arrays up to this long are kept (per-layer head counts); longer ones only counted."""


class GGUFHeaderError(ValueError):
    def __init__(self, message: str, truncated: bool = False) -> None:
        super().__init__(message)
        self.truncated = truncated


@dataclass(frozen=True)
class TensorInfo:
    name: str
    elements: int
    type: int
    bytes: int


@dataclass(frozen=True)
class Header:
    """A parsed GGUF header: key/values (arrays of strings as their length, as :class:`ArrayLength`),
    tensor infos, and where the tensor data starts (bytes from the start of the file)."""

    kv: dict[str, Any]
    tensors: tuple[TensorInfo, ...]
    data_offset: int


class ArrayLength(int):
    """An array that was counted, not kept (e.g. ``tokenizer.ggml.tokens``)."""


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self.at + size > len(self.data):
            raise GGUFHeaderError(f"header ends after {len(self.data)} bytes", truncated=True)
        (value,) = struct.unpack_from(fmt, self.data, self.at)
        self.at += size
        return value

    def string(self) -> str:
        length = self.take("<Q")
        if self.at + length > len(self.data):
            raise GGUFHeaderError(f"header ends after {len(self.data)} bytes", truncated=True)
        raw = self.data[self.at : self.at + length]
        self.at += length
        return raw.decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        length = self.take("<Q")
        self.at += length
        if self.at > len(self.data):
            raise GGUFHeaderError(f"header ends after {len(self.data)} bytes", truncated=True)

    def value(self, kind: int) -> Any:
        if kind in _SCALARS:
            return self.take(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item, count = self.take("<I"), self.take("<Q")
            if item == _STRING:
                for _ in range(count):
                    self.skip_string()
                return ArrayLength(count)
            if item not in _SCALARS:
                raise GGUFHeaderError(f"array of unknown value type {item}")
            size = struct.calcsize(_SCALARS[item])
            if count > _KEEP_ARRAY:
                self.at += size * count
                if self.at > len(self.data):
                    raise GGUFHeaderError(f"header ends after {len(self.data)} bytes", truncated=True)
                return ArrayLength(count)
            return [self.value(item) for _ in range(count)]
        raise GGUFHeaderError(f"unknown value type {kind}")


def read_header(data: bytes) -> Header:
    """Parse the GGUF header at the start of ``data`` (versions 2 and 3)."""
    import gguf

    if data[:4] != b"GGUF":
        raise GGUFHeaderError("not a GGUF file (no GGUF magic)")
    cur = _Cursor(data)
    cur.at = 4
    version = cur.take("<I")
    if version not in (2, 3):
        raise GGUFHeaderError(f"GGUF version {version} is not supported (2 and 3 are)")
    tensor_count, kv_count = cur.take("<Q"), cur.take("<Q")
    kv: dict[str, Any] = {}
    for _ in range(kv_count):
        key = cur.string()
        kv[key] = cur.value(cur.take("<I"))
    tensors = []
    for _ in range(tensor_count):
        name = cur.string()
        dims = [cur.take("<Q") for _ in range(cur.take("<I"))]
        kind = cur.take("<I")
        cur.take("<Q")  # offset within the data section
        elements = 1
        for dim in dims:
            elements *= dim
        try:
            block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(kind)]
        except (ValueError, KeyError):
            raise GGUFHeaderError(f"tensor {name} has a type gguf does not know ({kind})") from None
        tensors.append(TensorInfo(name, elements, kind, elements // block * type_size))
    alignment = int(kv.get("general.alignment", 32) or 32)
    offset = -(-cur.at // alignment) * alignment
    return Header(kv, tuple(tensors), offset)


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
    try:
        parsed = read_header(header)
    except GGUFHeaderError as err:
        raise GGUFHeaderError(f"{name}: {err}", err.truncated) from None
    kv = parsed.kv
    arch = str(kv.get("general.architecture", ""))

    def number(key: str, default: int = 0) -> int:
        return _scalar(kv.get(f"{arch}.{key}", default))

    layers = number("block_count")
    heads = number("attention.head_count")
    kv_heads = number("attention.head_count_kv", heads) or heads
    hidden = number("embedding_length")
    if not layers or not heads:
        raise GGUFHeaderError(f"{name}: GGUF header gives no {arch}.block_count or attention.head_count")
    key_length = number("attention.key_length") or (hidden // heads)
    value_length = number("attention.value_length") or key_length
    window = number("attention.sliding_window") or None
    sliding = 0
    if window:
        period, global_ = _SLIDING_PATTERN.get(arch, (1, 0))
        sliding = layers - (layers // period) * global_ if period > 1 else layers
    tokens = kv.get("tokenizer.ggml.tokens")
    vocab = (
        int(tokens)
        if isinstance(tokens, int)
        else len(tokens)
        if isinstance(tokens, list)
        else number("vocab_size")
    )
    weights = sum(t.bytes for t in parsed.tensors)
    parameters = sum(t.elements for t in parsed.tensors)
    by_name = {t.name: t.bytes for t in parsed.tensors}
    file_type = kv.get("general.file_type")
    embedding = arch in _EMBEDDING_ARCHS or f"{arch}.pooling_type" in kv
    kv_lora = number("attention.kv_lora_rank")
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
        context_length=number("context_length"),
        dtype="gguf",
        ollama_names=ollama_names,
        hf_names=hf_names,
        architecture=arch,
        sliding_window=window,
        sliding_layers=sliding,
        experts=number("expert_count"),
        experts_used=number("expert_used_count"),
        kv_lora_rank=kv_lora,
        qk_rope_head_dim=number("rope.dimension_count") if kv_lora else 0,
        embedding=embedding,
        tied_embeddings="output.weight" not in by_name,
        token_embedding_bytes=by_name.get("token_embd.weight"),
        vision=projector_bytes > 0 or any(k.startswith(("clip.", f"{arch}.vision.")) for k in kv),
        projector_bytes=projector_bytes,
        vision_graph_bytes=vision_graph(arch, kv),
        gguf_repo=bool(hf_names),
        ollama_quantization=file_type_name(_scalar(file_type)) if file_type is not None else "",
        ollama_weights_bytes=weights or max(blob_bytes - parsed.data_offset, 0),
        origin=origin or f"GGUF header of {name}",
        read_at=read_at,
    )


def _scalar(value: Any) -> int:
    """A count may be one number or one per layer (then the largest); anything else is 0."""
    if isinstance(value, list):
        return max((int(v) for v in value if isinstance(v, int | float)), default=0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return int(value)


def vision_graph(arch: str, kv: dict[str, Any]) -> int:
    """Bytes of the image encoder's graph for one image, as Ollama estimates it
    (``VisionGraphSize`` in ``fs/ggml/ggml.go``, v0.10): the image, its patches and the
    patches × patches attention scores of every head, in float32. 0 for a model without
    ``{arch}.vision.*`` keys."""

    def get(key: str, default: int = 0) -> int:
        return _scalar(kv.get(f"{arch}.vision.{key}", default)) or default

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
