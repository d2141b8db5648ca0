"""make cluster-up / cluster-down / demo: a local Kubernetes v1.37 cluster with fake GPU nodes.

cluster-up: kwokctl starts etcd, kube-apiserver, controller-manager, scheduler and the kwok
controller (binary runtime, the binaries of make cluster-tools) as a cluster named gpupin;
creates one KWOK node per node of INVENTORY (default: the seed's RTX 4070 + RTX 2060
workstation, a 4 × A100 node and a T4 node) with nvidia.com/gpu capacity (and, with
PINNING=dra, a ResourceSlice per node plus the DeviceClass); installs the chart with helm;
starts a real `gpupin agent --fake-inventory` per node and `gpupin operator`, as local
processes (KWOK runs no containers), each authenticated only by a token of its chart
ServiceAccount. Logs: .cluster/logs/; PIDs: .cluster/pids/. GPUPIN_E2E_RUNTIME=kind uses
`kwokctl --runtime kind` instead (needs Docker; not run where gpupin is developed).

cluster-up again while it is up says so and changes nothing; a cluster left half-up (a reboot)
is named, with the way out (cluster-down).
cluster-down stops what cluster-up started, by PID, and deletes the cluster.
demo: a new cluster (it says so when it deletes one that is up), the seed's example and the
refused tensor-parallel one, and what to look at.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from gpupin import constants  # noqa: E402
from gpupin.loading import load_inventory  # noqa: E402

from kwok import Cluster, resource_slice, start_cluster, token_kubeconfig, tools_bin, wait_for  # noqa: E402

# A second local cluster beside the usual one (the tests run one): its own state, name and ports
STATE = Path(os.environ.get("GPUPIN_CLUSTER_STATE") or REPO / ".cluster")
NAME = os.environ.get("GPUPIN_CLUSTER_NAME") or "gpupin"
METRICS_PORT = int(os.environ.get("GPUPIN_CLUSTER_PORT") or 9800)
"""The local operator's /metrics; its /healthz is the next port."""
NAMESPACE = "gpupin-system"
DEFAULT_INVENTORY = REPO / "examples" / "inventory" / "cluster-up.yaml"


def _env() -> dict[str, str]:
    # kwokctl calls kubectl from PATH: make it the pinned v1.37 one
    return {
        **os.environ,
        "KWOK_WORKDIR": str(STATE / "kwok"),
        "PATH": f"{tools_bin()}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def _say(text: str) -> None:
    print(f"cluster: {text}", flush=True)


def _existing() -> bool:
    """Whether kwokctl knows a cluster of this name (up, or left behind by a crash)."""
    listed = subprocess.run(
        [str(tools_bin() / "kwokctl"), "get", "clusters"], env=_env(), capture_output=True, text=True
    )
    return NAME in listed.stdout.split()


def _answers(kubeconfig: Path) -> bool:
    try:
        result = subprocess.run(
            [str(tools_bin() / "kubectl"), "--kubeconfig", str(kubeconfig), "get", "--raw", "/readyz"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


def _running_pids() -> list[str]:
    alive = []
    for pid_file in sorted((STATE / "pids").glob("*.pid")) if (STATE / "pids").exists() else []:
        try:
            os.kill(int(pid_file.read_text()), 0)
        except (ProcessLookupError, ValueError):
            continue
        alive.append(pid_file.stem)
    return alive


def up() -> Cluster:
    kubeconfig = STATE / "kubeconfig"
    if _existing():
        if _answers(kubeconfig) and {"operator"} <= set(_running_pids()):
            _say(f"the local cluster '{NAME}' is already up, with its operator; nothing to do")
            _say("(make cluster-down stops it; INVENTORY and PINNING apply to a new cluster only)")
            print(f"\nexport KUBECONFIG={kubeconfig}\n")
            return Cluster(name=NAME, workdir=STATE / "kwok", kubeconfig=kubeconfig)
        _say(
            f"a cluster named '{NAME}' exists but is not whole (its API server or operator is not "
            "running, e.g. after a reboot): run make cluster-down, then make cluster-up"
        )
        sys.exit(1)
    tools = tools_bin()
    STATE.mkdir(exist_ok=True)
    (STATE / "logs").mkdir(exist_ok=True)
    (STATE / "pids").mkdir(exist_ok=True)
    runtime = os.environ.get("GPUPIN_E2E_RUNTIME", "binary")
    inventory_path = Path(os.environ.get("INVENTORY") or DEFAULT_INVENTORY)
    pinning = os.environ.get("PINNING", "visible-devices")
    inventory, problems = load_inventory(inventory_path)
    for problem in problems:
        _say(f"skipping: {problem}")
    started = time.monotonic()
    _say(f"starting Kubernetes v1.37 ({runtime} runtime)…")
    cluster = start_cluster(STATE / "kwok", NAME, kubeconfig=kubeconfig, runtime=runtime)
    _say(f"API server ready in {time.monotonic() - started:.1f} s")

    for node in inventory.nodes:  # the GPUs themselves are published by the agents below
        cluster.add_node(node, gpu_capacity=True, annotate=False)
        if pinning == "dra":
            cluster.kube.request("POST", "/apis/resource.k8s.io/v1/resourceslices", resource_slice(node))
    if pinning == "dra":
        cluster.kube.request(
            "POST",
            "/apis/resource.k8s.io/v1/deviceclasses",
            {
                "apiVersion": "resource.k8s.io/v1",
                "kind": "DeviceClass",
                "metadata": {"name": constants.DRA_DEVICE_CLASS},
                "spec": {
                    "selectors": [{"cel": {"expression": f"device.driver == '{constants.DRA_DRIVER}'"}}]
                },
            },
        )
    _say(
        f"{len(inventory.nodes)} fake GPU node(s) from {inventory_path.relative_to(REPO) if inventory_path.is_relative_to(REPO) else inventory_path}"
    )

    subprocess.run(
        [
            str(tools / "helm"),
            "install",
            "gpupin",
            str(REPO / "charts" / "gpupin"),
            "--kubeconfig",
            str(kubeconfig),
            "--namespace",
            NAMESPACE,
            "--create-namespace",
            "--set",
            f"operator.pinning={pinning}",
            "--set",
            "operator.replicas=0",
            # the agents run here as local processes, with ServiceAccount tokens bound to no pod on
            # a node: the chart's admission policy (an agent writes only its own Node) would refuse
            # every write; in a cluster the kubelet binds each agent's token to its node
            "--set",
            "agent.restrictNodeWrites=false",
            "--wait",
            "--timeout",
            "2m",
        ],
        check=True,
        capture_output=True,
    )
    _say("chart installed (CRD, RBAC, ServiceAccounts; the operator and agents run as local processes)")

    agent_config = token_kubeconfig(cluster, NAMESPACE, "gpupin-agent", STATE / "agent.kubeconfig")
    for node in inventory.nodes:
        _spawn(
            f"agent-{node.name}",
            [
                sys.executable,
                "-m",
                "gpupin",
                "agent",
                "--node-name",
                node.name,
                "--fake-inventory",
                str(inventory_path),
                "--health-port",
                "0",
                "--metrics-port",  # several agents on one host: one port each would collide
                "0",
                "--interval",
                "10",
            ],
            agent_config,
        )
    for node in inventory.nodes:
        wait_for(
            lambda n=node.name: (
                constants.INVENTORY_ANNOTATION
                in (cluster.get(f"/api/v1/nodes/{n}")["metadata"].get("annotations") or {})
            ),
            what=f"agent on {node.name}",
        )
    operator_config = token_kubeconfig(cluster, NAMESPACE, "gpupin-operator", STATE / "operator.kubeconfig")
    operator = _spawn(
        "operator",
        [
            sys.executable,
            "-m",
            "gpupin",
            "operator",
            "--pinning",
            pinning,
            "--runtime-class",
            "",
            "--metrics-port",
            str(METRICS_PORT),
            "--health-port",
            str(METRICS_PORT + 1),
            "--log-format",
            "json",
            "--router-image",  # KWOK runs no container: the router's objects are made, not run
            "gpupin.local/gpupin:demo",
            "--lease-namespace",  # outside a pod it would be default; the chart grants it here
            NAMESPACE,
        ],
        operator_config,
    )
    started_operator = time.monotonic()
    while not _answers_health(
        METRICS_PORT + 1
    ):  # it holds the Lease and serves /healthz, or it died saying why
        if operator.poll() is not None or time.monotonic() - started_operator > 60:
            log = (STATE / "logs" / "operator.log").read_text(errors="replace").strip().splitlines()
            raise SystemExit(f"cluster: the operator did not start: {log[-1] if log else 'no log'} "
                             "(.cluster/logs/operator.log)")  # fmt: skip
        time.sleep(0.2)
    _say(f"agents and operator running (logs in .cluster/logs/); up in {time.monotonic() - started:.1f} s")
    print(f"\nexport KUBECONFIG={kubeconfig}\n")
    return cluster


def _answers_health(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as answer:
            return bool(json.loads(answer.read()).get("phase") == "running")
    except (OSError, ValueError):
        return False


def _spawn(name: str, command: list[str], kubeconfig: Path) -> subprocess.Popen[bytes]:
    log = (STATE / "logs" / f"{name}.log").open("ab")
    process = subprocess.Popen(
        command,
        env={**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    (STATE / "pids" / f"{name}.pid").write_text(str(process.pid))
    return process


def down() -> None:
    for pid_file in sorted((STATE / "pids").glob("*.pid")) if (STATE / "pids").exists() else []:
        pid = int(pid_file.read_text())
        try:
            os.kill(pid, signal.SIGTERM)
            for _ in range(50):
                os.kill(pid, 0)
                time.sleep(0.1)
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        pid_file.unlink()
    subprocess.run(
        [str(tools_bin() / "kwokctl"), "delete", "cluster", "--name", NAME], env=_env(), capture_output=True
    )
    _say("stopped and deleted")


def demo() -> None:
    if _existing():
        _say(
            f"the demo starts from a new cluster: deleting the local cluster '{NAME}' that is up "
            "(its deployments go with it)"
        )
        down()
    cluster = up()
    kubectl = [str(tools_bin() / "kubectl"), "--kubeconfig", str(cluster.kubeconfig)]
    subprocess.run(
        [*kubectl, "apply", "-f", str(REPO / "examples" / "demo")], check=True, capture_output=True
    )
    for name in ("assistant", "chat-tp2", "chat-tp2-a100"):
        wait_for(
            lambda n=name: (cluster.deployment("default", n).get("status") or {}).get("observedGeneration"),
            what=f"{name} planned",
        )
    wait_for(
        lambda: cluster.deployment("default", "assistant")["status"].get("ready") == "2/2", what="pods ready"
    )
    print("$ kubectl get llmd -o wide")
    print(subprocess.run([*kubectl, "get", "llmd", "-o", "wide"], capture_output=True, text=True).stdout)
    print("Pods and the GPU each is pinned to:")
    for pod in cluster.pods("default"):
        if constants.PLACEMENT_ANNOTATION not in (pod["metadata"].get("annotations") or {}):
            continue  # the router's pod
        placement = json.loads(pod["metadata"]["annotations"][constants.PLACEMENT_ANNOTATION])
        gpus = ", ".join(f"GPU {g['index']} {g['name']} ({g['uuid']})" for g in placement["gpus"])
        print(
            f"  {pod['metadata']['name']} on {pod['spec']['nodeName']}: {gpus} ← {', '.join(placement['models'])}"
        )
    print("\nOne endpoint per deployment (OLLAMA_HOST=assistant:11434 reaches all three models; the router")
    print("routes by the request's model to the model's own Service):")
    print(subprocess.run([*kubectl, "get", "svc", "-l", "app.kubernetes.io/managed-by=gpupin"],
                         capture_output=True, text=True).stdout)  # fmt: skip
    refused = cluster.deployment("default", "chat-tp2")["status"]
    print(
        f"\nchat-tp2 (tensor parallel over the workstation's two cards) refused: {refused['reason']}\n"
        f"  {refused['message']}\n"
    )
    print(
        f"Use the cluster: export KUBECONFIG={cluster.kubeconfig}; kubectl get llmd,pods -A; "
        "kubectl describe llmd chat-tp2\nStop everything: make cluster-down"
    )


if __name__ == "__main__":
    {"up": up, "down": down, "demo": demo}[sys.argv[1]]()
