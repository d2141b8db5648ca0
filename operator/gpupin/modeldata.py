"""Write model data (the format of ``data/models.yaml``) from the models' own metadata.

``gpupin models refresh`` re-reads every entry of a model-data file from its sources — the first
Hugging Face id's ``config.json`` and safetensors headers, the first Ollama name's manifest and
GGUF header — and writes the file back with the figures read, keeping each entry's id, names and
the file's opening comment. The bundled data can be regenerated this way where the services can be
reached (the shipped file was compiled from public copies of the same metadata, as each entry's
``source`` says); a cluster's own data (a ConfigMap for air-gapped clusters) is made the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

from gpupin import safeyaml
from gpupin.modelfacts import ModelFacts
from gpupin.modelsource import ModelSource, SourceError

_ARCH_KEYS: tuple[tuple[str, str], ...] = (
    ("architecture", "architecture"),
    ("parameters", "parameters"),
    ("layers", "layers"),
    ("attentionHeads", "attention_heads"),
    ("kvHeads", "kv_heads"),
    ("headDim", "head_dim"),
    ("valueHeadDim", "value_head_dim"),
    ("hiddenSize", "hidden_size"),
    ("vocabSize", "vocab_size"),
    ("contextLength", "context_length"),
    ("slidingWindow", "sliding_window"),
    ("slidingLayers", "sliding_layers"),
    ("experts", "experts"),
    ("expertsUsed", "experts_used"),
    ("kvLoraRank", "kv_lora_rank"),
    ("qkRopeHeadDim", "qk_rope_head_dim"),
    ("tiedEmbeddings", "tied_embeddings"),
    ("dtype", "dtype"),
    ("quantization", "quantization"),
    ("hfWeightsBytes", "hf_weights_bytes"),
    ("embedding", "embedding"),
    ("vision", "vision"),
)
_ORDER = ("id", "names", *(key for key, _ in _ARCH_KEYS), "projectorBytes", "ollama", "source")


def refresh(text: str, source: ModelSource, only: Iterable[str] = ()) -> tuple[str, list[str]]:
    """The model-data document ``text`` with every entry (or those whose id is in ``only``)
    re-read from its sources, and a line per entry that could not be read (kept as it was).
    ``text`` has passed :func:`~gpupin.sizing.parse_model_data`."""
    raw = safeyaml.load(text)
    wanted = set(only)
    problems: list[str] = []
    entries = []
    for entry in raw["models"]:
        if wanted and entry["id"] not in wanted:
            entries.append(entry)
            continue
        try:
            entries.append(_refreshed(entry, source))
        except SourceError as err:
            problems.append(f"{entry['id']}: {err}")
            entries.append(entry)
    body = yaml.safe_dump(
        {"models": [_ordered(e) for e in entries]}, sort_keys=False, width=110, allow_unicode=True
    )
    return _leading_comment(text) + body, problems


def _refreshed(entry: dict[str, Any], source: ModelSource) -> dict[str, Any]:
    names = entry.get("names") or {}
    result = dict(entry)
    read: list[str] = []
    hf = list(names.get("huggingface") or [])
    if hf:
        facts = source.huggingface(hf[0])
        result.update(_arch(facts))
        read.append(f"{facts.origin} at {facts.read_at}")
    ollama = list(names.get("ollama") or [])
    if ollama:
        facts = source.ollama(ollama[0])
        if not hf:
            result.update(_arch(facts))
        result["ollama"] = {
            "quantization": facts.ollama_quantization,
            "weightsBytes": facts.ollama_weights_bytes,
        }
        if facts.projector_bytes:
            result["projectorBytes"] = facts.projector_bytes
        read.append(f"{facts.origin} at {facts.read_at}")
    if read:
        result["source"] = "Read by gpupin models refresh from " + "; ".join(read) + "."
    return result


def _arch(facts: ModelFacts) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, field in _ARCH_KEYS:
        value = getattr(facts, field)
        if value in (None, 0, False, "") and key not in ("parameters", "layers"):
            continue
        values[key] = value
    return values


def _ordered(entry: dict[str, Any]) -> dict[str, Any]:
    ordered = {key: entry[key] for key in _ORDER if key in entry}
    ordered.update({k: v for k, v in entry.items() if k not in ordered})
    return ordered


def _leading_comment(text: str) -> str:
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return "\n".join(lines) + "\n" if lines else ""
