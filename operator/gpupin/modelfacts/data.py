"""Model data files: gpupin's bundled ``data/models.yaml`` and a cluster's own (a ConfigMap), one
format, read into :class:`~gpupin.modelfacts.ModelFacts`.

:func:`parse_model_data` checks what sizing divides by or multiplies with (positive counts, KV
heads that divide the attention heads, sliding layers within the layers) and raises
:class:`ModelDataError` naming the file, the entry and the field.
"""

from __future__ import annotations

from typing import Any, cast

import yaml

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
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ModelDataError(f"{origin}: not YAML: {err}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("models"), list):
        raise ModelDataError(f"{origin}: expected a mapping with a list under 'models'")
    return [_facts(entry, f"{origin}, models[{i}]", origin) for i, entry in enumerate(raw["models"])]


def _facts(entry: Any, where: str, origin: str) -> ModelFacts:
    if not isinstance(entry, dict):
        raise ModelDataError(f"{where}: expected a mapping")
    missing = [key for key in _REQUIRED if key not in entry]
    if missing:
        raise ModelDataError(f"{where} ({entry.get('id', '?')}): missing {', '.join(missing)}")
    names = entry.get("names") or {}
    ollama = entry.get("ollama") or {}
    try:
        optional = {
            field: int(entry[key]) for key, field in _OPTIONAL_INT.items() if entry.get(key) is not None
        }
        return ModelFacts(
            id=str(entry["id"]),
            ollama_names=tuple(str(n) for n in names.get("ollama", [])),
            hf_names=tuple(str(n) for n in names.get("huggingface", [])),
            parameters=int(entry["parameters"]),
            layers=int(entry["layers"]),
            attention_heads=int(entry["attentionHeads"]),
            kv_heads=int(entry["kvHeads"]),
            head_dim=int(entry["headDim"]),
            context_length=int(entry["contextLength"]),
            dtype=str(entry.get("dtype", "bfloat16")),
            architecture=str(entry.get("architecture", "")),
            quantization=entry.get("quantization"),
            embedding=bool(entry.get("embedding", False)),
            tied_embeddings=bool(entry.get("tiedEmbeddings", False)),
            vision=bool(entry.get("vision", False)),
            ollama_quantization=str(ollama.get("quantization", "")),
            ollama_weights_bytes=int(ollama.get("weightsBytes", 0)),
            source=" ".join(str(entry.get("source", "")).split()),
            origin=origin,
            **cast(dict[str, Any], {"hidden_size": 0, "vocab_size": 0, **optional}),
        )
    except (TypeError, ValueError) as err:
        raise ModelDataError(f"{where} ({entry.get('id')}): {err}") from None


def _check_shape(entry: dict[str, Any], where: str) -> None:
    """The figures sizing divides by or multiplies with must make sense together."""
    label = f"{where} ({entry.get('id')})"
    try:
        values = {key: int(entry[key]) for key in _REQUIRED[1:]}
        sliding = int(entry.get("slidingLayers") or 0)
    except (TypeError, ValueError) as err:
        raise ModelDataError(f"{label}: {err}") from None
    for key, value in values.items():
        if value <= 0:
            raise ModelDataError(f"{label}: {key} must be a positive integer, not {value}")
    if values["attentionHeads"] % values["kvHeads"]:
        raise ModelDataError(
            f"{label}: kvHeads {values['kvHeads']} does not divide attentionHeads {values['attentionHeads']}"
        )
    if not 0 <= sliding <= values["layers"]:
        raise ModelDataError(f"{label}: slidingLayers must be between 0 and layers ({values['layers']})")
