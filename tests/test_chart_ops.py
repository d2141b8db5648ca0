"""The chart's operations surface, rendered by the real helm (helm alone, no cluster).

Aspects: where the agent runs (any GPU-node label of the GPU Operator, NFD or gpupin's own; not on
nodes that opted out; nodeSelector and affinity overrides); scheduling values, priority classes
and pull secrets reaching the operator and agent pods; the image tag; ports that 0 disables (no
Service, port or probe then); the Prometheus Operator objects (off by default; their selectors
match the Service and pods actually rendered, the engine pods as the operator renders them); the
alert rules; NOTES.txt as `helm install` prints it; Chart.yaml's metadata; the README's values
table up to date with values.yaml.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpupin.planner import plan
from gpupin.render import RenderConfig
from gpupin.render import render as render_objects

from charting import (
    CHART,
    NAMESPACE,
    balanced,
    chart_readme,
    env_of,
    failure,
    needs_helm,
    notes,
    one,
    pod_spec,
    ports,
    render,
    runs_on,
)
from helpers import REPO, T4, deployment, inventory, models, node, workstation

pytestmark = needs_helm

GPU_OPERATOR = {"nvidia.com/gpu.present": "true"}
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
APP_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]


def test_the_agent_runs_on_gpu_nodes_found_by_any_known_label() -> None:
    pod = pod_spec(render(), "DaemonSet")
    for labels in (
        GPU_OPERATOR,
        {"feature.node.kubernetes.io/pci-10de.present": "true"},  # NFD as the GPU Operator sets it up
        {"feature.node.kubernetes.io/pci-0302_10de.present": "true"},  # NFD's default: class_vendor
        {"gpupin.dev/gpu-node": "true"},  # labelled by hand
    ):
        assert runs_on(pod, labels), labels
    assert not runs_on(pod, {}) and not runs_on(pod, {"nvidia.com/gpu.present": "false"})
    for opt_out in (
        {"nvidia.com/gpu.deploy.operands": "false"},
        {"nvidia.com/gpu.deploy.gpupin-agent": "false"},
    ):
        assert not runs_on(pod, {**GPU_OPERATOR, **opt_out}), opt_out
    assert runs_on(pod, {**GPU_OPERATOR, "nvidia.com/gpu.deploy.operands": "true"})


def test_agent_node_selector_and_affinity_replace_the_default(tmp_path: Path) -> None:
    pod = pod_spec(render("agent.nodeSelector.pool=gpu"), "DaemonSet")
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert runs_on(pod, {"pool": "gpu"}) and not runs_on(pod, GPU_OPERATOR), (
        "the selector replaces the labels"
    )
    assert not runs_on(pod, {"pool": "gpu", "nvidia.com/gpu.deploy.gpupin-agent": "false"}), (
        "opt-outs still hold"
    )
    own = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}]
            }
        }
    }
    pod = pod_spec(render(values={"agent": {"affinity": own}}, tmp=tmp_path), "DaemonSet")
    assert pod["affinity"] == own and "nodeSelector" not in pod
    dropped = {"agent": {"gpuNodeLabels": {"gpupin.dev/gpu-node": None}}}
    pod = pod_spec(render(values=dropped, tmp=tmp_path), "DaemonSet")
    assert runs_on(pod, GPU_OPERATOR) and not runs_on(pod, {"gpupin.dev/gpu-node": "true"}), (
        "null drops a label"
    )
    none_left = {"agent": {"gpuNodeLabels": dict.fromkeys(VALUES["agent"]["gpuNodeLabels"])}}
    assert "agent.gpuNodeLabels is empty and agent.nodeSelector unset" in failure(
        values=none_left, tmp=tmp_path
    )


def test_scheduling_priority_and_pull_secrets_reach_the_pods(tmp_path: Path) -> None:
    defaults = render()
    for kind in ("Deployment", "DaemonSet"):
        pod = pod_spec(defaults, kind)
        assert "priorityClassName" not in pod and "imagePullSecrets" not in pod, kind
    toleration = {"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule"}
    affinity = {
        "nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 1, "preference": {"matchExpressions": [{"key": "infra", "operator": "Exists"}]}}
            ]
        }
    }
    values = {
        "imagePullSecrets": [{"name": "regcred"}],
        "operator": {
            "nodeSelector": {"role": "infra"},
            "tolerations": [toleration],
            "affinity": affinity,
            "priorityClassName": "system-cluster-critical",
        },
        "agent": {"tolerations": [toleration], "priorityClassName": "system-node-critical"},
    }
    docs = render(values=values, tmp=tmp_path)
    operator, agent = pod_spec(docs, "Deployment"), pod_spec(docs, "DaemonSet")
    assert (operator["nodeSelector"], operator["tolerations"], operator["affinity"]) == (
        {"role": "infra"},
        [toleration],
        affinity,
    )
    assert operator["priorityClassName"] == "system-cluster-critical"
    assert agent["tolerations"] == [toleration] and agent["priorityClassName"] == "system-node-critical"
    assert operator["imagePullSecrets"] == agent["imagePullSecrets"] == [{"name": "regcred"}]
    router_pod = env_of(operator["containers"][0])["GPUPIN_ROUTER_POD"]
    assert '"imagePullSecrets":[]' in router_pod, "routers run elsewhere: operator.router.imagePullSecrets"


def test_image_tag_defaults_to_the_app_version() -> None:
    def images(docs: list[dict[str, Any]]) -> set[str]:
        operator = pod_spec(docs, "Deployment")["containers"][0]
        agent = pod_spec(docs, "DaemonSet")["containers"][0]
        return {operator["image"], agent["image"], env_of(operator)["GPUPIN_ROUTER_IMAGE"]}

    assert images(render()) == {f"ghcr.io/gpupin/gpupin:{APP_VERSION}"}
    assert images(render("image.repository=registry.example/gpupin", "image.tag=1.2.3")) == {
        "registry.example/gpupin:1.2.3"
    }


def test_chart_metadata_names_its_home_and_images() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["home"].startswith("https://") and chart["sources"] and chart["keywords"]
    assert all(m["name"] and m["email"] for m in chart["maintainers"])
    images = {i["image"] for i in yaml.safe_load(chart["annotations"]["artifacthub.io/images"])}
    assert images == {
        f"{VALUES['image']['repository']}:{APP_VERSION}",
        VALUES["operator"]["ollamaImage"],
        VALUES["operator"]["vllmImage"],
    }, "Chart.yaml's artifacthub.io/images is what values.yaml runs"


def test_metrics_service_and_ports_that_zero_disables() -> None:
    docs = render()
    service = one(docs, "Service", "gpupin-operator-metrics")
    operator = one(docs, "Deployment")["spec"]["template"]
    container = operator["spec"]["containers"][0]
    assert service["spec"]["selector"].items() <= operator["metadata"]["labels"].items()
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 8000, "targetPort": "metrics"}]
    assert ports(container) == {"metrics": 8000, "health": 8080}
    assert container["livenessProbe"]["httpGet"]["port"] == "health"
    agent = pod_spec(docs, "DaemonSet")["containers"][0]
    assert ports(agent) == {"health": 8081, "metrics": 9402}
    assert env_of(agent)["GPUPIN_AGENT_METRICS_PORT"] == "9402"

    no_metrics = render("operator.metricsPort=0")
    assert not [s for s in no_metrics if s["kind"] == "Service"], "no metrics, no metrics Service"
    container = pod_spec(no_metrics, "Deployment")["containers"][0]
    assert ports(container) == {"health": 8080} and env_of(container)["GPUPIN_METRICS_PORT"] == "0"
    container = pod_spec(render("operator.healthPort=0"), "Deployment")["containers"][0]
    assert ports(container) == {"metrics": 8000} and env_of(container)["GPUPIN_HEALTH_PORT"] == "0"
    assert "livenessProbe" not in container and "readinessProbe" not in container
    agent = pod_spec(render("agent.healthPort=0", "agent.metricsPort=0"), "DaemonSet")["containers"][0]
    assert "ports" not in agent and "livenessProbe" not in agent and "readinessProbe" not in agent
    assert env_of(agent)["GPUPIN_AGENT_METRICS_PORT"] == "0"


@pytest.mark.parametrize(
    ("sets", "fragment"),
    [
        (["operator.metricsPort=-1"], "operator/metricsPort"),
        (["agent.healthPort=65536"], "agent/healthPort"),
        (["operator.metricsPort=8080"], "operator.metricsPort and operator.healthPort are both 8080"),
        (["agent.metricsPort=8081"], "agent.metricsPort and agent.healthPort are both 8081"),
        (["monitoring.serviceMonitor.enabled=true", "operator.metricsPort=0"], "needs operator.metricsPort"),
        (["monitoring.agentPodMonitor.enabled=true", "agent.enabled=false"], "needs agent.enabled"),
        (["monitoring.agentPodMonitor.enabled=true", "agent.metricsPort=0"], "agent.metricsPort (not 0)"),
        (
            ["monitoring.prometheusRule.enabled=true", "operator.metricsPort=0", "agent.enabled=false"],
            "every alert is off or left out",
        ),
        (
            [
                "monitoring.prometheusRule.enabled=true",
                "monitoring.prometheusRule.alerts.GpupinAgentNotPublishing.staleSeconds=100",
            ],
            "must exceed twice agent.intervalSeconds",
        ),
        (
            ["monitoring.prometheusRule.alerts.GpupinDeploymentRefused.for=15 minutes"],
            "GpupinDeploymentRefused/for",
        ),
        (["monitoring.interval=often"], "monitoring/interval"),
        (["monitoring.serviceMonitor.typo=true"], "typo"),
    ],
)
def test_contradictory_ports_and_monitoring_fail_with_a_message(sets: list[str], fragment: str) -> None:
    message = failure(*sets)
    assert fragment in message, message


ALL_MONITORING = {
    "monitoring": {
        "labels": {"release": "prometheus"},
        "interval": "30s",
        "serviceMonitor": {"enabled": True},
        "agentPodMonitor": {"enabled": True, "labels": {"release": "agents"}},
        "enginePodMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True, "alertLabels": {"team": "ml"}},
    }
}
MONITORING_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


def test_monitoring_objects_only_when_enabled() -> None:
    assert not [d for d in render() if d["apiVersion"].startswith("monitoring.coreos.com")]


def engine_pods() -> dict[str, dict[str, Any]]:
    """Pod metadata and spec of what the operator renders, by role: a vLLM server, an Ollama
    server and an Ollama deployment's router."""
    config = RenderConfig(pinning="visible-devices", router_image="ghcr.io/gpupin/gpupin:test")
    vllm = deployment("chat", models=models("Qwen/Qwen2.5-1.5B-Instruct"))
    ollama = deployment("assistant", engine="ollama", models=models("llama3.1:8b"))
    pods: dict[str, dict[str, Any]] = {}
    for name, item, cluster in (("vllm", vllm, inventory(node("t4", T4))), ("ollama", ollama, workstation())):
        objects = render_objects(item, plan(item, cluster), config)
        pods[name] = next(o for o in objects if o["kind"] == "Pod")
        routers = [o["spec"]["template"] for o in objects if o["kind"] == "Deployment"]
        if routers:
            pods["router"] = routers[0]
    assert set(pods) == {"vllm", "ollama", "router"}
    return pods


def test_monitors_select_what_is_rendered(tmp_path: Path) -> None:
    docs = render(values=ALL_MONITORING, tmp=tmp_path)
    monitors = [d for d in docs if d["kind"] in MONITORING_KINDS]
    assert sorted(d["kind"] for d in monitors) == [
        "PodMonitor",
        "PodMonitor",
        "PrometheusRule",
        "ServiceMonitor",
    ]
    for monitor in monitors:
        assert (
            monitor["apiVersion"] == "monitoring.coreos.com/v1"
            and monitor["metadata"]["namespace"] == NAMESPACE
        )
        expected = "agents" if monitor["metadata"]["name"] == "gpupin-agent" else "prometheus"
        assert monitor["metadata"]["labels"]["release"] == expected, "monitoring.labels, under each one's own"

    service_monitor = one(docs, "ServiceMonitor")["spec"]
    service = one(docs, "Service", "gpupin-operator-metrics")
    assert service_monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert service_monitor["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = service_monitor["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]} and endpoint["interval"] == "30s"
    assert endpoint["honorLabels"], "the LLMDeployment's namespace label is not renamed exported_namespace"

    agent_monitor = one(docs, "PodMonitor", "gpupin-agent")["spec"]
    agent = one(docs, "DaemonSet")["spec"]["template"]
    assert agent_monitor["selector"]["matchLabels"].items() <= agent["metadata"]["labels"].items()
    assert agent_monitor["podMetricsEndpoints"][0]["port"] in ports(agent["spec"]["containers"][0])
    assert agent_monitor["namespaceSelector"] == {"matchNames": [NAMESPACE]}

    engine_monitor = one(docs, "PodMonitor", "gpupin-engines")["spec"]
    selector = engine_monitor["selector"]["matchLabels"].items()
    pods = engine_pods()
    assert selector <= pods["vllm"]["metadata"]["labels"].items()
    assert not selector <= pods["ollama"]["metadata"]["labels"].items(), "Ollama serves no /metrics"
    assert not selector <= pods["router"]["metadata"]["labels"].items()
    vllm_ports = {p["name"] for p in pods["vllm"]["spec"]["containers"][0]["ports"]}
    assert engine_monitor["podMetricsEndpoints"][0]["port"] in vllm_ports
    assert engine_monitor["namespaceSelector"] == {"any": True}
    watched = one(
        render("monitoring.enginePodMonitor.enabled=true", "operator.watchNamespaces={llm,chat}"),
        "PodMonitor",
    )
    assert watched["spec"]["namespaceSelector"] == {"matchNames": ["llm", "chat"]}


ALERTS = {
    "GpupinDeploymentRefused",
    "GpupinDeploymentNotReady",
    "GpupinNodeInventoryProblem",
    "GpupinOperatorNotLeading",
    "GpupinAgentNotPublishing",
}
METRICS = {  # what the operator and the agent export (the rules are written against these)
    "gpupin_llmdeployment_condition",
    "gpupin_node_inventory_problem",
    "gpupin_lease_holder",
    "gpupin_agent_last_publish_timestamp_seconds",
}


def alert_rules(*sets: str) -> dict[str, dict[str, Any]]:
    rule = one(
        render("monitoring.prometheusRule.enabled=true", "monitoring.serviceMonitor.enabled=true", *sets),
        "PrometheusRule",
    )
    (group,) = rule["spec"]["groups"]
    return {r["alert"]: r for r in group["rules"]}


def test_alert_rules() -> None:
    rules = alert_rules("monitoring.prometheusRule.alertLabels.team=ml")
    assert set(rules) == ALERTS
    for name, rule in rules.items():
        expr = rule["expr"]
        assert isinstance(expr, str) and expr.strip() and balanced(expr), name
        assert set(re.findall(r"gpupin_[a-z_]+", expr)) <= METRICS, name
        assert re.fullmatch(r"([0-9]+[smhdwy])+", rule["for"]), name
        assert rule["labels"]["severity"] in {"warning", "critical"} and rule["labels"]["team"] == "ml"
        assert rule["annotations"]["summary"] and len(rule["annotations"]["description"]) > 80, name
        assert "kubectl" in rule["annotations"]["description"], f"{name} says what to do"
    assert rules["GpupinOperatorNotLeading"]["labels"]["severity"] == "critical"
    assert 'reason!="Paused"' in rules["GpupinDeploymentNotReady"]["expr"]
    assert "unless" in rules["GpupinDeploymentNotReady"]["expr"], "a refused deployment alerts once"
    assert (
        f'absent(sum(gpupin_lease_holder{{namespace="{NAMESPACE}"}} == 1))'
        in rules["GpupinOperatorNotLeading"]["expr"]
    )
    assert rules["GpupinAgentNotPublishing"]["expr"].endswith("> 300")
    for name in ("GpupinDeploymentRefused", "GpupinDeploymentNotReady"):
        assert "$labels.namespace }}/{{ $labels.llmdeployment" in rules[name]["annotations"]["summary"]

    tuned = alert_rules(
        "monitoring.prometheusRule.alerts.GpupinNodeInventoryProblem.for=1h",
        "monitoring.prometheusRule.alerts.GpupinNodeInventoryProblem.severity=info",
        "monitoring.prometheusRule.alerts.GpupinDeploymentRefused.enabled=false",
    )
    assert (
        tuned["GpupinNodeInventoryProblem"]["for"],
        tuned["GpupinNodeInventoryProblem"]["labels"]["severity"],
    ) == (
        "1h",
        "info",
    )
    assert set(tuned) == ALERTS - {"GpupinDeploymentRefused"}
    assert set(alert_rules("operator.metricsPort=0", "monitoring.serviceMonitor.enabled=false")) == {
        "GpupinAgentNotPublishing"
    }, "no operator metrics"
    assert set(alert_rules("operator.replicas=0")) == ALERTS - {"GpupinOperatorNotLeading"}
    assert set(alert_rules("monitoring.serviceMonitor.enabled=false")) == ALERTS - {
        "GpupinOperatorNotLeading"
    }, "absent() would fire where nothing of this chart scrapes the operator"
    assert set(alert_rules("agent.enabled=false")) == ALERTS - {"GpupinAgentNotPublishing"}


def test_notes_say_where_the_agent_runs(tmp_path: Path) -> None:
    default = notes()
    for key, value in {**VALUES["agent"]["gpuNodeLabels"], **VALUES["agent"]["excludeNodeLabels"]}.items():
        assert f"{key}={value}" in default
    assert "kubectl label node NODE gpupin.dev/gpu-node=true" in default and "Prometheus" not in default
    selected = notes("agent.nodeSelector.pool=gpu")
    assert "The agent runs on nodes labelled pool=gpu, except" in selected and "gpu.present" not in selected
    fake = {
        "agent": {"fakeInventory": {"enabled": True, "inventory": {"nodes": [{"name": "n", "gpus": []}]}}}
    }
    faked = notes(values=fake, tmp=tmp_path)
    assert "The agent runs on every node, except" in faked and "FAKE inventory (1 node(s))" in faked
    assert "nvidia.com/gpu.present" not in faked, "fake mode uses no GPU label (the old NOTES said it did)"
    assert "WARNING: agent.restrictNodeWrites=false" in notes("agent.restrictNodeWrites=false")
    monitored = notes("monitoring.prometheusRule.enabled=true", "monitoring.labels.release=prom")
    assert "PrometheusRule (alerts)" in monitored and '{"release":"prom"}' in monitored


def test_readme_values_table_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "hack" / "chart-readme.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    module = chart_readme()
    values_text = (CHART / "values.yaml").read_text()
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    table = module.rows(values_text, schema)
    readme = (CHART / "README.md").read_text()
    assert "\n".join(table) in readme
    documented = {line.split("`")[1] for line in table[2:]}
    assert {"agent.gpuNodeLabels", "monitoring.prometheusRule.alerts.GpupinOperatorNotLeading"} <= documented
    added = values_text.replace("  logLevel: INFO\n", "  logLevel: INFO\n  # Something new\n  newValue: 1\n")
    assert "| `operator.newValue` | `1` | Something new |" in module.rows(added, schema), (
        "a new value is a row"
    )
    with pytest.raises(ValueError, match=r"undocumented values .*: operator\.newValue"):
        module.rows(added.replace("  # Something new\n", ""), schema)
