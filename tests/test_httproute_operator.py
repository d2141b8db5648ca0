"""With ``--gateway``, every Ollama deployment gets an HTTPRoute attached to that Gateway: the real
API server, with the Gateway API's standard CRDs installed from the ``sigs.k8s.io/gateway-api``
module (hack/gateway-api-crds.sh), accepts it — its schema and CEL rules — and the garbage
collector removes it with its deployment. No Gateway implementation runs here: what the route
does in Envoy is the Gateway API's contract, not tested."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from gpupin import constants
from gpupin.httproute import MODEL_HEADER
from gpupin.kube import ApiError

from helpers import REPO, RTX_2060, RTX_4070
from kwok import Cluster, Env, grant, revoke, token_kubeconfig, wait_for

pytestmark = pytest.mark.timeout(180)
CRDS = ("gatewayclasses", "gateways", "httproutes", "referencegrants")


def _install_gateway_api(cluster: Cluster) -> None:
    folder = Path(subprocess.run([str(REPO / "hack" / "gateway-api-crds.sh")], capture_output=True, text=True,
                                 check=True, timeout=300).stdout.strip())  # fmt: skip
    for plural in CRDS:
        done = cluster.kubectl(
            "create", "-f", str(folder / f"gateway.networking.k8s.io_{plural}.yaml"), check=False
        )
        assert done.returncode == 0 or "AlreadyExists" in done.stderr, done.stderr
    for plural in CRDS:
        cluster.kubectl(
            "wait", "--for=condition=Established", f"crd/{plural}.gateway.networking.k8s.io", "--timeout=60s"
        )


def _route(env: Env, name: str) -> dict[str, Any] | None:
    try:
        return env.cluster.get(
            f"/apis/gateway.networking.k8s.io/v1/namespaces/{env.namespace}/httproutes/{name}"
        )  # type: ignore[no-any-return]
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


def test_an_ollama_deployment_gets_an_http_route_the_api_server_accepts(env: Env) -> None:
    from gpupin.controller import rbac

    _install_gateway_api(env.cluster)
    name = f"gpupin-gateway-{env.suffix}"
    grant(env.cluster, env.namespace, "gpupin", name, [*rbac.RULES, *rbac.GATEWAY_RULES])
    try:
        kubeconfig = token_kubeconfig(env.cluster, env.namespace, "gpupin", env.tmp / "sa.kubeconfig")
        env.node("workstation", RTX_4070, RTX_2060)
        operator = env.operator("--gateway", "infra/llm-gateway", kubeconfig=kubeconfig)
        env.apply("assistant", engine="ollama",
                  models=[{"name": "qwen2.5:14b"}, {"name": "llama3.1:8b"}, {"name": "nomic-embed-text"}])  # fmt: skip
        route = wait_for(lambda: _route(env, "assistant"), what="the HTTPRoute")
        wait_for(  # the route and the Services are made in one stage
            lambda: len(env.cluster.get(f"/api/v1/namespaces/{env.namespace}/services")["items"]) == 3,
            what="the models' Services",
        )
        uid = env.cluster.deployment(env.namespace, "assistant")["metadata"]["uid"]
        assert [(r["kind"], r["uid"]) for r in route["metadata"]["ownerReferences"]] == [
            (constants.KIND, uid)
        ]
        assert route["spec"]["parentRefs"][0]["name"] == "llm-gateway"
        assert route["spec"]["parentRefs"][0]["namespace"] == "infra"
        services = {
            s["metadata"]["name"]: s
            for s in env.cluster.get(f"/api/v1/namespaces/{env.namespace}/services")["items"]
        }
        routed = {}
        for rule in route["spec"]["rules"]:
            (backend,) = rule["backendRefs"]
            assert backend["name"] in services and backend["port"] == 11434
            model = services[backend["name"]]["metadata"]["annotations"]["gpupin.dev/model"]
            routed[model] = [m["headers"][0]["value"] for m in rule["matches"]]
            assert all(m["headers"][0]["name"] == MODEL_HEADER for m in rule["matches"])
        assert routed == {
            "qwen2.5:14b": ["qwen2.5:14b"],
            "llama3.1:8b": ["llama3.1:8b"],
            "nomic-embed-text": ["nomic-embed-text", "nomic-embed-text:latest"],
        }
        env.delete("assistant")
        wait_for(
            lambda: _route(env, "assistant") is None, timeout=60, what="the HTTPRoute gone with its owner"
        )
        log = operator.log.read_text()
        assert '"status": 403' not in log and "Forbidden" not in log, operator.tail()
        operator.stop()  # before its rights go
    finally:
        revoke(env.cluster, name)
        for plural in CRDS:  # the cluster is shared: other tests list CRDs (kopf) through a proxy
            env.cluster.kubectl(
                "delete", "crd", f"{plural}.gateway.networking.k8s.io", "--wait=false", check=False
            )


def test_without_the_gateway_api_the_deployments_are_served_and_the_log_says_why(env: Env) -> None:
    """``--gateway`` on a cluster without the Gateway API's CRDs: one error at start, no HTTPRoute,
    and every deployment placed as without the flag (not a crash loop, not a refusal)."""
    for plural in CRDS:
        env.cluster.kubectl(
            "delete", "crd", f"{plural}.gateway.networking.k8s.io", "--ignore-not-found", check=False
        )
    wait_for(
        lambda: (
            env.cluster.kubectl("get", "crd", "httproutes.gateway.networking.k8s.io", check=False).returncode
            != 0
        ),
        timeout=60,
        what="no HTTPRoute CRD",
    )
    env.node("workstation", RTX_4070, RTX_2060)
    operator = env.operator("--gateway", "infra/llm-gateway")
    env.apply("assistant", engine="ollama", models=[{"name": "qwen2.5:14b"}])
    wait_for(env.placed("assistant"), what="Placed=True")
    wait_for(lambda: len(env.pods()) == 1, what="the pod")
    assert "does not serve the Gateway API" in operator.log.read_text(), operator.tail()
