"""What an engine cannot run is refused before "Placed", with the rule of the release gpupin pins
(vLLM 0.33.0: quantization kernels by compute capability, maxModelLen, tensor parallel over KV
heads, GGUF, pooling models), and what it can run is rendered the way it must be started."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gpupin import reasons
from gpupin.engines import ENGINES
from gpupin.modelfacts import ModelFacts
from gpupin.planner import Planner
from gpupin.render import RenderConfig, render

from helpers import A100_80, L4, RTX_4090, T4, deployment, inventory, models, node

QWEN_7B = ENGINES.catalog.lookup("Qwen/Qwen2.5-7B-Instruct", "huggingface")
assert QWEN_7B is not None


def _registry_with(*facts: ModelFacts):  # type: ignore[no-untyped-def]
    return ENGINES.with_catalog(ENGINES.catalog.overlay(facts))


def _quantized(name: str, quantization: str, weights: int) -> ModelFacts:
    assert QWEN_7B is not None
    return replace(
        QWEN_7B,
        id=name.lower(),
        hf_names=(name,),
        ollama_names=(),
        quantization=quantization,
        hf_weights_bytes=weights,
    )


@pytest.mark.parametrize(
    ("quantization", "t4", "a100"),
    [
        ("awq", "Placed", "Placed"),
        ("gptq", "Placed", "Placed"),
        ("w8a8-fp8", "Placed", "Placed"),  # weight-only FP8 below 8.9, 16-bit activations
        ("mxfp4", reasons.UNSUPPORTED_COMPUTE_CAPABILITY, "Placed"),
        ("experts_int8", reasons.UNSUPPORTED_COMPUTE_CAPABILITY, "Placed"),
    ],
)
def test_quantization_against_compute_capability(quantization: str, t4: str, a100: str) -> None:
    name = f"acme/Qwen2.5-7B-{quantization}"
    engines = _registry_with(_quantized(name, quantization, 5_000_000_000))
    d = deployment(engine="vllm", models=models(name), vllm={"maxModelLen": 4096})
    for product, expected in ((T4, t4), (A100_80, a100)):
        result = Planner(inventory(node("n", product)), engines=engines).plan(d)
        assert (result.reason if not result.placed else "Placed") == expected, result.message
        if result.placed:
            (pod,) = [o for o in render(d, result, RenderConfig(), engines) if o["kind"] == "Pod"]
            assert (
                "--dtype" not in pod["spec"]["containers"][0]["args"]
            )  # never half for a quantized checkpoint


def test_bitsandbytes_needs_a_plugin_the_image_lacks() -> None:
    name = "acme/Qwen2.5-7B-bnb-4bit"
    engines = _registry_with(_quantized(name, "bitsandbytes-4bit", 5_000_000_000))
    result = Planner(inventory(node("n", L4)), engines=engines).plan(
        deployment(engine="vllm", models=models(name))
    )
    assert result.reason == reasons.UNSUPPORTED_MODEL and "plugin" in result.message


def test_max_model_len_above_the_models_context_is_refused_unless_extended() -> None:
    planner = Planner(inventory(node("n", A100_80)))
    too_long = deployment(
        engine="vllm", models=models("Qwen/Qwen2.5-7B-Instruct"), vllm={"maxModelLen": 131072}
    )
    result = planner.plan(too_long)
    assert result.reason == reasons.UNSUPPORTED_MODEL and "32768" in result.message
    yarn = deployment(
        engine="vllm",
        models=models("Qwen/Qwen2.5-7B-Instruct"),
        vllm={
            "maxModelLen": 131072,
            "args": ["--hf-overrides", '{"rope_scaling": {"rope_type": "yarn", "factor": 4}}'],
        },
    )
    assert Planner(inventory(node("n", A100_80))).plan(yarn).placed
    env = deployment(
        engine="vllm",
        models=models("Qwen/Qwen2.5-7B-Instruct"),
        vllm={"maxModelLen": 131072},
        env=[{"name": "VLLM_ALLOW_LONG_MAX_MODEL_LEN", "value": "1"}],
    )
    assert Planner(inventory(node("n", A100_80))).plan(env).placed


@pytest.mark.parametrize(("tp", "placed"), [(2, True), (4, False), (5, True), (8, False)])
def test_tensor_parallel_must_split_the_kv_heads(tp: int, placed: bool) -> None:
    # microsoft/phi-4: 40 attention heads, 10 KV heads
    d = deployment(
        engine="vllm", models=models("microsoft/phi-4"), tensorParallelSize=tp, vllm={"maxModelLen": 4096}
    )
    result = Planner(inventory(node("n", *([A100_80] * 10)))).plan(d)
    assert result.placed == placed, result.message
    if not placed:
        assert result.reason == reasons.INVALID_SPEC and "10 KV heads" in result.message


def test_ranks_beyond_the_kv_heads_hold_copies_of_the_cache() -> None:
    # Qwen/Qwen3-30B-A3B has 4 KV heads: over 8 ranks each holds a quarter of the cache, not an eighth
    d = deployment(
        engine="vllm", models=models("Qwen/Qwen3-30B-A3B"), tensorParallelSize=8, vllm={"maxModelLen": 32768}
    )
    est = ENGINES.estimate(d.spec.models[0], d.spec)
    per_rank = est.per_gpu(8)
    assert per_rank >= est.weights_bytes / 8 + est.kv_bytes / 4 + est.overhead_per_gpu - 1


def test_embedding_model_on_vllm_uses_the_pooling_runner() -> None:
    d = deployment(engine="vllm", models=models("BAAI/bge-m3"))
    result = Planner(inventory(node("n", L4))).plan(d)
    assert result.placed, result.message
    (pod,) = [o for o in render(d, result, RenderConfig()) if o["kind"] == "Pod"]
    args = pod["spec"]["containers"][0]["args"]
    assert args[args.index("--runner") + 1] == "pooling"


def test_a_gguf_repo_is_not_for_vllm() -> None:
    d = deployment(engine="vllm", models=models("unsloth/Qwen3-8B-GGUF"))
    result = Planner(inventory(node("n", RTX_4090))).plan(d)
    assert result.reason == reasons.UNSUPPORTED_MODEL
    assert "engine: ollama with hf.co/unsloth/Qwen3-8B-GGUF:" in result.message


def test_quantized_model_is_not_told_to_quantize() -> None:
    name = "acme/Qwen2.5-72B-AWQ"
    big = replace(_quantized(name, "awq", 41_000_000_000), parameters=72_700_000_000)
    engines = _registry_with(big)
    result = Planner(inventory(node("n", L4)), engines=engines).plan(
        deployment(engine="vllm", models=models(name))
    )
    assert result.reason == reasons.INSUFFICIENT_VRAM
    assert "quantized variant" not in result.message


@pytest.mark.parametrize(
    ("name", "vllm", "reason", "text"),
    [
        ("google/gemma-2-2b-it", {"dtype": "half"}, reasons.UNSUPPORTED_MODEL, "does not run in float16"),
        ("google/medgemma-4b-it", {"dtype": "half"}, reasons.UNSUPPORTED_MODEL, "does not run in float16"),
        ("RedHatAI/gemma-2-9b-it-FP8", {"dtype": "float32"}, reasons.UNSUPPORTED_MODEL, "16-bit activations"),
        ("openai/gpt-oss-20b", {"dtype": "half"}, reasons.UNSUPPORTED_MODEL, "bfloat16 activations only"),
        ("qwen3:8b", {}, reasons.INVALID_SPEC, "for this model: Qwen/Qwen3-8B"),
        (
            "hf.co/unsloth/Qwen3-8B-GGUF:Q4_K_M",
            {},
            reasons.UNSUPPORTED_MODEL,
            "engine: ollama with the same name",
        ),
        ("unsloth/Qwen3-8B-bnb-4bit", {}, reasons.UNSUPPORTED_MODEL, "bitsandbytes"),
    ],
)
def test_what_vllm_refuses_at_start_up_is_refused_before_placing(
    name: str, vllm: dict[str, str], reason: str, text: str
) -> None:
    d = deployment(engine="vllm", models=models(name), vllm={"maxModelLen": 4096, **vllm})
    result = Planner(inventory(node("n", A100_80))).plan(d)
    assert (result.outcome, result.reason) == ("Refused", reason), result.message
    assert text in result.message


def test_gemma_known_only_by_name_is_not_served_as_half_on_a_t4() -> None:
    d = deployment(engine="vllm", models=models("google/gemma-2-2b"), vllm={"maxModelLen": 4096})
    result = Planner(inventory(node("n", T4))).plan(d)
    assert result.reason == reasons.UNSUPPORTED_COMPUTE_CAPABILITY, result.message


def test_ollama_is_not_given_a_hugging_face_repo() -> None:
    result = Planner(inventory(node("n", L4))).plan(
        deployment(engine="ollama", models=models("Qwen/Qwen3-8B"))
    )
    assert result.reason == reasons.INVALID_SPEC and "use qwen3:8b" in result.message


def test_only_true_values_let_max_model_len_pass_the_trained_context() -> None:
    d = deployment(
        engine="vllm",
        models=models("Qwen/Qwen2.5-7B-Instruct"),
        vllm={"maxModelLen": 131072},
        env=[{"name": "VLLM_ALLOW_LONG_MAX_MODEL_LEN", "value": "false"}],
    )
    assert Planner(inventory(node("n", A100_80))).plan(d).reason == reasons.UNSUPPORTED_MODEL


def test_flash_attention_is_not_counted_where_ollama_does_not_support_it() -> None:
    # Ollama 0.17.4 never runs gemma2 with flash attention, so a q4_0 KV cache stays f16
    plain = deployment(engine="ollama", models=models("gemma2:27b"), ollama={"contextLength": 8192})
    asked = deployment(
        engine="ollama",
        models=models("gemma2:27b"),
        ollama={"contextLength": 8192, "flashAttention": True, "kvCacheType": "q4_0"},
    )
    assert (
        ENGINES.estimate(asked.spec.models[0], asked.spec).kv_bytes
        == ENGINES.estimate(plain.spec.models[0], plain.spec).kv_bytes
    )


def test_a_deployments_own_models_are_not_named_as_others() -> None:
    planner = Planner(
        inventory(
            node(
                "workstation",
                ("NVIDIA GeForce RTX 4070", "12282Mi", "8.9"),
                ("NVIDIA GeForce RTX 2060", "6144Mi", "7.5"),
            )
        )
    )
    assert planner.plan(deployment("b", engine="ollama", models=models("llama3.1:8b"))).placed
    result = planner.plan(deployment("a", engine="ollama", models=models("qwen3:8b", "phi4")))
    assert not result.placed
    assert "default/a holds" not in result.message and "default/b holds" in result.message
