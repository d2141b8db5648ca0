"""The cluster admin's policy (gpupin.policy): what a deployment may make the operator put in its pods.

Aspects: image references normalized as the runtime reads them (Docker Hub, library/, latest, a
digest over a tag) and matched by prefix at a boundary only (evil.io/vllm/vllm-openai is not
vllm/vllm-openai, ollama/ollama-evil is not ollama/ollama); the operator's own images always
allowed; a bare host refused as an entry; a table of specs × knobs → the fields refused, each
message naming the flag; the planner refuses such a spec (PolicyRefused) before sizing it, and
plans it as before when the policy allows it.
"""

from __future__ import annotations

from typing import Any

import pytest

from gpupin import reasons
from gpupin.planner import Planner
from gpupin.policy import Policy, image_allowed, normalize_image, normalize_prefix, problems

from helpers import A10, deployment, inventory, models, node


@pytest.mark.parametrize(
    ("reference", "normalized"),
    [
        ("ollama/ollama", "docker.io/ollama/ollama:latest"),
        ("ollama/ollama:0.17.4", "docker.io/ollama/ollama:0.17.4"),
        ("ollama", "docker.io/library/ollama:latest"),
        ("library/ollama:1", "docker.io/library/ollama:1"),
        ("docker.io/ollama/ollama:1", "docker.io/ollama/ollama:1"),
        ("index.docker.io/ollama/ollama:1", "docker.io/ollama/ollama:1"),
        ("docker.io/busybox", "docker.io/library/busybox:latest"),
        ("evil.io/vllm/vllm-openai:v1", "evil.io/vllm/vllm-openai:v1"),
        ("localhost/x", "localhost/x:latest"),
        ("localhost:5000/x:2", "localhost:5000/x:2"),
        ("Registry/x", "registry/x:latest"),  # an upper-case first component is a host
        ("ollama/ollama@sha256:abc", "docker.io/ollama/ollama@sha256:abc"),
        ("ollama/ollama:0.17.4@sha256:abc", "docker.io/ollama/ollama@sha256:abc"),
        ("reg.example:5000/team/srv:1@sha256:abc", "reg.example:5000/team/srv@sha256:abc"),
    ],
)
def test_images_are_normalized_as_the_runtime_reads_them(reference: str, normalized: str) -> None:
    assert normalize_image(reference) == normalized


@pytest.mark.parametrize(
    ("allowed", "image", "ok"),
    [
        ("ollama/ollama", "ollama/ollama:0.17.4", True),
        ("ollama/ollama", "docker.io/ollama/ollama", True),
        ("ollama/ollama", "ollama/ollama@sha256:abc", True),
        ("ollama/ollama", "ollama/ollama-evil:1", False),  # a prefix stops at a boundary only
        ("ollama/ollama", "evil.example/ollama:latest", False),
        ("ollama/ollama", "evil.example/ollama/ollama:latest", False),
        ("vllm/vllm-openai", "evil.io/vllm/vllm-openai:v0.6.0", False),
        ("vllm/vllm-openai:", "vllm/vllm-openai:v0.6.0", True),
        ("vllm/vllm-openai:", "vllm/vllm-openai@sha256:abc", False),
        ("vllm/vllm-openai:v0.6", "vllm/vllm-openai:v0.6.1", False),  # a tag is a tag, not a prefix
        ("vllm/vllm-openai:latest", "vllm/vllm-openai", True),
        ("ollama/ollama:0.17.4", "ollama/ollama:0.17.4@sha256:abc", False),  # pulled by the digest
        ("ollama/ollama@sha256:", "ollama/ollama@sha256:abc", True),
        ("ollama/ollama@sha256:", "ollama/ollama:0.17.4", False),
        ("registry.example/llm/", "registry.example/llm/vllm:1", True),
        ("registry.example/llm", "registry.example/llm/vllm:1", True),
        ("registry.example/llm", "registry.example/llm-other/vllm:1", False),
        ("registry.example/", "registry.example.evil.io/x:1", False),
        ("docker.io/", "ollama/ollama:1", True),
        ("ollama", "library/ollama:1", True),
        ("ollama", "ollama/ollama:1", False),  # a bare name is library/ollama
        ("localhost:5000/", "localhost:5000/x:1", True),
    ],
)
def test_images_match_an_entry_at_a_boundary(allowed: str, image: str, ok: bool) -> None:
    assert image_allowed(image, Policy(allowed_images=(allowed,))) is ok


def test_any_image_without_a_list_and_the_operators_own_images_always() -> None:
    assert image_allowed("evil.example/x:1", Policy())
    own = Policy(allowed_images=("registry.example/llm/",), own_images=("ollama/ollama:0.17.4",))
    assert image_allowed("docker.io/ollama/ollama:0.17.4", own)
    assert not image_allowed("ollama/ollama:0.17.5", own)


@pytest.mark.parametrize("entry", ["quay.io", "localhost:5000", " ", "registry.example:443"])
def test_a_bare_host_or_an_empty_entry_is_an_error_naming_it(entry: str) -> None:
    with pytest.raises(ValueError, match="--allowed-images"):
        normalize_prefix(entry)
    with pytest.raises(ValueError, match="--allowed-images"):
        Policy(allowed_images=(entry,))


SECRET = {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}
CONFIG_MAP = {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}}
FIELD = {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
RESOURCE = {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory"}}}
UNKNOWN = {"name": "X", "valueFrom": {"somethingNewRef": {"name": "y"}}}
STRICT = Policy(
    allowed_images=("ollama/ollama",),
    allow_env_from_secrets=False,
    allow_env_from_config_maps=False,
    allow_existing_claims=False,
    allow_storage_classes=False,
)

# spec fields, policy → the fields refused (in the spec's order) and a word each message must have
_TABLE: list[tuple[dict[str, Any], Policy, list[tuple[str, str]]]] = [
    ({}, STRICT, []),
    ({"image": "ollama/ollama:0.17.4"}, STRICT, []),
    ({"image": "evil.example/ollama:latest"}, STRICT, [("spec.image", "--allowed-images: ollama/ollama")]),
    ({"image": "evil.example/ollama:latest"}, Policy(), []),
    ({"env": [SECRET]}, Policy(), []),
    (
        {"env": [{"name": "A", "value": "1"}, SECRET]},
        STRICT,
        [("spec.env[1].valueFrom.secretKeyRef", "HF_TOKEN reads Secret hf")],
    ),
    ({"env": [CONFIG_MAP]}, Policy(allow_env_from_secrets=False), []),
    (
        {"env": [CONFIG_MAP]},
        Policy(allow_env_from_config_maps=False),
        [("spec.env[0].valueFrom.configMapKeyRef", "--no-allow-env-from-config-maps")],
    ),
    ({"env": [FIELD, RESOURCE]}, STRICT, []),  # the pod's own data
    ({"env": [UNKNOWN]}, Policy(allow_env_from_config_maps=False), []),
    (
        {"env": [UNKNOWN]},
        Policy(allow_env_from_secrets=False),
        [("spec.env[0].valueFrom.somethingNewRef", "--no-allow-env-from-secrets")],
    ),
    ({"storage": {"existingClaim": "cache"}}, Policy(), []),
    (
        {"storage": {"existingClaim": "cache"}},
        STRICT,
        [("spec.storage.existingClaim", "--no-allow-existing-claims")],
    ),
    ({"storage": {"size": "20Gi"}}, STRICT, []),
    (
        {"storage": {"storageClassName": "fast", "size": "20Gi"}},
        STRICT,
        [("spec.storage.storageClassName", "--no-allow-storage-classes")],
    ),
    (
        {"storage": {"storageClassName": "fast", "size": "20Gi"}},
        Policy(allowed_storage_classes=("local",)),
        [("spec.storage.storageClassName", "--allowed-storage-classes: local")],
    ),
    (
        {"storage": {"storageClassName": "local", "size": "20Gi"}},
        Policy(allowed_storage_classes=("local",)),
        [],
    ),
    (
        {"image": "x/y:1", "env": [SECRET, CONFIG_MAP], "storage": {"existingClaim": "c"}},
        STRICT,
        [
            ("spec.image", "x/y:1"),
            ("spec.env[0].valueFrom.secretKeyRef", "Secret"),
            ("spec.env[1].valueFrom.configMapKeyRef", "ConfigMap"),
            ("spec.storage.existingClaim", "claim c"),
        ],
    ),
]


@pytest.mark.parametrize(("fields", "policy", "expected"), _TABLE)
def test_problems_name_each_refused_field_and_its_flag(
    fields: dict[str, Any], policy: Policy, expected: list[tuple[str, str]]
) -> None:
    spec = deployment(engine="ollama", models=models("qwen2.5:7b"), **fields).spec
    found = problems(spec, policy)
    assert [p.field for p in found] == [field for field, _ in expected]
    for problem, (_, word) in zip(found, expected, strict=True):
        assert word in problem.message, problem.message
        assert "operator flag" in problem.message or "--" in problem.message


def test_the_planner_refuses_what_the_policy_does_not_allow_before_sizing() -> None:
    cluster = inventory(node("n", A10))
    # an unknown model would be UnknownModelSize: the policy speaks first, and nothing is held
    item = deployment(engine="ollama", models=models("no-such-model"), image="evil.example/ollama:latest")
    planner = Planner(cluster, policy=Policy(allowed_images=("ollama/ollama",)))
    refused = planner.plan(item)
    assert not refused.placed and refused.reason == reasons.POLICY_REFUSED
    assert refused.reason in reasons.REFUSALS
    assert refused.message.startswith("the cluster's policy refuses spec.image: evil.example/ollama:latest")
    assert "operator flag --allowed-images: ollama/ollama" in refused.message
    allowed = deployment(engine="ollama", models=models("qwen2.5:7b"), image="ollama/ollama:0.17.5")
    assert planner.plan(allowed).placed, "an allowed image is planned as before"
    assert Planner(cluster).plan(deployment(engine="ollama", models=models("qwen2.5:7b"), image="x/y")).placed
