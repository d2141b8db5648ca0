"""The Helm chart and the plain manifests, with the Go-built helm v4 and a real API server.

Aspects: `helm lint`; `helm template` with default and non-default values, every rendered
object valid Kubernetes v1.37 (strict schema); the operator's ClusterRole is exactly
rbac.RULES; the agent DaemonSet (GPU-node affinity, NVML without a GPU, fake inventory);
security contexts; CRDs switchable and kept; contradictory values fail with a message;
generated files (CRD copies, RBAC rules, manifests/) have not drifted; the samples pass the
real API server's schema and CEL (server-side dry run); `helm install`/`upgrade`/`uninstall`
on the cluster, CRD kept. The rendered-template tests need helm alone; those on the cluster
skip themselves (the `cluster` fixture) without the control-plane binaries. The chart's
operations surface (agent targeting, monitoring, ports, NOTES, README) is tests/test_chart_ops.py.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gpupin import generate
from gpupin.controller import rbac

from charting import CHART, by_kind, helm, needs_helm, render, runs_on
from helpers import REPO
from kwok import Cluster, tools_bin

pytestmark = needs_helm


FAKE_VALUES = {
    "operator": {
        "pinning": "dra",
        "watchNamespaces": ["team-a", "team-b"],
        "logLevel": "DEBUG",
        "relistSeconds": 0,
    },
    "crds": {"keep": False},
    "agent": {
        "fakeInventory": {
            "enabled": True,
            "inventory": yaml.safe_load((REPO / "examples" / "inventory" / "workstation.yaml").read_text()),
        },
    },
}


def test_lint_default_and_non_default(tmp_path: Path) -> None:
    helm("lint", str(CHART), "--strict")
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(FAKE_VALUES))
    helm("lint", str(CHART), "--strict", "-f", str(values))


@pytest.mark.parametrize("variant", ["default", "fake-dra"])
def test_everything_rendered_is_valid_kubernetes(variant: str, tmp_path: Path) -> None:
    docs = render() if variant == "default" else render(values=FAKE_VALUES, tmp=tmp_path)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, "1.37.0", strict=True)


def test_default_install() -> None:
    docs = render()
    roles = {r["metadata"]["name"]: r["rules"] for r in by_kind(docs, "ClusterRole")}
    assert roles["gpupin-operator"] == rbac.CLUSTER_RULES, "the chart uses the operator's one list of rules"
    assert roles["gpupin-operator-workloads"] == [*rbac.NAMESPACED_RULES, *rbac.ROUTER_RULES], (
        "routers by default"
    )
    bindings = {b["metadata"]["name"]: b["roleRef"]["name"] for b in by_kind(docs, "ClusterRoleBinding")}
    assert bindings["gpupin-operator-workloads"] == "gpupin-operator-workloads", "every namespace served"
    (lease,) = by_kind(docs, "Role")  # the one namespaced grant: the operator's Lease, where it runs
    assert (lease["metadata"]["namespace"], lease["rules"]) == ("gpupin-system", rbac.LEASE_RULES)
    (lease_binding,) = by_kind(docs, "RoleBinding")
    assert lease_binding["roleRef"]["name"] == lease["metadata"]["name"]
    assert lease_binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "gpupin-operator", "namespace": "gpupin-system"}
    ]
    assert roles["gpupin-agent"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]}]
    (policy,) = by_kind(docs, "ValidatingAdmissionPolicy")
    assert policy["spec"]["matchConditions"][0]["expression"] == (
        "request.userInfo.username == 'system:serviceaccount:gpupin-system:gpupin-agent'"
    ), "the policy binds the agent's own ServiceAccount"
    (binding,) = by_kind(docs, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
    (deployment,) = by_kind(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }, "the new pod waits for the Lease as a standby: one writer through a rolling update"
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["GPUPIN_RELIST_SECONDS"] == "300"
    assert env["GPUPIN_ROUTER_IMAGE"] == deployment["spec"]["template"]["spec"]["containers"][0]["image"], (
        "routers run the operator's own image"
    )
    (daemonset,) = by_kind(docs, "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod, "GPU nodes are found by a node affinity (tests/test_chart_ops.py)"
    assert runs_on(pod, {"nvidia.com/gpu.present": "true"}) and not runs_on(pod, {})
    assert pod["runtimeClassName"] == "nvidia"
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in pod["containers"][0]["env"]}
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all" and env["NODE_NAME"] == {
        "fieldRef": {"fieldPath": "spec.nodeName"}
    }
    assert "nvidia.com/gpu" not in json.dumps(pod["containers"][0]["resources"]), (
        "NVML without allocating a GPU"
    )
    for workload in (deployment, daemonset):
        context = workload["spec"]["template"]["spec"]["containers"][0]["securityContext"]
        assert (
            context["runAsNonRoot"]
            and context["readOnlyRootFilesystem"]
            and context["capabilities"]["drop"] == ["ALL"]
        )
        assert not context.get("privileged")
    (crd,) = by_kind(docs, "CustomResourceDefinition")
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_non_default_values(tmp_path: Path) -> None:
    docs = render(values=FAKE_VALUES, tmp=tmp_path)
    (crd,) = by_kind(docs, "CustomResourceDefinition")
    assert "annotations" not in crd["metadata"], "crds.keep=false"
    (deployment,) = by_kind(docs, "Deployment")
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["GPUPIN_PINNING"] == "dra" and env["GPUPIN_NAMESPACES"] == "team-a,team-b"
    assert env["GPUPIN_RELIST_SECONDS"] == "0", "relist off"
    (configmap,) = by_kind(docs, "ConfigMap")
    assert yaml.safe_load(configmap["data"]["inventory.yaml"])["nodes"][0]["name"] == "workstation"
    (daemonset,) = by_kind(docs, "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod and "runtimeClassName" not in pod, "fake mode needs no GPU node, no NVML"
    assert runs_on(pod, {}), "fake mode: every node (that has not opted out)"
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["GPUPIN_FAKE_INVENTORY"] == "/etc/gpupin/inventory.yaml"
    roles = {r["metadata"]["name"]: r["rules"] for r in by_kind(docs, "ClusterRole")}
    assert "gpupin-operator-workloads" not in {
        b["metadata"]["name"] for b in by_kind(docs, "ClusterRoleBinding")
    }
    workloads = {(b["metadata"]["namespace"], b["roleRef"]["name"]) for b in by_kind(docs, "RoleBinding")}
    assert workloads == {
        ("team-a", "gpupin-operator-workloads"),
        ("team-b", "gpupin-operator-workloads"),
        ("default", "gpupin-operator-events"),
        ("gpupin-system", "gpupin-operator-lease"),
    }, "pod rights only in the watched namespaces; Node Events in default; the Lease where it runs"
    (events,) = [r for r in by_kind(docs, "Role") if r["metadata"]["name"] == "gpupin-operator-events"]
    assert events["metadata"]["namespace"] == "default" and events["rules"] == rbac.EVENT_RULES
    assert roles["gpupin-operator"] == rbac.CLUSTER_RULES
    one = by_kind(render("operator.watchNamespaces=llm"), "Deployment")[0]
    assert {"name": "GPUPIN_NAMESPACES", "value": "llm"} in one["spec"]["template"]["spec"]["containers"][0][
        "env"
    ], "--set operator.watchNamespaces=llm is a namespace, not a schema error"
    assert not by_kind(render("agent.restrictNodeWrites=false"), "ValidatingAdmissionPolicy")
    netpol = {
        r["metadata"]["name"]: r["rules"]
        for r in by_kind(render("operator.networkPolicy.mode=namespace"), "ClusterRole")
    }
    assert netpol["gpupin-operator-workloads"] == [
        *rbac.NAMESPACED_RULES,
        *rbac.NETWORK_POLICY_RULES,
        *rbac.ROUTER_RULES,
    ], "NetworkPolicy rights only where the operator makes them"
    unrouted = render("operator.router.enabled=false")
    assert {r["metadata"]["name"]: r["rules"] for r in by_kind(unrouted, "ClusterRole")}[
        "gpupin-operator-workloads"
    ] == rbac.NAMESPACED_RULES, "no rights on configmaps or deployments without routers"
    operator_env = {
        e["name"]: e.get("value")
        for e in by_kind(unrouted, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert operator_env["GPUPIN_ROUTER_IMAGE"] == ""
    gateway = render("operator.gateway=infra/llm-gateway")
    assert {r["metadata"]["name"]: r["rules"] for r in by_kind(gateway, "ClusterRole")}[
        "gpupin-operator-workloads"
    ] == [*rbac.NAMESPACED_RULES, *rbac.ROUTER_RULES, *rbac.GATEWAY_RULES], (
        "HTTPRoute rights only with a Gateway"
    )
    gateway_env = {
        e["name"]: e.get("value")
        for e in by_kind(gateway, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert gateway_env["GPUPIN_GATEWAY"] == "infra/llm-gateway"
    assert not by_kind(render("crds.enabled=false"), "CustomResourceDefinition")
    assert not by_kind(render("agent.enabled=false"), "DaemonSet")
    (standby,) = by_kind(render("operator.replicas=2"), "Deployment")
    assert standby["spec"]["replicas"] == 2, "a warm standby"


@pytest.mark.parametrize(
    ("sets", "fragment"),
    [
        (["operator.replicas=3"], "operator/replicas"),
        (["operator.leaseDurationSeconds=0"], "operator/leaseDurationSeconds"),
        (["operator.pinning=magic"], "operator/pinning"),
        (["agent.fakeInventory.enabled=true"], "needs agent.fakeInventory.inventory.nodes"),
        (["agent.enabled=false", "agent.fakeInventory.enabled=true"], "needs agent.enabled"),
        (["operator.typo=1"], "typo"),
        (["operator.relistSeconds=-1"], "operator/relistSeconds"),
        (["operator.watchNamespaces={llm,Team_B}"], "watchNamespaces/1"),
        (["operator.watchNamespaces=Team_B"], '"Team_B" is not a namespace name'),
        (["operator.watchNamespaces=" + "a" * 64], "at most 63"),
        (
            ["operator.policy.allowedImages={quay.io}"],
            '"quay.io" is a registry host; write it with its slash',
        ),
        (["operator.defaultCacheSize=100Mi"], "operator/defaultCacheSize"),
        (["operator.networkPolicy.clientNamespaceLabels=bad label!!"], "clientNamespaceLabels"),
        (["operator.gateway=Infra/gw"], "operator/gateway"),
    ],
)
def test_contradictory_values_fail_with_a_message(sets: list[str], fragment: str) -> None:
    args = ["template", "gpupin", str(CHART)]
    for item in sets:
        args += ["--set", item]
    result = helm(*args, check=False)
    assert result.returncode != 0 and fragment in result.stderr, result.stderr


def test_generated_files_have_not_drifted() -> None:
    assert generate.stale() == [], "run `make generate`"
    result = subprocess.run(
        [str(REPO / "hack" / "render-manifests.sh"), str(tools_bin() / "helm"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_samples_pass_the_api_servers_schema_and_cel(cluster: Cluster) -> None:
    for sample in sorted((REPO / "manifests" / "samples").glob("*.yaml")):
        cluster.kubectl("apply", "--dry-run=server", "-n", "default", "-f", str(sample))
    bad = {
        "apiVersion": "gpupin.dev/v1alpha1",
        "kind": "LLMDeployment",
        "metadata": {"name": "bad", "namespace": "default"},
        "spec": {"engine": "vllm", "models": [{"name": "a/b"}, {"name": "c/d"}], "tensorParallelSize": 0},
    }
    result = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(bad), check=False)
    assert result.returncode != 0
    assert "spec.tensorParallelSize" in result.stderr and "vLLM serves exactly one model" in result.stderr


def test_helm_install_upgrade_uninstall_keeps_the_crd(cluster: Cluster) -> None:
    kubeconfig = str(cluster.kubeconfig)
    namespace = "gpupin-chart-test"
    helm(
        "install",
        "gpupin",
        str(CHART),
        "--kubeconfig",
        kubeconfig,
        "--namespace",
        namespace,
        "--create-namespace",
        "--set",
        "agent.nodeSelector.gpupin-test=none",
        "--take-ownership",
    )
    try:
        deployment = cluster.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/gpupin-operator")
        assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "gpupin-operator"
        helm(
            "upgrade",
            "gpupin",
            str(CHART),
            "--kubeconfig",
            kubeconfig,
            "--namespace",
            namespace,
            "--set",
            "agent.nodeSelector.gpupin-test=none",
            "--set",
            "operator.pinning=dra",
        )
        deployment = cluster.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/gpupin-operator")
        env = {
            e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        assert env["GPUPIN_PINNING"] == "dra"
    finally:
        helm("uninstall", "gpupin", "--kubeconfig", kubeconfig, "--namespace", namespace, "--wait")
    assert cluster.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/llmdeployments.gpupin.dev")
    cluster.delete_namespace(namespace)


def test_plain_manifests_install_the_same_thing(cluster: Cluster) -> None:
    """`kubectl apply -f manifests/gpupin.yaml` creates what `helm install` does, and is valid on the server."""
    try:
        cluster.kubectl("apply", "-f", str(REPO / "manifests" / "gpupin.yaml"))
        deployment = cluster.get("/apis/apps/v1/namespaces/gpupin-system/deployments/gpupin-operator")
        daemonset = cluster.get("/apis/apps/v1/namespaces/gpupin-system/daemonsets/gpupin-agent")
        role = cluster.get("/apis/rbac.authorization.k8s.io/v1/clusterroles/gpupin-operator-workloads")
        assert (
            deployment["spec"]["replicas"] == 1
            and daemonset["spec"]["template"]["spec"]["serviceAccountName"] == "gpupin-agent"
        )
        assert role["rules"] == [*rbac.NAMESPACED_RULES, *rbac.ROUTER_RULES]
        cluster.get("/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies/gpupin-agent-own-node")
    finally:
        for kind, name in (
            ("clusterrolebinding", "gpupin-operator"),
            ("clusterrolebinding", "gpupin-operator-workloads"),
            ("clusterrolebinding", "gpupin-agent"),
            ("clusterrole", "gpupin-operator"),
            ("clusterrole", "gpupin-operator-workloads"),
            ("clusterrole", "gpupin-agent"),
            ("validatingadmissionpolicybinding", "gpupin-agent-own-node"),
            ("validatingadmissionpolicy", "gpupin-agent-own-node"),
        ):
            cluster.kubectl("delete", kind, name, "--ignore-not-found", check=False)
        cluster.kubectl(
            "delete", "namespace", "gpupin-system", "--wait=false", "--ignore-not-found", check=False
        )


def test_router_pod_values_reach_every_router_pod(tmp_path: Path) -> None:
    """operator.router's scheduling, pull secrets and resources go to the operator as one JSON
    value that it reads back as they were given; by default it names none and the router keeps
    its own requests."""
    from gpupin.routerobjects import RouterPod, parse_router_pod

    def router_pod(docs: list[dict[str, Any]]) -> RouterPod:
        container = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
        return parse_router_pod({e["name"]: e.get("value") for e in container["env"]}["GPUPIN_ROUTER_POD"])

    assert router_pod(render()) == RouterPod()
    emptied = {"nodeSelector": None, "tolerations": None, "imagePullSecrets": None, "resources": None}
    assert router_pod(render(values={"operator": {"router": emptied}}, tmp=tmp_path)) == RouterPod(), (
        "values left empty (null in Helm) are no settings, not an operator that cannot start"
    )
    numbers = {"resources": {"requests": {"cpu": 1, "memory": "96Mi"}}}
    given_numbers = router_pod(render(values={"operator": {"router": numbers}}, tmp=tmp_path))
    assert given_numbers.resources is not None and given_numbers.resources.requests == {
        "cpu": "1",
        "memory": "96Mi",
    }
    router = {
        "nodeSelector": {"node-role/cpu": "true"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoSchedule"}],
        "priorityClassName": "llm-endpoints",
        "imagePullSecrets": [{"name": "regcred"}],
        "resources": {"requests": {"cpu": "250m", "memory": "96Mi"}, "limits": {"memory": "512Mi"}},
    }
    given = router_pod(render(values={"operator": {"router": router}}, tmp=tmp_path))
    assert given.pod_spec() == {k: v for k, v in router.items() if k != "resources"}
    assert given.resources is not None and given.resources.model_dump() == router["resources"]
