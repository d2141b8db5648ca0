"""The operator's model metadata (gpupin.controller.metadata): read in the background, never
blocking a reconcile, against tests/model_hub.py (a local stand-in for the registries)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpupin.controller.metadata import ModelMetadata, cluster_catalog
from gpupin.engines import ENGINES
from gpupin.modelsource import ModelSource
from gpupin.sizing import ModelDataError

from helpers import deployment, models
from model_hub import ModelHub


@pytest.fixture
def hub() -> Iterator[ModelHub]:
    with ModelHub() as served:
        yield served


async def _until(condition: object, timeout: float = 30) -> None:
    for _ in range(int(timeout * 20)):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


async def test_unknown_model_waits_for_its_metadata_then_plans_with_it(hub: ModelHub) -> None:
    reads: list[None] = []
    meta = ModelMetadata(
        ENGINES.catalog, ModelSource(hf_endpoint=hub.url, ollama_registry=hub.url), lambda: reads.append(None)
    )
    d = deployment(engine="ollama", models=models("tinyllama:1.1b"))
    assert meta.registry_for(d) is None  # being read: the reconcile is skipped, nothing is planned yet
    assert meta.registry_for(d) is None  # asked again while reading: no second read
    await _until(lambda: reads)
    registry = meta.registry_for(d)
    assert registry is not None
    est = registry.estimate(d.spec.models[0], d.spec)
    assert est.source == "metadata" and est.facts is not None and est.facts.layers == 22
    assert sum(1 for _, path, _ in hub.requests if "/manifests/" in path) == 1


async def test_known_models_and_vram_never_wait(hub: ModelHub) -> None:
    meta = ModelMetadata(
        ENGINES.catalog, ModelSource(hf_endpoint=hub.url, ollama_registry=hub.url), lambda: None
    )
    assert meta.registry_for(deployment(engine="ollama", models=models("llama3.1:8b"))) is not None
    assert (
        meta.registry_for(deployment(engine="ollama", models=[{"name": "acme:x", "vram": "4Gi"}])) is not None
    )
    assert hub.requests == []


async def test_a_missing_model_is_refused_as_unknown(hub: ModelHub) -> None:
    reads: list[None] = []
    meta = ModelMetadata(
        ENGINES.catalog, ModelSource(hf_endpoint=hub.url, ollama_registry=hub.url), lambda: reads.append(None)
    )
    d = deployment(engine="ollama", models=models("qwen3:31b"))
    meta.registry_for(d)
    await _until(lambda: reads)
    registry = meta.registry_for(d)
    assert registry is not None and registry.catalog.refused["qwen3:31b"][0] == "UnknownModel"


async def test_an_unreachable_registry_sizes_from_the_name_and_retries_later(hub: ModelHub) -> None:
    now = [0.0]
    reads: list[None] = []
    hub.fail_with = 503
    source = ModelSource(hf_endpoint=hub.url, ollama_registry=hub.url, failure_ttl=0)
    meta = ModelMetadata(
        ENGINES.catalog, source, lambda: reads.append(None), failure_ttl=60, clock=lambda: now[0]
    )
    d = deployment(engine="ollama", models=models("tinyllama:1.1b"))
    meta.registry_for(d)
    await _until(lambda: reads)
    registry = meta.registry_for(d)  # planned meanwhile, from the name; not waited for again
    assert registry is not None and registry.catalog.lookup("tinyllama:1.1b", "ollama") is None
    assert "503" in registry.catalog.notes["tinyllama:1.1b"]
    hub.fail_with = None
    now[0] = 61
    assert meta.registry_for(d) is not None  # retried in the background, the plan does not wait
    await _until(lambda: len(reads) == 2)
    registry = meta.registry_for(d)
    assert registry is not None and registry.catalog.lookup("tinyllama:1.1b", "ollama") is not None


def test_cluster_model_data_from_files_and_folders(tmp_path: Path) -> None:
    (tmp_path / "ours.yaml").write_text(
        "models:\n- {id: acme-7b, names: {ollama: ['acme:7b']}, parameters: 7000000000, layers: 32,"
        " attentionHeads: 32, kvHeads: 8, headDim: 128, contextLength: 8192,"
        " ollama: {quantization: Q4_K_M, weightsBytes: 4200000000}}\n"
    )
    catalog = cluster_catalog((str(tmp_path),))
    found = catalog.lookup("acme:7b", "ollama")
    assert found is not None and found.origin.endswith("ours.yaml")
    assert catalog.lookup("llama3.1:8b", "ollama") is not None  # the bundled data stays under it


def test_cluster_model_data_errors_name_the_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n- {id: acme-7b, parameters: 7000000000, layers: 32}\n")
    with pytest.raises(ModelDataError, match=r"bad.yaml, models\[0\] \(acme-7b\): missing attentionHeads"):
        cluster_catalog((str(bad),))


async def test_what_was_read_is_read_again_after_its_time(hub: ModelHub) -> None:
    now = [0.0]
    reads: list[None] = []
    source = ModelSource(hf_endpoint=hub.url, ollama_registry=hub.url, ttl=0)
    meta = ModelMetadata(ENGINES.catalog, source, lambda: reads.append(None), ttl=3600, clock=lambda: now[0])
    d = deployment(engine="ollama", models=models("tinyllama:1.1b"))
    meta.registry_for(d)
    await _until(lambda: reads)
    now[0] = 3601
    assert meta.registry_for(d) is not None  # the old facts serve while they are read again
    await _until(lambda: len(reads) == 2)
    assert sum(1 for _, path, _ in hub.requests if "/manifests/" in path) == 2
