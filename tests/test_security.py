"""Trust boundaries on a real API server, as the real ServiceAccounts with the chart's own RBAC and
admission policy (issue 14).

Aspects: the API server refuses an LLMDeployment that sets a pinning variable; the agent's token,
bound to a pod on its node as the kubelet binds it, publishes that node's inventory and can neither
write another Node, nor taint its own, nor change a label or annotation that is not gpupin's, and
an unbound token of the same ServiceAccount can write no Node at all; an operator serving one
namespace with the chart's namespaced RBAC places pods there, posts its Node Events in namespace
default, logs no refusal, and may not create or read a pod anywhere else; beside a device plugin the
real scheduler hands a visible-devices GPU to another pod, and not a device-plugin-pinned one.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpupin import constants
from gpupin.agent.gpus import FakeSource
from gpupin.agent.publish import Agent
from gpupin.kube import ApiError, Kube, load_configuration

from helpers import A10, node
from kwok import Cluster, Env, missing_tools, token_kubeconfig, tools_bin, wait_for

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "gpupin"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(180),
    pytest.mark.skipif(
        bool(missing_tools()) or not (tools_bin() / "helm").exists(),
        reason="helm and the control-plane binaries are built by `make cluster-tools`",
    ),
]

QWEN = [{"name": "Qwen/Qwen2.5-3B-Instruct"}]


def _chart(release: str, namespace: str, *sets: str, kinds: set[str]) -> str:
    """The chart's objects of ``kinds``, rendered for ``release`` in ``namespace``, as YAML."""
    args = [str(tools_bin() / "helm"), "template", release, str(CHART), "--namespace", namespace]
    for item in sets:
        args += ["--set", item]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=120).stdout
    docs = [d for d in yaml.safe_load_all(out) if d and d["kind"] in kinds]
    return yaml.safe_dump_all(docs)


def _refusal(call: Any) -> ApiError | None:
    """The API server's refusal of ``call()``, or None when it was allowed."""
    try:
        call()
    except ApiError as exc:
        assert exc.status in (403, 422), f"expected a refusal, got {exc.status} {exc.reason}"
        return exc
    return None


def _merge_patch(kube: Kube, name: str, patch: dict[str, Any]) -> Any:
    return kube.request("PATCH", f"/api/v1/nodes/{name}", patch, content_type="application/merge-patch+json")


def test_the_api_server_refuses_a_pinning_variable(env: Env) -> None:
    for var in (
        {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"},
        {"name": "CUDA_VISIBLE_DEVICES", "valueFrom": {"configMapKeyRef": {"name": "gpus", "key": "all"}}},
    ):
        body = {
            "apiVersion": constants.API_VERSION,
            "kind": constants.KIND,
            "metadata": {"name": "greedy", "namespace": env.namespace},
            "spec": {"models": QWEN, "env": [{"name": "HF_TOKEN", "value": "t"}, var]},
        }
        result = env.cluster.kubectl("apply", "-f", "-", input=json.dumps(body), check=False)
        assert result.returncode != 0, f"{var['name']} was accepted"
        assert "spec.env[1]" in result.stderr and "choose the GPUs a container sees" in result.stderr, (
            result.stderr
        )


def test_the_agent_writes_only_its_own_nodes_gpupin_keys(env: Env, tmp_path: Path) -> None:
    cluster: Cluster = env.cluster
    release = f"gpupin-agent-{env.suffix}"
    account = f"{release}-agent"
    manifest = _chart(
        release,
        env.namespace,
        kinds={
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        },
    )
    cluster.kubectl("apply", "-f", "-", input=manifest)
    own, other = node(f"own-{env.suffix}", A10), node(f"other-{env.suffix}", A10)
    for inventory in (own, other):
        cluster.add_node(inventory, annotate=inventory is other)
        env.nodes.append(inventory.name)
    try:
        pod = cluster.kube.request(
            "POST",
            f"/api/v1/namespaces/{env.namespace}/pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "agent"},
                "spec": {
                    "serviceAccountName": account,
                    "nodeName": own.name,
                    "containers": [{"name": "agent", "image": "gpupin"}],
                },
            },
        )
        bound = Kube(
            load_configuration(str(token_kubeconfig(cluster, env.namespace, account, tmp_path / "a", pod)))
        )
        unbound = Kube(
            load_configuration(str(token_kubeconfig(cluster, env.namespace, account, tmp_path / "b")))
        )

        # The admission policy takes effect once the API server has compiled it: wait for the first refusal.
        theft = {"metadata": {"annotations": {constants.INVENTORY_ANNOTATION: own.to_annotation()}}}
        refused = wait_for(
            lambda: _refusal(lambda: _merge_patch(bound, other.name, theft)), what="the policy"
        )
        assert f"may write only its own Node, not {other.name}" in refused.body, refused.body

        # its own Node's inventory: published by the real agent code
        path = tmp_path / "inventory.yaml"
        path.write_text(yaml.safe_dump({"nodes": [json.loads(own.to_annotation()) | {"name": own.name}]}))
        agent = Agent(bound, FakeSource(path), own.name)
        agent.step()
        assert agent.patches == 1 and agent.last_error is None
        published = cluster.get(f"/api/v1/nodes/{own.name}")["metadata"]
        assert json.loads(published["annotations"][constants.INVENTORY_ANNOTATION]) == json.loads(
            own.to_annotation()
        )
        assert published["labels"][constants.GPU_COUNT_LABEL] == "1"

        for patch, says in (
            ({"spec": {"taints": [{"key": "evict", "effect": "NoExecute"}]}}, "may not change a Node's spec"),
            ({"spec": {"unschedulable": True}}, "may not change a Node's spec"),
            ({"metadata": {"labels": {"node-restriction.kubernetes.io/team": "a"}}}, "only gpupin.dev/"),
            ({"metadata": {"labels": {"kubernetes.io/hostname": "elsewhere"}}}, "only gpupin.dev/"),
            ({"metadata": {"annotations": {"kwok.x-k8s.io/node": None}}}, "only gpupin.dev/"),
        ):
            refusal = _refusal(lambda p=patch: _merge_patch(bound, own.name, p))
            assert refusal is not None and says in refusal.body, (patch, refusal and refusal.body)
        refusal = _refusal(lambda: _merge_patch(unbound, own.name, theft))
        assert refusal is not None and "names no node" in refusal.body, refusal and refusal.body
        after = cluster.get(f"/api/v1/nodes/{own.name}")
        # (the node lifecycle controller may have added node.kubernetes.io/not-ready: not the agent)
        assert "evict" not in {t["key"] for t in after["spec"].get("taints") or []}
        assert not after["spec"].get("unschedulable")
        assert after["metadata"]["labels"]["kubernetes.io/hostname"] == own.name
    finally:
        cluster.kubectl("delete", "-f", "-", "--wait=false", input=manifest, check=False)


def test_a_namespaced_operator_may_act_only_where_it_serves(env: Env) -> None:
    cluster: Cluster = env.cluster
    release = f"gpupin-ns-{env.suffix}"
    account = f"{release}-operator"
    manifest = _chart(
        release,
        env.namespace,
        f"operator.watchNamespaces={env.namespace}",
        "agent.enabled=false",
        kinds={"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"},
    )
    cluster.kubectl("apply", "-f", "-", input=manifest)
    try:
        kubeconfig = token_kubeconfig(cluster, env.namespace, account, env.tmp / "namespaced.kubeconfig")
        box = env.node("box", A10)
        operator = env.operator("--namespace", env.namespace, kubeconfig=kubeconfig)
        env.apply("chat", models=QWEN)
        wait_for(env.placed("chat"), what="placed by the namespaced operator")
        wait_for(lambda: len(env.pods()) == 1, what="its pod")

        # a Node Event goes to namespace default, where the chart lets it write Events (and nothing else)
        _merge_patch(
            cluster.kube, box.name, {"metadata": {"annotations": {constants.INVENTORY_ANNOTATION: "{"}}}
        )
        events = lambda: [  # noqa: E731
            e
            for e in cluster.get("/api/v1/namespaces/default/events")["items"]
            if e["involvedObject"]["kind"] == "Node" and e["involvedObject"]["name"] == box.name
        ]
        wait_for(events, what="the Node Event in namespace default")

        user = f"system:serviceaccount:{env.namespace}:{account}"
        for verb, resource, where, allowed in (
            ("create", "pods", ["-n", env.namespace], "yes"),
            ("create", "pods", ["-n", "default"], "no"),
            ("list", "pods", ["--all-namespaces"], "no"),
            ("list", "pods", ["-n", "kube-system"], "no"),
            ("delete", "services", ["-n", "default"], "no"),
            ("patch", "llmdeployments.gpupin.dev/status", ["-n", "default"], "no"),
            ("create", "events", ["-n", "default"], "yes"),
            ("create", "events", ["-n", "kube-system"], "no"),
            ("list", "nodes", [], "yes"),
        ):
            answer = cluster.kubectl("auth", "can-i", verb, resource, *where, "--as", user, check=False)
            assert answer.stdout.strip() == allowed, f"{user} {verb} {resource} {where}: {answer.stdout}"
        log = operator.log.read_text()
        assert "Not enough permissions" not in log and "namespaces is forbidden" not in log, operator.tail()
        operator.stop()  # before its rights go (it releases its Lease on the way out)
        assert "Forbidden" not in operator.log.read_text(), operator.tail()
    finally:
        cluster.kubectl("delete", "-f", "-", "--wait=false", input=manifest, check=False)


def _foreign_gpu_pod(env: Env, node_name: str) -> str:
    """A pod that is not gpupin's and asks the device plugin for a GPU on ``node_name``; its name."""
    env.cluster.kube.request(
        "POST",
        f"/api/v1/namespaces/{env.namespace}/pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "foreign"},
            "spec": {
                "nodeSelector": {"kubernetes.io/hostname": node_name},
                "containers": [
                    {"name": "cuda", "image": "cuda", "resources": {"limits": {constants.GPU_RESOURCE: "1"}}}
                ],
            },
        },
    )
    return "foreign"


@pytest.mark.parametrize("pinning", ["visible-devices", "device-plugin"])
def test_beside_the_device_plugin_only_device_plugin_pinning_keeps_a_gpu_from_other_pods(
    env: Env, pinning: str
) -> None:
    """The real scheduler on a node whose device plugin advertises its one GPU (as the NVIDIA GPU
    Operator's does): in visible-devices mode gpupin's pod requests no nvidia.com/gpu, so the
    scheduler still hands that GPU to any pod asking for one — the hazard the README tells admins to
    fence; in device-plugin mode gpupin's pod holds the count and the other pod stays Pending."""
    box = node(f"plugin-{env.suffix}", A10)
    env.cluster.add_node(box, gpu_capacity=True)
    env.nodes.append(box.name)
    env.operator("--pinning", pinning)
    env.apply("chat", models=QWEN)
    wait_for(env.placed("chat"), what="placed")
    (ours,) = wait_for(
        lambda: [p for p in env.pods() if p["metadata"]["name"].startswith("chat-")], what="its pod"
    )
    wait_for(
        lambda: env.cluster.get(f"/api/v1/namespaces/{env.namespace}/pods/{ours['metadata']['name']}")[
            "spec"
        ].get("nodeName"),
        what="gpupin's pod scheduled",
    )
    name = _foreign_gpu_pod(env, box.name)

    def scheduled_or_refused() -> str | None:
        pod = env.cluster.get(f"/api/v1/namespaces/{env.namespace}/pods/{name}")
        if pod["spec"].get("nodeName"):
            return "scheduled"
        for condition in (pod.get("status") or {}).get("conditions") or []:
            # (a fresh node's not-ready taint may be the first reason: wait for the GPU one)
            if (
                condition["type"] == "PodScheduled"
                and condition.get("reason") == "Unschedulable"
                and f"Insufficient {constants.GPU_RESOURCE}" in condition["message"]
            ):
                return "refused"
        return None

    outcome = wait_for(scheduled_or_refused, what="the scheduler's answer for the other pod")
    assert outcome == ("scheduled" if pinning == "visible-devices" else "refused")
