"""Reading model metadata from its source: Hugging Face repos and Ollama registries.

The services are stood in for by ``tests/model_hub.py`` (a local HTTP server speaking their
protocols over recorded metadata): the real ones cannot be reached from the test machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpupin import modelsource
from gpupin.api.v1alpha1 import LLMDeployment
from gpupin.engines import ENGINES
from gpupin.modelsource import (
    ModelNotFound,
    ModelSource,
    ModelUnsupported,
    OllamaName,
    SourceUnavailable,
    resolve_models,
)
from gpupin.planner import Planner
from gpupin.quantity import GiB
from gpupin.sizing import ModelCatalog

from helpers import RTX_4090, inventory, node
from model_hub import GATED_TOKEN, ModelHub


@pytest.fixture(autouse=True)
def _online(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)


@pytest.fixture
def hub() -> Iterator[ModelHub]:
    with ModelHub() as served:
        yield served


def source_for(hub: ModelHub, **kwargs: object) -> ModelSource:
    return ModelSource(hf_endpoint=hub.url, ollama_registry=hub.url, **kwargs)  # type: ignore[arg-type]


def test_ollama_model_from_manifest_and_gguf_header(hub: ModelHub) -> None:
    facts = source_for(hub).facts("qwen3:30b-a3b", "ollama")
    assert (facts.architecture, facts.layers, facts.kv_heads, facts.head_dim) == ("qwen3moe", 48, 4, 128)
    assert (facts.experts, facts.experts_used, facts.context_length) == (128, 8, 40960)
    assert facts.ollama_quantization == "Q4_K_M"
    assert facts.ollama_weights_bytes == pytest.approx(18.55e9, rel=0.001)
    assert not facts.tied_embeddings and facts.token_embedding_bytes
    assert facts.read_at and "library/qwen3:30b-a3b" in facts.origin and hub.url in facts.origin
    # the KV cache the case report derives: 48 × 4 × 128 × 2 × 2 bytes = 96 KiB per token
    assert facts.kv_bytes(1, 1, 2.0) == 96 * 1024


def test_only_the_header_is_read_never_the_weights(hub: ModelHub) -> None:
    source_for(hub).facts("qwen3:30b-a3b", "ollama")
    blob_gets = [(path, rng) for method, path, rng in hub.requests if "/blobs/" in path]
    assert blob_gets and all(rng and rng.startswith("bytes=0-") for _, rng in blob_gets)
    assert hub.bytes_served < 20 * 1024 * 1024


def test_a_cut_header_is_read_further(hub: ModelHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(modelsource, "HEADER_FIRST_READ", 16 * 1024)  # its tokenizer alone is ~300 KB
    facts = source_for(hub).facts("tinyllama:1.1b", "ollama")
    ranges = [rng for _, path, rng in hub.requests if "/blobs/" in path]
    assert len(ranges) > 1 and (facts.layers, facts.kv_heads, facts.vocab_size) == (22, 4, 32000)


def test_vision_projector_layer_is_counted(hub: ModelHub) -> None:
    facts = source_for(hub).facts("llava:7b", "ollama")
    assert facts.vision and facts.projector_bytes == 624434368
    est = ENGINES.with_catalog(ENGINES.catalog.overlay([facts])).estimate(
        *_model("llava:7b", "ollama", {"contextLength": 4096})
    )
    assert est.weights_bytes > facts.ollama_weights_bytes  # the projector is loaded beside the model


def test_gguf_repo_on_hugging_face_through_its_ollama_registry(hub: ModelHub) -> None:
    facts = source_for(hub).facts("hf.co/unsloth/Qwen3-30B-A3B-GGUF:Q4_K_XL", "ollama")
    assert facts.gguf_repo and facts.hf_names == ("unsloth/Qwen3-30B-A3B-GGUF",)
    assert facts.layers == 48 and facts.ollama_weights_bytes == pytest.approx(17.69e9, rel=0.001)


def test_missing_ollama_model_is_unknown(hub: ModelHub) -> None:
    with pytest.raises(ModelNotFound, match="does not exist"):
        source_for(hub).facts("qwen3:31b", "ollama")


def test_hugging_face_repo_config_and_sharded_safetensors(hub: ModelHub) -> None:
    facts = source_for(hub, hf_token=GATED_TOKEN).facts("meta-llama/Llama-3.1-8B-Instruct", "huggingface")
    assert facts.parameters == 8030261248
    assert facts.hf_weights_bytes == 2 * 8030261248
    assert (facts.layers, facts.kv_heads, facts.context_length, facts.tied_embeddings) == (
        32,
        8,
        131072,
        False,
    )
    assert "safetensors headers" in facts.origin


def test_gated_repo_without_a_token_says_what_to_do(hub: ModelHub) -> None:
    with pytest.raises(SourceUnavailable, match=r"gated.*HF_TOKEN"):
        source_for(hub).facts("meta-llama/Llama-3.1-8B-Instruct", "huggingface")


def test_token_and_endpoint_come_from_the_environment(hub: ModelHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_TOKEN", GATED_TOKEN)
    facts = ModelSource().facts("meta-llama/Llama-3.1-8B-Instruct", "huggingface")
    assert facts.layers == 32


def test_quantization_is_read_from_config_json(hub: ModelHub) -> None:
    facts = source_for(hub).facts("RedHatAI/gemma-2-9b-it-FP8", "huggingface")
    assert facts.quantization == "w8a8-fp8"
    assert facts.hf_weights_bytes == 8323596288 + 2 * 918109696
    assert (facts.sliding_window, facts.sliding_layers) == (4096, 21)


def test_embedding_model_in_float32(hub: ModelHub) -> None:
    facts = source_for(hub).facts("BAAI/bge-m3", "huggingface")
    assert facts.embedding and facts.dtype == "float32" and facts.parameters == 567754752


def test_gguf_repo_asked_for_vllm_points_to_ollama(hub: ModelHub) -> None:
    with pytest.raises(ModelUnsupported, match=r"engine: ollama with hf.co/unsloth/Qwen3-8B-GGUF"):
        source_for(hub).facts("unsloth/Qwen3-8B-GGUF", "huggingface")


def test_missing_repo_is_unknown(hub: ModelHub) -> None:
    with pytest.raises(ModelNotFound):
        source_for(hub).facts("Qwen/Qwen3-9B", "huggingface")


def test_unreachable_source_is_not_unknown_and_is_retried_after_a_while(hub: ModelHub) -> None:
    now = [0.0]
    source = source_for(hub, failure_ttl=60, clock=lambda: now[0])
    hub.fail_with = 503
    with pytest.raises(SourceUnavailable):
        source.facts("qwen3:30b-a3b", "ollama")
    asked = len(hub.requests)
    with pytest.raises(SourceUnavailable):  # remembered: the registry is not asked again at once
        source.facts("qwen3:30b-a3b", "ollama")
    assert len(hub.requests) == asked
    hub.fail_with = None
    now[0] = 61
    assert source.facts("qwen3:30b-a3b", "ollama").layers == 48


def test_answers_are_cached(hub: ModelHub) -> None:
    source = source_for(hub)
    source.facts("qwen3:30b-a3b", "ollama")
    asked = len(hub.requests)
    source.facts("QWEN3:30b-a3b", "ollama")
    assert len(hub.requests) == asked


def test_no_network_at_all_is_unavailable() -> None:
    source = ModelSource(hf_endpoint="http://127.0.0.1:9", ollama_registry="http://127.0.0.1:9", timeout=2)
    with pytest.raises(SourceUnavailable):
        source.facts("qwen3:30b-a3b", "ollama")
    with pytest.raises(SourceUnavailable):
        source.facts("Qwen/Qwen3-8B", "huggingface")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("qwen3:30b-a3b", ("", "library", "qwen3", "30b-a3b")),
        ("llama3.1", ("", "library", "llama3.1", "latest")),
        ("user/model:tag", ("", "user", "model", "tag")),
        ("hf.co/unsloth/Qwen3-8B-GGUF:UD-Q4_K_XL", ("hf.co", "unsloth", "Qwen3-8B-GGUF", "UD-Q4_K_XL")),
        ("registry.ollama.ai/library/qwen2.5:14b", ("registry.ollama.ai", "library", "qwen2.5", "14b")),
    ],
)
def test_ollama_names(name: str, expected: tuple[str, str, str, str]) -> None:
    ref = OllamaName.parse(name)
    assert (ref.host, ref.namespace, ref.model, ref.tag) == expected


# --------------------------------------------------------------------- planning with what was read
def _model(name: str, engine: str, options: dict[str, object]) -> tuple[object, object]:
    deployment = _deployment(name, engine, options)
    return deployment.spec.models[0], deployment.spec


def _deployment(name: str, engine: str, options: dict[str, object]) -> LLMDeployment:
    return LLMDeployment.model_validate(
        {
            "apiVersion": "gpupin.dev/v1alpha1",
            "kind": "LLMDeployment",
            "metadata": {"name": "d", "namespace": "default"},
            "spec": {"engine": engine, "models": [{"name": name}], engine: options},
        }
    )


def test_misspelt_model_is_refused_as_unknown_not_sized_from_its_name(hub: ModelHub) -> None:
    deployment = _deployment("qwen3:31b", "ollama", {})
    engines, notes = resolve_models([deployment.spec], ENGINES, source_for(hub))
    result = Planner(inventory(node("n", RTX_4090)), engines=engines).plan(deployment)
    assert (result.outcome, result.reason) == ("Refused", "UnknownModel")
    assert "qwen3:31b" in result.message and "does not exist" in result.message
    assert not notes


def test_unreachable_source_sizes_from_the_name_and_says_so(hub: ModelHub) -> None:
    hub.fail_with = 503
    deployment = _deployment("qwen3:31b", "ollama", {})
    engines, notes = resolve_models([deployment.spec], ENGINES, source_for(hub))
    result = Planner(inventory(node("n", RTX_4090)), engines=engines).plan(deployment)
    assert result.placed and result.models[0].source == "name"
    assert notes and "qwen3:31b" in notes[0] and "503" in notes[0]


def test_models_the_data_knows_are_not_asked_for(hub: ModelHub) -> None:
    deployment = _deployment("llama3.1:8b", "ollama", {})
    resolve_models([deployment.spec], ENGINES, source_for(hub))
    assert hub.requests == []


def test_metadata_read_is_visible_in_the_plan(hub: ModelHub) -> None:
    deployment = _deployment("qwen3:30b-a3b", "ollama", {"contextLength": 8192})
    engines, _ = resolve_models([deployment.spec], ENGINES.with_catalog(ModelCatalog([])), source_for(hub))
    result = Planner(inventory(node("n", RTX_4090)), engines=engines).plan(deployment)
    (sized,) = result.models
    assert sized.source == "metadata" and sized.read_at and hub.url in sized.origin
    assert 18 * GiB < sized.vram_bytes < 22 * GiB


def test_a_gguf_repo_on_vllm_is_unsupported_with_the_ollama_name(hub: ModelHub) -> None:
    deployment = _deployment("unsloth/Qwen3-8B-GGUF", "vllm", {})
    engines, _ = resolve_models([deployment.spec], ENGINES, source_for(hub))
    result = Planner(inventory(node("n", RTX_4090)), engines=engines).plan(deployment)
    assert (result.outcome, result.reason) == ("Refused", "UnsupportedModel")
    assert "hf.co/unsloth/Qwen3-8B-GGUF" in result.message


def test_names_no_registry_can_hold_are_unknown_not_a_crash(hub: ModelHub) -> None:
    for name, scheme in (("a/b/c/d", "huggingface"), ("a..b/c:d", "ollama")):
        with pytest.raises(ModelNotFound):
            source_for(hub).facts(name, scheme)


def test_a_cached_failure_is_raised_anew(hub: ModelHub) -> None:
    source = source_for(hub)
    errors = []
    for _ in range(2):
        with pytest.raises(ModelNotFound) as raised:
            source.facts("qwen3:31b", "ollama")
        errors.append(raised.value)
    assert errors[0] is not errors[1] and str(errors[0]) == str(errors[1])


def test_offline_is_the_test_default() -> None:
    assert os.environ.get("GPUPIN_MODEL_METADATA") == "offline"


def test_header_reader_agrees_with_the_gguf_package(tmp_path: Path) -> None:
    # gpupin reads GGUF headers itself (in memory, skipping the tokenizer's strings); the gguf
    # package's own reader must see the same keys and tensors in the same bytes
    import gguf

    from gpupin.modelfacts.gguf_header import read_header

    from model_hub import FIXTURES, _gguf_header

    for folder, tag in (("library/qwen3", "30b-a3b"), ("library/llava", "7b"), ("library/tinyllama", "1.1b")):
        header = _gguf_header(str(FIXTURES / "ollama" / folder), tag)
        path = tmp_path / f"{tag}.gguf"
        path.write_bytes(header)
        ours = read_header(header)
        os.truncate(path, ours.data_offset + sum(t.bytes for t in ours.tensors))  # sparse: no weights written
        theirs = gguf.GGUFReader(path)
        assert [t.name for t in ours.tensors] == [t.name for t in theirs.tensors]
        assert [t.bytes for t in ours.tensors] == [int(t.n_bytes) for t in theirs.tensors]
        assert ours.data_offset == theirs.data_offset
        for key, field in theirs.fields.items():
            if key.startswith("GGUF."):
                continue
            value = field.contents()
            mine = ours.kv[key]
            assert (len(value) if isinstance(value, list) and len(value) > 4096 else value) == mine, key


@pytest.mark.parametrize("cut", [3, 40, 5000, 300_000])
def test_cut_headers_say_so(cut: int) -> None:
    from gpupin.modelfacts.gguf_header import GGUFHeaderError, read_header

    from model_hub import FIXTURES, _gguf_header

    header = _gguf_header(str(FIXTURES / "ollama" / "library" / "tinyllama"), "1.1b")
    with pytest.raises(GGUFHeaderError) as raised:
        read_header(header[:cut])
    assert raised.value.truncated or cut < 4
