"""gpupin's memory estimates beside what the engines really used, as public reports show them.

``tests/fixtures/calibration.yaml`` holds the real figures, each with its source. For each row
:func:`rows` sizes the same model with the same settings the way the planner does (the packaged
model data, offline) and compares the part the figure measures:

- ``ollama-ps``: Ollama's ``ollama ps`` SIZE / ``/api/ps`` ``size`` from Ollama ≤ 0.12, its own
  estimate of the GPU memory (weights on the GPU, KV cache, compute graph and its 457 MiB CUDA
  reserve; ``llm/memory.go``); gpupin's whole estimate.
- ``ollama-ps-allocated``: the same figure from Ollama ≥ 0.13, which reports what its runner
  allocated (no reserve); gpupin's estimate less the 457 MiB reserve it plans per GPU.
- ``nvidia-smi``: the server's whole GPU memory, CUDA context included; gpupin's whole estimate.
- ``vllm-weights``: vLLM's "Model loading took X GiB" (per rank); gpupin's weights per rank.
- ``vllm-kv-per-token``: vLLM's KV cache memory ÷ its KV cache size in tokens; gpupin's KV bytes
  per token.

``python tests/calibration.py`` prints the README's calibration table; a test keeps them equal.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "operator"))

from gpupin.api.v1alpha1 import LLMDeploymentSpec  # noqa: E402
from gpupin.engines import ENGINES  # noqa: E402
from gpupin.engines.ollama_sizing import OLLAMA_CUDA_OVERHEAD  # noqa: E402

DATA = HERE / "fixtures" / "calibration.yaml"
TOLERANCE = 0.10
GB = 1e9
GiB = 2**30


@dataclass(frozen=True)
class Row:
    model: str
    engine: str
    settings: str
    kind: str
    real: float
    estimate: float
    unit: str
    source: str

    @property
    def error(self) -> float:
        return self.estimate / self.real - 1


def _spec(entry: dict[str, Any]) -> LLMDeploymentSpec:
    spec: dict[str, Any] = {"engine": entry["engine"], "models": [{"name": entry["model"]}]}
    if entry["engine"] == "ollama":
        spec["ollama"] = {
            "contextLength": entry["context"],
            "numParallel": entry.get("parallel", 1),
            "kvCacheType": entry.get("kvCacheType", "f16"),
        }
    else:
        spec["vllm"] = {k: v for k, v in (("maxModelLen", entry.get("context")),) if v}
        spec["tensorParallelSize"] = entry.get("tensorParallel", 1)
    return LLMDeploymentSpec.model_validate(spec)


def _settings(entry: dict[str, Any]) -> str:
    if entry["engine"] == "ollama":
        text = f"ctx {entry['context']}"
        if entry.get("parallel", 1) != 1:
            text += f" × {entry['parallel']}"
        return text
    parts = [f"max len {entry['context']}"] if entry.get("context") else []
    if entry.get("tensorParallel", 1) > 1:
        parts.append(f"TP {entry['tensorParallel']}")
    return ", ".join(parts) or "defaults"


def rows() -> list[Row]:
    """Every calibration row with gpupin's figure for it."""
    result = []
    for entry in yaml.safe_load(DATA.read_text())["rows"]:
        spec = _spec(entry)
        est = ENGINES.estimate(spec.models[0], spec)
        kind = entry["kind"]
        tp = spec.tensor_parallel_size
        if kind in ("ollama-ps", "nvidia-smi"):
            estimate = est.need_on(1)
        elif kind == "ollama-ps-allocated":
            estimate = est.need_on(1) - OLLAMA_CUDA_OVERHEAD
        elif kind == "vllm-weights":
            estimate = est.weights_bytes / tp
        elif kind == "vllm-kv-per-token":
            assert est.facts is not None, entry["model"]
            estimate = est.facts.kv_bytes(1, 1, 2.0)
        else:
            raise ValueError(f"calibration.yaml: unknown kind {kind!r}")
        result.append(
            Row(
                model=entry["model"],
                engine=entry["engine"],
                settings=_settings(entry),
                kind=kind,
                real=float(entry["real"]),
                estimate=float(estimate),
                unit=entry.get("unit", "GB"),
                source=entry["source"],
            )
        )
    return result


_KIND = {
    "ollama-ps": "ollama ps",
    "ollama-ps-allocated": "ollama ps (≥ 0.13)",
    "nvidia-smi": "nvidia-smi",
    "vllm-weights": "weights",
    "vllm-kv-per-token": "KV/token",
}


def _fmt(value: float, unit: str) -> str:
    if unit == "B":
        return f"{value:,.0f} B"
    scale = GiB if unit == "GiB" else GB
    return f"{value / scale:.2f} {unit}"


def table() -> str:
    """The README's calibration table (markdown)."""
    lines = [
        "| model | engine | settings | figure | real | gpupin | error | source |",
        "|---|---|---|---|---:|---:|---:|---|",
    ]
    for row in rows():
        lines.append(
            f"| {row.model} | {row.engine} | {row.settings} | {_KIND[row.kind]} | {_fmt(row.real, row.unit)} | "
            f"{_fmt(row.estimate, row.unit)} | {row.error:+.1%} | {row.source} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(table())
