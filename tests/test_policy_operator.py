"""The cluster admin's knobs enforced by the real operator against a real API server (KWOK tier).

Aspects: with ``--allowed-images ollama/ollama`` a deployment asking for another image is refused
(Placed=False, reason PolicyRefused, the field and the flag named), one Warning Event, no pod,
and no retry loop (nothing more is written); an allowed image beside it is placed; a policy
tightened under a running deployment keeps its pod (refused, and said so). With
``--network-policy namespace`` a placed deployment gets its NetworkPolicy (owned by it, selecting
its pods, the serving port only), made by an operator whose ServiceAccount has exactly rbac.RULES
plus the networkpolicies rule; one deleted by hand is made again (the operator watches them); it
goes with the deployment (garbage collector).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpupin import constants, reasons

from helpers import RTX_2060, RTX_4070
from kwok import Env, grant, revoke, token_kubeconfig, tools_bin, wait_for

CHART = Path(__file__).resolve().parents[1] / "charts" / "gpupin"

pytestmark = pytest.mark.timeout(180)


def _chart_policy_env(*sets: str) -> dict[str, str]:
    """The operator's GPUPIN_ALLOW* variables as the chart renders them from ``sets`` (its values)."""
    args = [str(tools_bin() / "helm"), "template", "gpupin", str(CHART)]
    for item in sets:
        args += ["--set", item]
    docs = yaml.safe_load_all(
        subprocess.run(args, capture_output=True, text=True, check=True, timeout=120).stdout
    )
    (deployment,) = [d for d in docs if d and d["kind"] == "Deployment"]
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    return {e["name"]: e["value"] for e in env if e["name"].startswith("GPUPIN_ALLOW")}


@pytest.mark.skipif(not (tools_bin() / "helm").exists(), reason="helm is built by `make cluster-tools`")
def test_an_image_the_admin_does_not_allow_is_refused_once_with_no_pod(env: Env) -> None:
    """The chart's operator.policy.allowedImages, as the chart passes it, refuses a foreign image."""
    env.node("workstation", RTX_4070, RTX_2060)
    policy = _chart_policy_env("operator.policy.allowedImages={ollama/ollama}")
    assert policy["GPUPIN_ALLOWED_IMAGES"] == "ollama/ollama"
    operator = env.operator(environment=policy)
    env.apply("evil", engine="ollama", models=[{"name": "llama3.1:8b"}], image="evil.example/ollama:latest")
    env.apply("fine", engine="ollama", models=[{"name": "qwen2.5:7b"}], image="ollama/ollama:0.17.4")
    refused = wait_for(env.placed("evil", "False"), what="Placed=False")
    assert refused["reason"] == reasons.POLICY_REFUSED
    assert refused["message"].startswith(
        "the cluster's policy refuses spec.image: evil.example/ollama:latest is not an image this cluster "
        "allows (operator flag --allowed-images: ollama/ollama"
    ), refused["message"]
    wait_for(env.placed("fine"), what="the allowed image placed")
    wait_for(lambda: len(env.pods()) == 1, what="the allowed deployment's pod")
    warnings = wait_for(
        lambda: [e for e in env.cluster.events(env.namespace, "evil") if e["type"] == "Warning"],
        what="the Warning Event",
    )
    status = env.cluster.deployment(env.namespace, "evil")["status"]
    time.sleep(3)  # a retry loop would post again and rewrite the status by now
    assert [e["reason"] for e in env.cluster.events(env.namespace, "evil")] == [reasons.POLICY_REFUSED]
    assert len(warnings) == 1
    assert env.cluster.deployment(env.namespace, "evil")["status"] == status, "nothing more written"
    assert [p["metadata"]["labels"][constants.DEPLOYMENT_LABEL] for p in env.pods()] == ["fine"]
    assert operator.alive()


def test_a_tightened_policy_keeps_the_pods_that_serve(env: Env) -> None:
    """The admin restarts the operator with --allowed-images while a deployment runs another image:
    its spec is refused and says its pod keeps running; the pod is neither deleted nor replaced."""
    env.node("workstation", RTX_4070, RTX_2060)
    first = env.operator()
    env.apply("chat", engine="ollama", models=[{"name": "llama3.1:8b"}], image="registry.example/ollama:1")
    wait_for(env.placed("chat"), what="placed under no policy")
    (pod,) = wait_for(lambda: env.pods(), what="its pod")
    first.stop()
    env.operator("--allowed-images", "ollama/ollama")
    refused = wait_for(env.placed("chat", "False"), what="refused under the new policy")
    assert refused["reason"] == reasons.POLICY_REFUSED
    assert refused["message"].endswith("(1 pod placed earlier keeps running)"), refused["message"]
    time.sleep(3)
    assert [p["metadata"]["uid"] for p in env.pods()] == [pod["metadata"]["uid"]]


def _network_policies(env: Env) -> list[dict[str, Any]]:
    path = f"/apis/networking.k8s.io/v1/namespaces/{env.namespace}/networkpolicies"
    return list(env.cluster.get(path).get("items") or [])


def test_a_placed_deployment_gets_its_network_policy_and_it_goes_with_it(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gpupin.controller import rbac

    monkeypatch.setenv("GPUPIN_TEST_LOG_LEVEL", "DEBUG")  # the operator says what its watches deliver

    name = f"gpupin-netpol-{env.suffix}"
    grant(env.cluster, env.namespace, "gpupin", name, [*rbac.RULES, *rbac.NETWORK_POLICY_RULES])
    try:
        kubeconfig = token_kubeconfig(env.cluster, env.namespace, "gpupin", env.tmp / "sa.kubeconfig")
        env.node("workstation", RTX_4070, RTX_2060)
        operator = env.operator("--network-policy", "namespace", kubeconfig=kubeconfig)
        env.apply("assistant", engine="ollama", models=[{"name": "qwen2.5:14b"}, {"name": "llama3.1:8b"}])
        wait_for(env.placed("assistant"), what="Placed=True")
        (policy,) = wait_for(lambda: _network_policies(env), what="the NetworkPolicy")
        uid = env.cluster.deployment(env.namespace, "assistant")["metadata"]["uid"]
        assert policy["metadata"]["name"].startswith("assistant-gpupin-")
        assert [(r["kind"], r["uid"], r["controller"]) for r in policy["metadata"]["ownerReferences"]] == [
            (constants.KIND, uid, True)
        ]
        assert policy["spec"]["podSelector"] == {"matchLabels": {constants.DEPLOYMENT_LABEL: "assistant"}}
        assert policy["spec"]["ingress"] == [
            {"from": [{"podSelector": {}}], "ports": [{"protocol": "TCP", "port": 11434}]}
        ]
        pods = wait_for(lambda: len(ps := env.pods()) == 2 and ps, what="the two pods")
        assert all(p["metadata"]["labels"][constants.DEPLOYMENT_LABEL] == "assistant" for p in pods)
        # the watch: a NetworkPolicy deleted by hand is made again. kopf starts its watches after
        # the start-up handlers, and the first plan may be written before: one deleted before the
        # watch has listed it is found by the relist (--relist-seconds), not here
        wait_for(
            lambda: '"event": "Saw NetworkPolicy"' in operator.log.read_text(),
            what="the operator's watch delivering the NetworkPolicy",
        )
        env.cluster.kube.request(
            "DELETE",
            f"/apis/networking.k8s.io/v1/namespaces/{env.namespace}/networkpolicies/{policy['metadata']['name']}",
        )
        wait_for(
            lambda: [p for p in _network_policies(env) if p["metadata"]["uid"] != policy["metadata"]["uid"]],
            what="the NetworkPolicy made again",
        )
        env.delete("assistant")
        wait_for(lambda: not _network_policies(env), timeout=60, what="the NetworkPolicy gone with its owner")
        log = operator.log.read_text()
        assert '"status": 403' not in log and "Forbidden" not in log, operator.tail()
        operator.stop()  # before its rights go (it releases its Lease on the way out)
    finally:
        revoke(env.cluster, name)
