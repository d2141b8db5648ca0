"""The operator gives an Ollama LLMDeployment one endpoint: a Service named after it in front of a
``gpupin router`` Deployment whose routes name the per-model Services. Real API server, garbage
collector and Deployment controller (KWOK runs the router's pod as it runs every pod: no
container — the router's forwarding is tested against real Ollama in test_router_ollama.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gpupin import constants
from gpupin.routerobjects import ROUTER_LABEL

from helpers import RTX_2060, RTX_4070
from kwok import Env, grant, revoke, token_kubeconfig, wait_for

pytestmark = pytest.mark.timeout(180)
IMAGE = "gpupin.local/gpupin:router-test"


def _get(env: Env, path: str) -> dict[str, Any] | None:
    from gpupin.kube import ApiError

    try:
        return env.cluster.get(path)
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


def _router(
    env: Env, name: str
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, dict[str, Any] | None]:
    ns = env.namespace
    return (
        _get(env, f"/api/v1/namespaces/{ns}/services/{name}"),
        _get(env, f"/api/v1/namespaces/{ns}/configmaps/{name}-router"),
        _get(env, f"/apis/apps/v1/namespaces/{ns}/deployments/{name}-router"),
    )


def test_an_ollama_deployment_gets_one_endpoint_that_follows_its_models(env: Env) -> None:
    from gpupin.controller import rbac

    name = f"gpupin-router-{env.suffix}"
    grant(env.cluster, env.namespace, "gpupin", name, [*rbac.RULES, *rbac.ROUTER_RULES])
    try:
        kubeconfig = token_kubeconfig(env.cluster, env.namespace, "gpupin", env.tmp / "sa.kubeconfig")
        workstation = env.node("workstation", RTX_4070, RTX_2060).name
        # router pods only on nodes labelled for them: none is, so the endpoint waits and says why
        role = f"gpupin.test/router-{env.suffix}"
        router_pod = json.dumps(
            {"nodeSelector": {role: "yes"}, "tolerations": [{"key": "x", "operator": "Exists"}]}
        )
        operator = env.operator("--router-image", IMAGE, "--router-pod", router_pod, kubeconfig=kubeconfig)
        models = [{"name": "qwen2.5:14b"}, {"name": "llama3.1:8b"}, {"name": "nomic-embed-text"}]
        env.apply("assistant", engine="ollama", models=models)
        service, routes, router = wait_for(
            lambda: all(found := _router(env, "assistant")) and found, what="the router's objects"
        )
        uid = env.cluster.deployment(env.namespace, "assistant")["metadata"]["uid"]
        for obj in (service, routes, router):
            assert [(r["kind"], r["uid"]) for r in obj["metadata"]["ownerReferences"]] == [
                (constants.KIND, uid)
            ]
        assert service["spec"]["selector"] == {ROUTER_LABEL: "assistant"}
        assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(11434, "http")]
        services = {
            s["metadata"]["name"]
            for s in env.cluster.get(f"/api/v1/namespaces/{env.namespace}/services")["items"]
        }
        table = json.loads(routes["data"]["routes.yaml"])
        assert table["engine"] == "ollama"
        by_model = {b["models"][0]: b["address"] for b in table["backends"]}
        assert set(by_model) == {"qwen2.5:14b", "llama3.1:8b", "nomic-embed-text"}
        for address in by_model.values():  # each model to its own Service, which follows its pods
            host, _, port = address.rpartition(":")
            assert (
                port == "11434" and host.endswith(f".{env.namespace}.svc") and host.split(".")[0] in services
            )
        template = router["spec"]["template"]
        assert template["spec"]["containers"][0]["image"] == IMAGE
        assert template["spec"]["containers"][0]["args"][:3] == [
            "router",
            "--routes",
            "/etc/gpupin/routes/routes.yaml",
        ]
        assert template["spec"]["nodeSelector"] == {role: "yes"}
        assert template["spec"]["tolerations"] == [{"key": "x", "operator": "Exists"}]
        waiting = wait_for(
            lambda: (
                (c := env.cluster.condition(env.namespace, "assistant", "EndpointReady"))
                and c["status"] == "False"
                and "no ready pod" in c["message"]
                and c
            ),
            what="EndpointReady=False while the router's pod cannot be scheduled",
        )
        assert waiting["reason"] == "RouterNotReady"
        assert "describe deployment assistant-router" in waiting["message"], waiting
        env.cluster.kubectl("label", "node", workstation, f"{role}=yes")
        routed = wait_for(
            env.condition_is("assistant", "EndpointReady"),
            what="EndpointReady=True once the router's pod is ready",
        )
        assert routed["reason"] == "RouterReady"
        address = f"assistant.{env.namespace}.svc:11434"
        assert env.cluster.deployment(env.namespace, "assistant")["status"]["endpoint"] == address
        labels = template["metadata"]["labels"]
        assert constants.MANAGED_BY_LABEL not in labels and constants.DEPLOYMENT_LABEL not in labels, (
            "the router's pods must not pass for the deployment's servers"
        )
        # the Deployment controller makes the router's pod; the operator leaves it alone
        wait_for(
            lambda: [
                p
                for p in env.cluster.pods(env.namespace)
                if (p["metadata"].get("labels") or {}).get(ROUTER_LABEL) == "assistant"
            ],
            what="the router's pod",
        )
        ready = wait_for(env.condition_is("assistant", "Ready"), what="Ready=True")
        assert ready["message"] == "2/2 pods ready"

        # a model leaves the spec: the routes follow, the router's Deployment stays (no restart)
        env.apply("assistant", engine="ollama", models=models[:2])
        wait_for(
            lambda: (
                (cm := _router(env, "assistant")[1]) is not None
                and {b["models"][0] for b in json.loads(cm["data"]["routes.yaml"])["backends"]}
                == {"qwen2.5:14b", "llama3.1:8b"}
            ),
            what="the routes without nomic-embed-text",
        )
        _, new_routes, same_router = _router(env, "assistant")
        assert same_router["metadata"]["uid"] == router["metadata"]["uid"]
        assert new_routes["metadata"]["uid"] == routes["metadata"]["uid"], "the routes are written in place"

        # a new gpupin image (an upgrade): the router's Deployment is updated in place, so the
        # Deployment controller rolls its pod (maxUnavailable 0) instead of the endpoint going away
        operator.stop()
        operator = env.operator(
            "--router-image", f"{IMAGE}-next", "--router-pod", router_pod, kubeconfig=kubeconfig
        )
        upgraded = wait_for(
            lambda: (
                (d := _router(env, "assistant")[2]) is not None
                and d["spec"]["template"]["spec"]["containers"][0]["image"] == f"{IMAGE}-next"
                and d
            ),
            what="the router's Deployment on the new image",
        )
        assert upgraded["metadata"]["uid"] == router["metadata"]["uid"]
        wait_for(
            lambda: '"event": "Replaced Deployment in place"' in operator.log.read_text(), what="the log"
        )

        env.delete("assistant")
        wait_for(
            lambda: not any(_router(env, "assistant")), timeout=60, what="the router gone with its owner"
        )
        log = operator.log.read_text()
        assert '"status": 403' not in log and "Forbidden" not in log, operator.tail()
        operator.stop()  # before its rights go
    finally:
        revoke(env.cluster, name)


def test_an_operator_without_a_router_image_makes_none(env: Env) -> None:
    env.node("workstation", RTX_4070, RTX_2060)
    env.operator()
    env.apply("assistant", engine="ollama", models=[{"name": "llama3.1:8b"}])
    wait_for(env.placed("assistant"), what="Placed=True")
    # Services come in the last stage of the writes: once the model's exists, the router's would
    wait_for(lambda: _get(env, f"/api/v1/namespaces/{env.namespace}/services/assistant-llama3-1-8b"),
             what="the model's Service")  # fmt: skip
    service, routes, router = _router(env, "assistant")
    assert service is None and routes is None and router is None
