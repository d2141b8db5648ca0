"""Model data files: gpupin's bundled ``data/models.yaml`` and a cluster's own (a ConfigMap), one
format, read into :class:`~gpupin.modelfacts.ModelFacts`.

:func:`parse_model_data` checks what sizing divides by or multiplies with (positive counts, KV
heads that divide the attention heads, sliding layers within the layers) and raises
:class:`ModelDataError` naming the file, the entry and the field.
"""

from __future__ import annotations

from typing import Any, cast

from gpupin import safeyaml
from gpupin.modelfacts.facts import ModelFacts


class ModelDataError(ValueError):
    """Model data (the bundled file or a cluster's ConfigMap) that cannot be read; the message
    names the file, the entry and the field."""


_REQUIRED = ("id", "parameters", "layers", "attentionHeads", "kvHeads", "headDim", "contextLength")
_OPTIONAL_INT = {
    "hiddenSize": "hidden_size",
    "vocabSize": "vocab_size",
    "valueHeadDim": "value_head_dim",
    "slidingWindow": "sliding_window",
    "slidingLayers": "sliding_layers",
    "experts": "experts",
    "expertsUsed": "experts_used",
    "kvLoraRank": "kv_lora_rank",
    "qkRopeHeadDim": "qk_rope_head_dim",
    "hfWeightsBytes": "hf_weights_bytes",
    "projectorBytes": "projector_bytes",
    "visionGraphBytes": "vision_graph_bytes",
}


def parse_model_data(text: str, origin: str) -> list[ModelFacts]:
    """Entries of a model-data YAML document (``models: [...]``, the format of
    ``data/models.yaml``). ``origin`` names the document in errors and in each entry's
    :attr:`~gpupin.modelfacts.ModelFacts.origin`. Raises :class:`ModelDataError`."""
    try:
        raw = safeyaml.load(text)
    except safeyaml.YAMLInputError as err:
        raise ModelDataError(f"{origin}: {err}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("models"), list):
        raise ModelDataError(f"{origin}: expected a mapping with a list under 'models'")
    return [_facts(entry, f"{origin}, models[{i}]", origin) for i, entry in enumerate(raw["models"])]


def _facts(entry: Any, where: str, origin: str) -> ModelFacts:
    if not isinstance(entry, dict):
        raise ModelDataError(f"{where}: expected a mapping")
    label = f"{where} ({entry.get('id', '?')})"
    missing = [key for key in _REQUIRED if key not in entry]
    if missing:
        raise ModelDataError(f"{label}: missing {', '.join(missing)}")
    _check_shape(entry, where)
    names = _mapping(entry, "names", label)
    ollama = _mapping(entry, "ollama", label)
    optional = {
        field: _count(entry, key, label) for key, field in _OPTIONAL_INT.items() if entry.get(key) is not None
    }
    return ModelFacts(
        id=_text(entry, "id", label) or "",
        ollama_names=_names(names, "ollama", label),
        hf_names=_names(names, "huggingface", label),
        parameters=_count(entry, "parameters", label),
        layers=_count(entry, "layers", label),
        attention_heads=_count(entry, "attentionHeads", label),
        kv_heads=_count(entry, "kvHeads", label),
        head_dim=_count(entry, "headDim", label),
        context_length=_count(entry, "contextLength", label),
        dtype=_text(entry, "dtype", label) or "bfloat16",
        architecture=_text(entry, "architecture", label) or "",
        quantization=_text(entry, "quantization", label),
        embedding=_flag(entry, "embedding", label),
        tied_embeddings=_flag(entry, "tiedEmbeddings", label),
        vision=_flag(entry, "vision", label),
        ollama_quantization=_text(ollama, "quantization", f"{label}: ollama") or "",
        ollama_weights_bytes=_count(ollama, "weightsBytes", f"{label}: ollama")
        if "weightsBytes" in ollama
        else 0,
        source=" ".join(str(entry.get("source", "")).split()),
        origin=origin,
        **cast(dict[str, Any], {"hidden_size": 0, "vocab_size": 0, **optional}),
    )


def _count(entry: dict[str, Any], key: str, label: str) -> int:
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ModelDataError(f"{label}: {key} must be a whole number ≥ 0, not {value!r}")
    return value


def _text(entry: dict[str, Any], key: str, label: str) -> str | None:
    value = entry.get(key)
    if value is not None and not isinstance(value, str):
        raise ModelDataError(f"{label}: {key} must be a string, not {value!r}")
    return value


def _flag(entry: dict[str, Any], key: str, label: str) -> bool:
    value = entry.get(key, False)
    if not isinstance(value, bool):
        raise ModelDataError(f"{label}: {key} must be true or false, not {value!r}")
    return value


def _mapping(entry: dict[str, Any], key: str, label: str) -> dict[str, Any]:
    value = entry.get(key) or {}
    if not isinstance(value, dict):
        raise ModelDataError(f"{label}: {key} must be a mapping, not {value!r}")
    return value


def _names(names: dict[str, Any], key: str, label: str) -> tuple[str, ...]:
    value = names.get(key) or []
    if not isinstance(value, list) or not all(isinstance(n, str) and n for n in value):
        raise ModelDataError(f"{label}: names.{key} must be a list of names, not {value!r}")
    return tuple(value)


def _check_shape(entry: dict[str, Any], where: str) -> None:
    """The figures sizing divides by or multiplies with must make sense together."""
    label = f"{where} ({entry.get('id')})"
    values = {key: _count(entry, key, label) for key in _REQUIRED[1:]}
    sliding = _count(entry, "slidingLayers", label) if entry.get("slidingLayers") is not None else 0
    for key, value in values.items():
        if value <= 0:
            raise ModelDataError(f"{label}: {key} must be a positive whole number, not {value}")
    if values["attentionHeads"] % values["kvHeads"]:
        raise ModelDataError(
            f"{label}: kvHeads {values['kvHeads']} does not divide attentionHeads {values['attentionHeads']}"
        )
    if not 0 <= sliding <= values["layers"]:
        raise ModelDataError(f"{label}: slidingLayers must be between 0 and layers ({values['layers']})")
