"""The router's objects as gpupin renders them (pure): one endpoint per Ollama deployment."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gpupin import constants
from gpupin.planner import plan
from gpupin.render import RenderConfig, render
from gpupin.routerobjects import ROUTER_LABEL, router_name

from helpers import deployment, is_dns_1035_label, models, workstation

ROUTED = RenderConfig(router_image="ghcr.io/example/gpupin:1.0")
SEED = models("qwen2.5:14b", "llama3.1:8b", "nomic-embed-text")


def _objects(config: RenderConfig = ROUTED, name: str = "assistant", **spec: Any) -> list[dict[str, Any]]:
    item = deployment(name, namespace="apps", **({"engine": "ollama", "models": SEED} | spec))
    result = plan(item, workstation())
    assert result.placed, result.message
    return render(item, result, config)


def _router_parts(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        o["kind"]: o
        for o in objects
        if (o["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "router"
    }


def test_an_ollama_deployment_gets_a_service_named_after_it_in_front_of_its_router() -> None:
    objects = _objects()
    parts = _router_parts(objects)
    assert set(parts) == {"Service", "ConfigMap", "Deployment"}
    service = parts["Service"]
    assert service["metadata"]["name"] == "assistant"
    assert service["spec"]["selector"] == {ROUTER_LABEL: "assistant"}
    assert service["spec"]["ports"][0]["port"] == 11434
    per_model = {
        o["metadata"]["annotations"]["gpupin.dev/model"]: o["metadata"]["name"]
        for o in objects
        if o["kind"] == "Service" and "gpupin.dev/model" in (o["metadata"].get("annotations") or {})
    }
    routes = json.loads(parts["ConfigMap"]["data"]["routes.yaml"])
    assert {b["models"][0]: b["address"] for b in routes["backends"]} == {
        model: f"{name}.apps.svc:11434" for model, name in per_model.items()
    }
    pod = parts["Deployment"]["spec"]["template"]
    assert pod["spec"]["containers"][0]["image"] == ROUTED.router_image
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert pod["spec"]["volumes"] == [{"name": "routes", "configMap": {"name": "assistant-router"}}]
    assert constants.MANAGED_BY_LABEL not in pod["metadata"]["labels"]
    assert constants.DEPLOYMENT_LABEL not in pod["metadata"]["labels"]
    assert parts["Deployment"]["spec"]["selector"] == {"matchLabels": {ROUTER_LABEL: "assistant"}}


def test_a_model_change_changes_the_routes_alone() -> None:
    before = _router_parts(_objects())
    after = _router_parts(_objects(models=SEED[:2]))

    def hash_of(obj: dict[str, Any]) -> str:
        return str(obj["metadata"]["labels"][constants.SPEC_HASH_LABEL])

    assert hash_of(before["ConfigMap"]) != hash_of(after["ConfigMap"])
    assert hash_of(before["Deployment"]) == hash_of(after["Deployment"]), "the router is not restarted"
    assert hash_of(before["Service"]) == hash_of(after["Service"])
    assert len({hash_of(o) for o in before.values()}) == 3, "each object hashes itself"


def test_no_router_for_vllm_or_without_an_image() -> None:
    assert not _router_parts(_objects(engine="vllm", models=models("Qwen/Qwen2.5-3B-Instruct")))
    assert not _router_parts(_objects(RenderConfig()))


def test_with_network_policies_the_router_admits_the_same_clients() -> None:
    config = RenderConfig(
        router_image="gpupin:1", network_policy="namespace", network_policy_namespaces=(("team", "ml"),)
    )
    policies = [o for o in _objects(config) if o["kind"] == "NetworkPolicy"]
    assert len(policies) == 2 and len({p["metadata"]["name"] for p in policies}) == 2
    servers, router = sorted(policies, key=lambda p: ROUTER_LABEL in p["spec"]["podSelector"]["matchLabels"])
    assert router["spec"]["podSelector"] == {"matchLabels": {ROUTER_LABEL: "assistant"}}
    assert router["spec"]["ingress"][0]["from"] == servers["spec"]["ingress"][0]["from"]
    assert router["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 8080}]


def test_router_names_are_dns_labels() -> None:
    for name in ("assistant", "a" * 63, "a" * 56, "chat.v2"):
        assert is_dns_1035_label(router_name(name)) and len(router_name(name)) <= 63
    assert router_name("a" * 63) != router_name("a" * 62)


def test_the_operators_router_pod_settings_reach_the_router_deployment() -> None:
    """--router-pod's scheduling, pull secrets and resources are the router pod's; without them it
    asks for 50m CPU and 64Mi and names no node."""
    from gpupin.routerobjects import parse_router_pod

    plain = _router_parts(_objects())["Deployment"]["spec"]["template"]["spec"]
    assert "nodeSelector" not in plain and "tolerations" not in plain and "imagePullSecrets" not in plain
    assert plain["containers"][0]["resources"]["requests"] == {"cpu": "50m", "memory": "64Mi"}
    settings = parse_router_pod(
        json.dumps({
            "nodeSelector": {"pool": "cpu"},
            "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
            "imagePullSecrets": [{"name": "regcred"}],
            "priorityClassName": "endpoints",
            "resources": {"requests": {"cpu": "200m"}},
        })
    )  # fmt: skip
    config = RenderConfig(router_image=ROUTED.router_image, router_pod=settings)
    deployment = _router_parts(_objects(config))["Deployment"]
    spec = deployment["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"pool": "cpu"}
    assert spec["tolerations"] == [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}]
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["priorityClassName"] == "endpoints"
    assert spec["containers"][0]["resources"] == {"requests": {"cpu": "200m"}}
    plain_hash = _router_parts(_objects())["Deployment"]["metadata"]["labels"]
    assert deployment["metadata"]["labels"] != plain_hash, "a change of settings rolls the router"


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ('{"nodeselector": {}}', "nodeselector: Extra inputs are not permitted"),
        ('{"tolerations": [{"effect": "Never"}]}', "tolerations.0.effect: Input should be 'NoSchedule'"),
        (
            '{"resources": {"requests": {"cpu": "lots"}}}',
            "resources.requests.cpu: 'lots' is not a Kubernetes quantity",
        ),
        ('{"resources": {"requests": {"nvidia.com/gpu": "1"}}}', "Input should be 'cpu' or 'memory'"),
        ('{"imagePullSecrets": ["regcred"]}', "imagePullSecrets.0: Input should be an object"),
        ('{"priorityClassName": "High"}', "'High' is not an object name"),
        (
            '{"tolerations": [{"effect": "NoSchedule"}]}',
            "a toleration without a key must have operator Exists",
        ),
        (
            '{"tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 300}]}',
            "tolerationSeconds only goes with effect NoExecute",
        ),
        (
            '{"tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]}',
            "operator Exists takes no value",
        ),
        ('{"tolerations": [{"key": "bad key", "operator": "Exists"}]}', "'bad key' is not a label key"),
        ('{"nodeSelector": {"bad key": "x"}}', "'bad key' is not a label key"),
        ('{"nodeSelector": {"k": "a b"}}', "'a b' is not a label value"),
        ('{"resources": {"requests": {"cpu": "-1"}}}', "'-1' is not a Kubernetes quantity of at least 0"),
        (
            '{"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}',
            "the cpu request 2 is above its limit 1",
        ),
        ('{"resources": {"requests": {"cpu": true}}}', "True is not a Kubernetes quantity"),
        ("[]", "the value: Input should be an object"),
        ("{", "the value: Invalid JSON"),
    ],
)
def test_bad_router_pod_settings_name_the_field(given: str, says: str) -> None:
    from gpupin.routerobjects import parse_router_pod

    with pytest.raises(ValueError) as caught:
        parse_router_pod(given)
    assert str(caught.value).startswith("--router-pod: ") and says in str(caught.value), caught.value


@pytest.mark.parametrize(
    ("given", "pod", "resources"),
    [
        # what Helm values produce: numbers for quantities, null or "" for what was left empty
        (
            '{"resources": {"requests": {"cpu": 1, "memory": 134217728}}}',
            {},
            {"requests": {"cpu": "1", "memory": "134217728"}},
        ),
        (
            '{"resources": {"requests": {"cpu": 0.5}, "limits": {"cpu": 1.5}}}',
            {},
            {"requests": {"cpu": "0.5"}, "limits": {"cpu": "1.5"}},
        ),
        (
            '{"tolerations": null, "nodeSelector": null, "imagePullSecrets": null, "priorityClassName": ""}',
            {},
            None,
        ),
        ('{"resources": {"requests": {}}}', {}, None),
        # what the API server accepts: every effect (""), Equal spelt "", a prefixed key
        (
            '{"tolerations": [{"key": "d", "operator": "Exists", "effect": ""}, {"key": "e", "operator": "", "value": "x"}]}',
            {
                "tolerations": [
                    {"key": "d", "operator": "Exists", "effect": ""},
                    {"key": "e", "operator": "", "value": "x"},
                ]
            },
            None,
        ),
        ('{"tolerations": [{"operator": "Exists"}]}', {"tolerations": [{"operator": "Exists"}]}, None),
        (
            '{"nodeSelector": {"example.com/pool": "cpu"}}',
            {"nodeSelector": {"example.com/pool": "cpu"}},
            None,
        ),
    ],
)
def test_router_pod_settings_kubernetes_accepts_are_accepted(
    given: str, pod: dict[str, Any], resources: dict[str, Any] | None
) -> None:
    from gpupin.routerobjects import parse_router_pod

    settings = parse_router_pod(given)
    config = RenderConfig(router_image=ROUTED.router_image, router_pod=settings)
    spec = _router_parts(_objects(config))["Deployment"]["spec"]["template"]["spec"]
    assert {k: spec[k] for k in pod} == pod
    assert spec["containers"][0]["resources"] == (
        resources or {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}
    )
