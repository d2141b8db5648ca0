"""Users' cases (tests/fixtures/cases/, each with its public source) planned with `gpupin plan`.

Each test runs the case's own files. Offline tests size from gpupin's bundled model data; the
online ones read the model's metadata from ``tests/model_hub.py``, a local stand-in for Hugging
Face and the Ollama registry serving recorded metadata (the real services are out of reach here).
Case 04 (MIG labels) is in test_cli.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gpupin.cli import main
from gpupin.engines import ENGINES
from gpupin.quantity import GiB
from gpupin.sizing import ModelCatalog

from model_hub import ModelHub

CASES = Path(__file__).parent / "fixtures" / "cases"


def plan(
    capsys: pytest.CaptureFixture[str], case: str, deployments: str, inventory: str, *extra: str
) -> tuple[int, dict[str, Any], str]:
    folder = CASES / case
    code = main(
        [
            "plan",
            "-f",
            str(folder / deployments),
            "--inventory",
            str(folder / inventory),
            "-o",
            "json",
            *extra,
        ]
    )
    out, err = capsys.readouterr()
    return code, json.loads(out), err


@pytest.fixture
def hub() -> Iterator[ModelHub]:
    with ModelHub() as served:
        yield served


def online(hub: ModelHub, monkeypatch: pytest.MonkeyPatch, *unknown_ids: str) -> list[str]:
    """Flags to read metadata from the stand-in hub, with the bundled entries ``unknown_ids``
    taken out of the data (so the models are read as any model gpupin does not know would be)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    kept = [e for e in ENGINES.catalog.entries if e.id not in unknown_ids]
    monkeypatch.setattr(ENGINES, "_catalog", ModelCatalog(kept))
    return ["--model-metadata", "online", "--hf-endpoint", hub.url, "--ollama-registry", hub.url]


def reserved(result: dict[str, Any]) -> int:
    return sum(g["vramBytes"] for p in result["placements"] for g in p["gpus"])


# --------------------------------------------------------------------- 09: FP8 on Turing
@pytest.mark.parametrize("metadata", ["bundled", "online"])
def test_fp8_checkpoint_is_refused_on_a_t4(
    capsys: pytest.CaptureFixture[str], hub: ModelHub, monkeypatch: pytest.MonkeyPatch, metadata: str
) -> None:
    # rh-aiservices-bu/rhoai-maas-guide#53: RedHatAI/gemma-2-9b-it-FP8 fails at vLLM start-up on T4.
    # vLLM 0.33 runs FP8 weight-only below 8.9 with 16-bit activations, and Gemma 2 has no float16
    # in vLLM: on a 7.5 GPU it would need float32 activations, which no FP8 kernel takes.
    extra = online(hub, monkeypatch, "gemma2-9b-fp8") if metadata == "online" else []
    code, out, _ = plan(capsys, "09-fp8-on-turing", "deployments.yaml", "inventory.yaml", *extra)
    (result,) = out["deployments"]
    assert code == 1
    assert (result["outcome"], result["reason"]) == ("Refused", "UnsupportedComputeCapability")
    assert "compute capability 8.0" in result["message"] and "W8A8-FP8" in result["message"]
    assert "engine: ollama" in result["message"]
    assert not [m for m in out["manifests"] if m["kind"] == "Pod"]
    if metadata == "online":
        (sized,) = result["models"]
        assert sized["source"] == "metadata" and hub.url in sized["origin"] and sized["readAt"]


def test_fp8_replicas_are_not_put_on_the_t4(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = plan(capsys, "09-fp8-on-turing", "deployments-2-replicas.yaml", "inventory-t4-l4.yaml")
    (result,) = out["deployments"]
    assert (code, result["outcome"], result["reason"]) == (1, "Refused", "TooFewGPUs")


def test_quantized_checkpoint_is_never_served_as_half(capsys: pytest.CaptureFixture[str]) -> None:
    # the float16 fallback is for bfloat16 weights: on the L4 the FP8 model runs as it is
    code, out, _ = plan(capsys, "09-fp8-on-turing", "deployments.yaml", "inventory-t4-l4.yaml")
    (result,) = out["deployments"]
    assert (code, result["outcome"], result["reason"]) == (0, "Placed", "Placed")
    (pod,) = [m for m in out["manifests"] if m["kind"] == "Pod"]
    args = pod["spec"]["containers"][0]["args"]
    assert "--dtype" not in args
    assert result["placements"][0]["node"] == "l4-node"


# --------------------------------------------------------------------- 10: MoE KV cache
@pytest.mark.parametrize("metadata", ["bundled", "online"])
def test_moe_model_reserves_what_ollama_uses(
    capsys: pytest.CaptureFixture[str], hub: ModelHub, monkeypatch: pytest.MonkeyPatch, metadata: str
) -> None:
    # ollama/ollama#10458: qwen3:30b-a3b at 38000 × 2 on a 3090 + 4090 uses ≈ 26 GiB
    # (17.3 weights + 7.0 KV: 48 layers × 4 KV heads × 128 + graphs and CUDA contexts)
    extra = online(hub, monkeypatch, "qwen3-30b-a3b-2507") if metadata == "online" else []
    code, out, _ = plan(capsys, "10-moe-kv-estimate", "deployments.yaml", "inventory.yaml", *extra)
    (result,) = out["deployments"]
    assert (code, result["outcome"]) == (0, "Placed")
    assert 26 * GiB * 0.85 <= reserved(result) <= 26 * GiB * 1.15, reserved(result) / GiB
    assert len(result["placements"][0]["gpus"]) == 2
    (sized,) = result["models"]
    assert sized["source"] == ("metadata" if metadata == "online" else "data")


def test_moe_model_fits_one_3090_at_32k(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = plan(capsys, "10-moe-kv-estimate", "deployments-single-3090-32k.yaml", "inventory.yaml")
    (result,) = out["deployments"]
    assert (code, result["outcome"]) == (0, "Placed"), result["message"]
    assert 21 * GiB * 0.85 <= reserved(result) <= 21 * GiB * 1.15, reserved(result) / GiB


# --------------------------------------------------------------------- 11: embedding model
def test_embedding_model_is_sized_and_placed_beside_the_chat_model(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # davealtena/homelab#1984: qwen3:14b and bge-m3 kept loaded on one RTX 5060 Ti use ≈ 11 GB
    code, out, _ = plan(capsys, "11-embedding-model-unsized", "deployments.yaml", "inventory.yaml")
    (result,) = out["deployments"]
    assert (code, result["outcome"]) == (0, "Placed"), result["message"]
    assert len(result["placements"]) == 1
    assert 11e9 * 0.85 <= reserved(result) <= 11e9 * 1.15, reserved(result) / 1e9
    assert {m["source"] for m in result["models"]} == {"data"}


def test_a_spec_vram_is_the_last_word(capsys: pytest.CaptureFixture[str]) -> None:
    # the user's figure wins, even the 16Gi an older hint suggested: on a 15.9 GiB card it cannot fit
    code, out, _ = plan(
        capsys, "11-embedding-model-unsized", "deployments-following-the-hint.yaml", "inventory.yaml"
    )
    (result,) = out["deployments"]
    assert (code, result["outcome"], result["reason"]) == (1, "Refused", "InsufficientVRAM")


# --------------------------------------------------------------------- 13: GGUF quantization tags
@pytest.mark.parametrize("metadata", ["bundled", "online"])
def test_unsloth_quantization_tags_are_planned(
    capsys: pytest.CaptureFixture[str], hub: ModelHub, monkeypatch: pytest.MonkeyPatch, metadata: str
) -> None:
    # found by input testing: `_XL` and `UD-` tags crashed the sizer with a KeyError (no public issue)
    extra = online(hub, monkeypatch, "qwen3-30b-a3b", "qwen3-30b-a3b-2507") if metadata == "online" else []
    code, out, err = plan(capsys, "13-gguf-xl-quant-tags", "deployments.yaml", "inventory.yaml", *extra)
    assert "Traceback" not in err
    outcomes = [(d["name"], d["outcome"], d["reason"]) for d in out["deployments"]]
    # the 4090 takes the Qwen3 MoE (Q4_K_XL sized as Q4_K_M: ~18 GiB), so Gemma 3 27B (~19 GiB) finds
    # no room left on it and is too big for the 3060; the other two share the 3060
    assert outcomes == [
        ("qwen3-moe-gguf", "Placed", "Placed"),
        ("gemma3-gguf-ud", "Refused", "InsufficientGPUs"),
        ("qwen3-8b-q6kxl", "Placed", "Placed"),
        ("control-q4km", "Placed", "Placed"),
    ]
    assert code == 1
    assert "qwen3-moe-gguf" in out["deployments"][1]["message"]  # names who holds the 4090
    sources = {m["name"]: m["source"] for d in out["deployments"] for m in d["models"]}
    assert "name" not in sources.values(), sources  # every tag sized from the model's own data
    if metadata == "online":
        assert sources["hf.co/unsloth/Qwen3-30B-A3B-GGUF:Q4_K_XL"] == "metadata"
