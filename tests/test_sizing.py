"""Model memory estimates.

Aspects: the figures that must come out right (microsoft/phi-4 in bf16 is ~29.3 GB of
weights); the seed's models land where the seed says they fit; every model the seed
names is in the data in both naming schemes; sources in order (vram, data, name);
Ollama tags with a quantization; names the estimator cannot size.
"""

from __future__ import annotations

import pytest

from gpupin.engines import ENGINES
from gpupin.quantity import GiB, parse_bytes
from gpupin.sizing import (
    GGUF_QUANT_BYTES,
    ModelCatalog,
    ModelDataError,
    SizingError,
    normalize_ollama,
    parameters_from_name,
    parse_model_data,
)

from helpers import deployment, models

CATALOG = ModelCatalog.packaged()


def _estimate(name: str, engine: str, **spec: object):  # type: ignore[no-untyped-def]
    item = deployment(engine=engine, models=models(name), **spec)
    return ENGINES.estimate(item.spec.models[0], item.spec)


def test_phi4_bf16_is_29_3_gb_of_weights() -> None:
    est = _estimate("microsoft/phi-4", "vllm")
    assert round(est.weights_bytes / 1e9, 1) == 29.3
    assert est.need_on(1) > parse_bytes("12282Mi") + parse_bytes("6144Mi"), "fits neither 12 GB nor 12 + 6 GB"
    assert "29.3 GB" in est.explain()


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [
        # the seed's table says qwen2.5:14b 9-10 GB, llama3.1:8b 5-6 GB, nomic 0.5 GB; Ollama's own
        # reports (domain notes): llama3.1:8b 5.3 GB at 4096 tokens, qwen2.5:14b 8148 MiB weights + KV.
        ("qwen2.5:14b", 9.0, 11.0),
        ("llama3.1:8b", 5.0, 6.0),
        ("nomic-embed-text", 0.4, 1.0),
        ("qwen2.5:32b", 19.0, 22.0),
        ("llama3.2:3b", 2.2, 3.5),
    ],
)
def test_seed_models_in_gib(name: str, low: float, high: float) -> None:
    assert low <= _estimate(name, "ollama").need_on(1) / GiB <= high


def test_seed_layout_fits_the_cards() -> None:
    rtx4070, rtx2060 = parse_bytes("12282Mi"), parse_bytes("6144Mi")
    assert _estimate("qwen2.5:14b", "ollama").need_on(1) < rtx4070
    assert _estimate("qwen2.5:14b", "ollama").need_on(1) > rtx2060
    assert _estimate("llama3.1:8b", "ollama").need_on(1) < rtx2060
    assert _estimate("qwen2.5:32b", "ollama").need_on(2) > rtx4070 + rtx2060


def test_every_seed_model_is_in_the_data_in_both_forms() -> None:
    for ollama_name, hf_name in [
        ("qwen2.5:14b", "Qwen/Qwen2.5-14B-Instruct"),
        ("phi4:14b", "microsoft/phi-4"),
        ("llama3.1:8b", "meta-llama/Llama-3.1-8B-Instruct"),
        ("llama3.2:3b", "meta-llama/Llama-3.2-3B-Instruct"),
        ("nomic-embed-text", "nomic-ai/nomic-embed-text-v1.5"),
        ("qwen2.5:32b", "Qwen/Qwen2.5-32B-Instruct"),
    ]:
        by_tag, by_hf = CATALOG.lookup(ollama_name, "ollama"), CATALOG.lookup(hf_name, "huggingface")
        assert by_tag is not None and by_tag is by_hf, ollama_name
        assert by_tag.source, "every entry says where its figures come from"


def test_model_data_is_consistent() -> None:
    names: list[str] = []
    for facts in CATALOG.entries:
        assert facts.attention_heads % facts.kv_heads == 0, facts.id
        if facts.ollama_names and not facts.vision:  # (an image encoder stays in 16 bit)
            # the download size agrees with parameters × bytes per parameter of its quantization (±15%),
            # the token embedding at about 8 bits (llama.cpp keeps it, or the output, at higher precision)
            embedding = min(facts.vocab_size * facts.hidden_size, facts.parameters // 2)
            per = GGUF_QUANT_BYTES[facts.ollama_quantization.lower()]
            expected = (facts.parameters - embedding) * per + embedding * max(per, 1.06)
            assert 0.85 < facts.ollama_weights_bytes / expected < 1.15, facts.id
        assert facts.layers > 0 and facts.head_dim > 0
        assert facts.context_length >= (256 if facts.embedding else 2048), facts.id
        assert facts.sliding_layers <= facts.layers and facts.experts_used <= facts.experts, facts.id
        assert not facts.vision or facts.vision_graph_bytes or facts.projector_bytes, facts.id
        names += [normalize_ollama(n) for n in facts.ollama_names] + [n.lower() for n in facts.hf_names]
    assert len(names) == len(set(names)), "a name in two entries"


def test_kv_cache_grows_with_context_and_parallel() -> None:
    small = _estimate("qwen2.5:14b", "ollama", ollama={"contextLength": 4096})
    large = _estimate("qwen2.5:14b", "ollama", ollama={"contextLength": 8192, "numParallel": 2})
    assert large.kv_bytes == 4 * small.kv_bytes
    # qwen2.5:14b: 2 × 48 layers × 8 KV heads × 128 × 2 bytes = 192 KiB per token; at 8192 tokens
    # that is the 1536 MiB reported in ollama/ollama#9091
    assert _estimate("qwen2.5:14b", "ollama", ollama={"contextLength": 8192}).kv_bytes == 1536 * 2**20


def test_quantized_tag_sized_from_parameters() -> None:
    q8 = _estimate("qwen2.5:14b-instruct-q8_0", "ollama")
    default = _estimate("qwen2.5:14b", "ollama")
    assert q8.weights_label == "Q8_0" and q8.weights_bytes > 1.6 * default.weights_bytes


def test_size_in_the_name_is_the_fallback() -> None:
    est = _estimate("acme-chat:27b", "ollama")
    assert est.source == "name" and "sized from the parameter count" in est.explain()
    vllm = _estimate("acme/Custom-13B", "vllm")
    assert vllm.assumed_context and vllm.weights_bytes == 26_000_000_000
    assert _estimate("acme/Custom-13B-AWQ", "vllm").weights_bytes < vllm.weights_bytes / 2


@pytest.mark.parametrize(
    ("name", "parameters"),
    [
        ("Qwen2.5-14B-Instruct", 14e9),
        ("qwen2.5:7b", 7e9),
        ("mixtral:8x7b", 56e9),
        ("org/tiny-270m", 270e6),
        ("llama3.1", None),
        ("phi4", None),
    ],
)
def test_parameters_from_name(name: str, parameters: float | None) -> None:
    assert parameters_from_name(name) == (int(parameters) if parameters else None)


def test_vram_overrides_everything() -> None:
    est = _estimate("microsoft/phi-4", "vllm")
    item = deployment(
        engine="vllm", models=[{"name": "microsoft/phi-4", "vram": "20Gi"}], tensorParallelSize=2
    )
    override = ENGINES.estimate(item.spec.models[0], item.spec)
    assert override.source == "spec" and override.need_on(2) == 20 * GiB and override.per_gpu(2) == 10 * GiB
    assert est.need_on(1) != override.need_on(1)


def test_unsizable_model_says_to_set_vram() -> None:
    with pytest.raises(SizingError, match=r"Set spec.models\[0\].vram") as raised:
        _estimate("acme/house-model:latest", "ollama")
    assert "16Gi" not in str(
        raised.value
    )  # case 11: an example of a whole GPU's size led to a second refusal


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            "models:\n- {id: x, parameters: -7, layers: 32, attentionHeads: 32, kvHeads: 8, headDim: 128, contextLength: 8192}",
            "parameters must be a whole number",
        ),
        (
            "models:\n- {id: x, parameters: 7, layers: 32, attentionHeads: 32, kvHeads: 0, headDim: 128, contextLength: 8192}",
            "kvHeads must be a positive whole number",
        ),
        (
            "models:\n- {id: x, parameters: 7, layers: 32, attentionHeads: 32, kvHeads: 6, headDim: 128, contextLength: 8192}",
            "kvHeads 6 does not divide attentionHeads 32",
        ),
        (
            "models:\n- {id: x, parameters: 7, layers: 4, attentionHeads: 32, kvHeads: 8, headDim: 128, contextLength: 8192, slidingLayers: 5}",
            "slidingLayers must be between 0 and layers",
        ),
        (
            "models:\n- {id: x, names: [a], parameters: 7, layers: 32, attentionHeads: 32, kvHeads: 8, headDim: 128, contextLength: 8192}",
            "names must be a mapping",
        ),
        (
            "models:\n- {id: x, names: {ollama: 'a:7b'}, parameters: 7, layers: 32, attentionHeads: 32, kvHeads: 8, headDim: 128, contextLength: 8192}",
            "names.ollama must be a list",
        ),
        (
            "models:\n- {id: x, embedding: 'false', parameters: 7, layers: 32, attentionHeads: 32, kvHeads: 8, headDim: 128, contextLength: 8192}",
            "embedding must be true or false",
        ),
        (
            "models:\n- {id: x, parameters: .inf, layers: 32, attentionHeads: 32, kvHeads: 8, headDim: 128, contextLength: 8192}",
            "parameters must be a whole number",
        ),
        (
            "models:\n- {id: x, quantization: 8, parameters: 7, layers: 32, attentionHeads: 32, kvHeads: 8, headDim: 128, contextLength: 8192}",
            "quantization must be a string",
        ),
    ],
)
def test_model_data_errors_name_the_entry_and_field(text: str, error: str) -> None:
    with pytest.raises(ModelDataError, match=r"ours.yaml, models\[0\] \(x\): ") as raised:
        parse_model_data(text, "ours.yaml")
    assert error in str(raised.value)


@pytest.mark.parametrize(
    ("tag", "sized_as"),
    [("8b-fp16", "FP16"), ("8b-bf16", "BF16"), ("8b-TQ1_0", "TQ1_0"), ("8b-IQ4_XS", "IQ4_XS")],
)
def test_every_quantization_tag_is_sized(tag: str, sized_as: str) -> None:
    est = _estimate(f"qwen3:{tag}", "ollama")
    assert est.weights_label == sized_as


def test_sixteen_bit_tags_size_alike() -> None:
    assert _estimate("qwen3:8b-fp16", "ollama").need_on(1) == _estimate("qwen3:8b-bf16", "ollama").need_on(1)
