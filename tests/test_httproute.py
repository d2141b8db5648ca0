"""The HTTPRoute an Ollama deployment gets for a Gateway API implementation (pure), and the flag."""

from __future__ import annotations

import pytest

from gpupin.httproute import MODEL_HEADER, http_route, http_routes, parse_gateway

from helpers import deployment, models


def test_one_rule_per_model_matching_each_spelling_to_its_service() -> None:
    item = deployment("assistant", namespace="apps", engine="ollama",
                      models=models("qwen2.5:14b", "nomic-embed-text", "alice/mistral"))  # fmt: skip
    route = http_route(item, {"app.kubernetes.io/managed-by": "gpupin"}, 11434, ("infra", "llm-gateway"))
    assert route["metadata"]["name"] == "assistant" and route["metadata"]["namespace"] == "apps"
    assert route["spec"]["parentRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "llm-gateway", "namespace": "infra"}
    ]
    rules = {
        rule["backendRefs"][0]["name"]: [m["headers"][0]["value"] for m in rule["matches"]]
        for rule in route["spec"]["rules"]
    }
    assert rules == {
        "assistant-qwen2-5-14b": ["qwen2.5:14b"],
        "assistant-nomic-embed-text": ["nomic-embed-text", "nomic-embed-text:latest"],
        "assistant-mistral": ["alice/mistral", "alice/mistral:latest"],
    }
    for rule in route["spec"]["rules"]:
        assert rule["backendRefs"][0]["port"] == 11434
        assert all(m["headers"][0] | {"value": ""} == {"type": "Exact", "name": MODEL_HEADER, "value": ""}
                   for m in rule["matches"])  # fmt: skip


def test_a_gateway_in_the_deployments_own_namespace_has_no_namespace() -> None:
    item = deployment("assistant", engine="ollama", models=models("qwen2.5:14b"))
    parent = http_route(item, {}, 11434, ("", "gw"))["spec"]["parentRefs"][0]
    assert "namespace" not in parent and parent["name"] == "gw"


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("", None),
        ("  ", None),
        ("gw", ("", "gw")),
        ("infra/llm-gateway", ("infra", "llm-gateway")),
        ("a/b.c", ("a", "b.c")),
    ],
)
def test_the_gateway_flag(text: str, parsed: tuple[str, str] | None) -> None:
    assert parse_gateway(text) == parsed


@pytest.mark.parametrize(("text", "says"), [("Infra/gw", "not a namespace"), ("infra/", "not a Gateway name"),
                                             ("a/b/c", "not a namespace"), ("gw_1", "not a Gateway name")])  # fmt: skip
def test_a_bad_gateway_flag_says_which_part(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_gateway(text)


def test_latest_is_matched_without_its_tag_too() -> None:
    item = deployment("a", engine="ollama", models=models("llama3.2:latest"))
    (rule,) = http_route(item, {}, 11434, ("", "gw"))["spec"]["rules"]
    assert [m["headers"][0]["value"] for m in rule["matches"]] == ["llama3.2:latest", "llama3.2"]


def test_more_models_than_a_route_holds_get_a_second_route() -> None:
    item = deployment("big", engine="ollama", models=models(*(f"m{i}:1b" for i in range(20))))
    first, second = http_routes(item, {}, 11434, ("", "gw"))
    assert (first["metadata"]["name"], second["metadata"]["name"]) == ("big", "big-2")
    assert (len(first["spec"]["rules"]), len(second["spec"]["rules"])) == (16, 4)
