"""The LLMDeployment API: models, spec rules, and the CRD generated from them.

Aspects: defaults and what `engine: auto` resolves to; invalid specs rejected with the
field named; every spec rule's CEL (what the API server runs) agrees with its Python
twin (what `gpupin plan` runs) on generated specs; the committed CRD is exactly what the
models generate (drift); the CRD is structural and carries status, scale, printer columns.
"""

from __future__ import annotations

from typing import Any

import celpy
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from gpupin.api import crdgen
from gpupin.api.rules import SPEC_RULES
from gpupin.api.v1alpha1 import (
    EnvVar,
    LLMDeploymentSpec,
    ModelRef,
    OllamaOptions,
    Resources,
    Storage,
    VLLMOptions,
    resolve_engine,
)

from helpers import REPO


def test_defaults() -> None:
    spec = LLMDeploymentSpec.model_validate({"models": [{"name": "qwen2.5:14b"}]})
    assert (spec.engine, spec.replicas, spec.tensor_parallel_size, spec.allow_mixed_gpus) == (
        "auto",
        1,
        1,
        False,
    )
    assert spec.vllm_options.gpu_memory_utilization == 0.9
    assert spec.ollama_options.keep_alive == "-1"


@pytest.mark.parametrize(
    ("names", "engine"),
    [
        (["qwen2.5:14b"], "ollama"),
        (["nomic-embed-text"], "ollama"),
        (["microsoft/phi-4"], "vllm"),
        (["user/model:tag"], "ollama"),
        (["hf.co/bartowski/Llama-3.2-3B-Instruct-GGUF:Q4_K_M"], "ollama"),
        (["microsoft/phi-4", "qwen2.5:14b"], "ollama"),
    ],
)
def test_auto_engine(names: list[str], engine: str) -> None:
    assert resolve_engine("auto", names) == engine


@pytest.mark.parametrize(
    ("spec", "field", "fragment"),
    [
        ({"models": []}, "models", "at least 1"),
        (
            {"models": [{"name": "a"}], "tensorParallelSize": 0},
            "tensorParallelSize",
            "greater than or equal to 1",
        ),
        ({"models": [{"name": "a"}], "engine": "tgi"}, "engine", "'vllm', 'ollama' or 'auto'"),
        ({"models": [{"name": "a", "vram": "lots"}]}, "vram", "not a Kubernetes quantity"),
        ({"models": [{"name": "a b"}]}, "name", "pattern"),
        ({"models": [{"name": "a"}], "replicas": -1}, "replicas", "greater than or equal to 0"),
        (
            {"models": [{"name": "a"}], "rollout": {"maxUnavailable": 0, "maxSurge": 0}},
            "rollout",
            "cannot both be 0",
        ),
        ({"models": [{"name": "a"}, {"name": "a"}]}, "models", "more than once"),
        ({"engine": "vllm", "models": [{"name": "a/b"}, {"name": "c/d"}]}, "", "exactly one model"),
        ({"engine": "ollama", "models": [{"name": "a"}], "tensorParallelSize": 2}, "", "vLLM only"),
        ({"engine": "ollama", "models": [{"name": "a"}], "vllm": {}}, "", "engine: vllm"),
        ({"models": [{"name": "a"}], "tensorParalelSize": 2}, "tensorParalelSize", "Extra inputs"),
        ({"models": [{"name": "a"}], "vllm": {"gpuMemoryUtilization": 1.5}}, "gpuMemoryUtilization", "1"),
        (
            {"models": [{"name": "a"}], "gpuSelector": {"minComputeCapability": "eight"}},
            "minComputeCapability",
            "pattern",
        ),
        (
            {"models": [{"name": "a"}], "resources": {"limits": {"nvidia.com/gpu": 1}}},
            "resources",
            "gpupin's to set",
        ),
        ({"models": [{"name": "a"}], "storage": {"storageClassName": "fast"}}, "storage", "needs size"),
        ({"models": [{"name": "a"}], "ollama": {"kvCacheType": "q8_0"}}, "ollama", "flashAttention"),
        (
            {"models": [{"name": "a"}], "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]},
            "env",
            "choose the GPUs a container sees",
        ),
        (
            {"models": [{"name": "a"}], "env": [{"name": "CUDA_VISIBLE_DEVICES", "value": "0"}]},
            "env",
            "CUDA_*",
        ),
        (
            {"models": [{"name": "a"}], "env": [{"name": "OLLAMA_NUM_PARALLEL", "value": "8"}]},
            "env",
            "spec.ollama",
        ),
    ],
)
def test_invalid_specs_name_the_field(spec: dict[str, Any], field: str, fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        LLMDeploymentSpec.model_validate(spec)
    text = str(info.value)
    assert field in text and fragment in text


# --- CEL and Python agree ------------------------------------------------------------------

_env = celpy.Environment()
_programs = {rule.cel: _env.program(_env.compile(rule.cel)) for rule in SPEC_RULES}


def _cel(rule_cel: str, node: dict[str, Any]) -> bool:
    return bool(_programs[rule_cel].evaluate({"self": celpy.json_to_cel(node)}))


model_names = st.sampled_from(
    ["qwen2.5:14b", "microsoft/phi-4", "user/model:tag", "nomic-embed-text", "Qwen/Qwen2.5-3B"]
)


@st.composite
def spec_nodes(draw: st.DrawFn) -> dict[str, Any]:
    node: dict[str, Any] = {
        "engine": draw(st.sampled_from(["auto", "vllm", "ollama"])),
        "models": [{"name": n} for n in draw(st.lists(model_names, min_size=1, max_size=3, unique=True))],
        "tensorParallelSize": draw(st.sampled_from([1, 2, 4])),
    }
    if draw(st.booleans()):
        node["vllm"] = {}
    if draw(st.booleans()):
        node["ollama"] = {}
    return node


def _spec_model(node: dict[str, Any]) -> LLMDeploymentSpec:
    return LLMDeploymentSpec.model_construct(
        engine=node["engine"],
        models=[ModelRef.model_construct(name=m["name"]) for m in node["models"]],
        tensor_parallel_size=node["tensorParallelSize"],
        vllm=VLLMOptions.model_construct() if "vllm" in node else None,
        ollama=OllamaOptions.model_construct() if "ollama" in node else None,
    )


@given(spec_nodes())
def test_spec_rules_cel_agrees_with_python(node: dict[str, Any]) -> None:
    model = _spec_model(node)
    for rule in (r for r in SPEC_RULES if r.scope == "spec"):
        assert _cel(rule.cel, node) == rule.check(model), rule.field


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "size": st.just("10Gi"),
            "storageClassName": st.just("fast"),
            "existingClaim": st.just("models"),
        },
    )
)
def test_storage_rules_cel_agrees_with_python(node: dict[str, Any]) -> None:
    model = Storage.model_construct(
        size=node.get("size"),
        storage_class_name=node.get("storageClassName"),
        existing_claim=node.get("existingClaim"),
    )
    for rule in (r for r in SPEC_RULES if r.scope == "storage"):
        assert _cel(rule.cel, node) == rule.check(model)


_ENV_NAMES = [
    "X",
    "HF_TOKEN",
    "NVIDIA_VISIBLE_DEVICES",
    "NVIDIA_DRIVER_CAPABILITIES",
    "CUDA_VISIBLE_DEVICES",
    "CUDA_",
    "NVIDIA",
    "MY_NVIDIA_VISIBLE_DEVICES",
    "nvidia_visible_devices",
    "HIP_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "GPU_DEVICE_ORDINAL",
    "GPU_DEVICE_ORDINALS",
    "HF_HOME",
    "HF_HUB_OFFLINE",
    "OLLAMA_NUM_PARALLEL",
    "OLLAMA_KV_CACHE_TYPE",
    "OLLAMA_DEBUG",
    "OLLAMA_HOST_X",
    "VLLM_ALLOW_LONG_MAX_MODEL_LEN",
]


@given(
    st.fixed_dictionaries(
        {"name": st.sampled_from(_ENV_NAMES)},
        optional={"value": st.just("1"), "valueFrom": st.just({"a": {}})},
    )
)
def test_env_rules_cel_agrees_with_python(node: dict[str, Any]) -> None:
    model = EnvVar.model_construct(
        name=node["name"], value=node.get("value"), value_from=node.get("valueFrom")
    )
    for rule in (r for r in SPEC_RULES if r.scope == "env"):
        assert _cel(rule.cel, node) == rule.check(model)


@pytest.mark.parametrize("name", ["NVIDIA_VISIBLE_DEVICES", "OLLAMA_NUM_PARALLEL"])
def test_a_rules_message_names_the_value_alike_in_cel_and_python(name: str) -> None:
    """The API server's messageExpression and gpupin plan's message are one text, naming the variable."""
    for rule in (r for r in SPEC_RULES if r.message_expression):
        program = _env.program(_env.compile(rule.message_expression))
        from_cel = str(program.evaluate({"self": celpy.json_to_cel({"name": name})}))
        assert rule.describe is not None
        assert from_cel == rule.describe(EnvVar.model_construct(name=name)) and from_cel.startswith(name)


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "limits": st.dictionaries(
                st.sampled_from(["cpu", "memory", "nvidia.com/gpu"]), st.just("1"), max_size=2
            ),
            "requests": st.dictionaries(st.sampled_from(["cpu", "nvidia.com/gpu"]), st.just("1"), max_size=2),
        },
    )
)
def test_resources_rules_cel_agrees_with_python(node: dict[str, Any]) -> None:
    model = Resources.model_construct(limits=node.get("limits"), requests=node.get("requests"))
    for rule in (r for r in SPEC_RULES if r.scope == "resources"):
        assert _cel(rule.cel, node) == rule.check(model)


@given(
    st.fixed_dictionaries(
        {"kvCacheType": st.sampled_from(["f16", "q8_0", "q4_0"])},
        optional={"flashAttention": st.booleans()},  # unset: Ollama decides per model
    )
)
def test_ollama_rules_cel_agrees_with_python(node: dict[str, Any]) -> None:
    model = OllamaOptions.model_construct(
        kv_cache_type=node["kvCacheType"], flash_attention=node.get("flashAttention")
    )
    for rule in (r for r in SPEC_RULES if r.scope == "ollama"):
        assert _cel(rule.cel, node) == rule.check(model)


_VLLM_ARGS = st.lists(
    st.one_of(
        st.sampled_from(
            [
                "--enforce-eager",
                "--max-num-seqs=32",
                "-tp",
                "-tp=2",
                "--dtype",
                "--dtype=half",
                "--port",
                "--max_model_len=4096",
                "--max-model-len",
                "--model",
                "--modelx",
                "--host=0.0.0.0",
                "--served-model-name",
                "--tensor-parallel-size",
                "--api-key",
                "--gpu-memory-utilization=0.5",
            ]
        ),
        st.text(alphabet="-_=abcdeghlmnoprstxz0123456789", max_size=30),
    ),
    max_size=5,
)


@given(st.one_of(st.none(), _VLLM_ARGS))
def test_vllm_rules_cel_agrees_with_python(args: list[str] | None) -> None:
    model = VLLMOptions.model_construct(args=args or [])
    for rule in (r for r in SPEC_RULES if r.scope == "vllm"):
        assert _cel(rule.cel, {} if args is None else {"args": args}) == rule.check(model)


@pytest.mark.parametrize(
    ("args", "allowed"),
    [
        (["--enforce-eager", "--max-num-seqs", "32", "--api-key", "k"], True),
        (["--max-model-len", "4096"], False),
        (["--max_model_len=4096"], False),
        (["-tp", "2"], False),
        (["--dtype=bfloat16"], False),
        (["--model", "other/model"], False),
    ],
)
def test_vllm_args_may_not_undo_the_plan(args: list[str], allowed: bool) -> None:
    spec = {"models": [{"name": "Qwen/Qwen2.5-7B-Instruct"}], "vllm": {"args": args}}
    if allowed:
        LLMDeploymentSpec.model_validate(spec)
    else:
        with pytest.raises(ValidationError, match=r"vllm\.args must not repeat a flag gpupin sets"):
            LLMDeploymentSpec.model_validate(spec)


# --- the CRD ---------------------------------------------------------------------------------


def test_committed_crds_match_the_models() -> None:
    """Fails when someone changed the models without `make generate` (or edited a copy by hand)."""
    from gpupin import generate

    assert generate.stale() == [], "run `make generate`"
    assert (REPO / "crds" / "llmdeployments.gpupin.dev.yaml").read_text() == crdgen.render()


def _walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, schema)]
    for name, sub in schema.get("properties", {}).items():
        found += _walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        found += _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        found += _walk(schema["additionalProperties"], f"{path}{{}}")
    return found


def test_crd_schema_is_structural() -> None:
    """Every node has a type (or is int-or-string / preserve-unknown); no refs, no JSON-Schema-only keys."""
    crd = yaml.safe_load(crdgen.render())
    version = crd["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "$ref" not in node and "title" not in node and "$defs" not in node, path
        if node.get("x-kubernetes-int-or-string"):
            continue
        assert "type" in node, f"{path} has no type"
        assert node.get("additionalProperties") is not False, path
        if (
            node["type"] == "object"
            and "properties" not in node
            and "additionalProperties" not in node
            and path != ".metadata"
        ):
            assert node.get("x-kubernetes-preserve-unknown-fields"), path
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas"
    assert [c["name"] for c in version["additionalPrinterColumns"]][:6] == [
        "Engine",
        "Models",
        "GPUs",
        "Ready",
        "Reason",
        "Age",
    ]
    spec = schema["properties"]["spec"]
    assert spec["properties"]["models"]["x-kubernetes-list-type"] == "map"
    assert spec["properties"]["engine"]["default"] == "auto"
    rules = {r["rule"] for r in spec["x-kubernetes-validations"]}
    assert rules == {r.cel for r in SPEC_RULES if r.scope == "spec"}
    assert crd["spec"]["names"]["shortNames"] == ["llmd"]
