"""The real operator (``gpupin operator``, a separate process) against a real API server.

The control plane is kube-apiserver, etcd, kube-controller-manager (garbage collector)
and kube-scheduler v1.37 with KWOK fake nodes (see tests/kwok.py); only the fault tests
put a proxy between the operator and the server, to inject errors and cut watches.

Aspects: the seed's setup end to end (CR in, pinned pods, Services, status, Events out);
a heterogeneous tensor-parallel group refused with condition, reason, Event and no pod;
deleting a deployment frees its GPUs and a waiting one is placed untouched; a GPU leaving
a node's inventory re-plans its pods after the grace period (deleted with their grace; at once only
when the Node is gone), Degraded while it cannot; the operator killed between
two pod creations and restarted converges without duplicates; injected 409s, 500s and a
dropped watch converge without a crash; two deployments racing for one GPU — exactly one
gets it, the other waits with InsufficientGPUs and is placed when it is freed.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from gpupin import constants
from gpupin.inventory import NodeInventory

from helpers import A10, RTX_2060, RTX_4070
from kwok import Env, grant, revoke, token_kubeconfig, wait_for

pytestmark = pytest.mark.timeout(180)


def _visible(pod: dict[str, Any]) -> str:
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    return str(env.get("NVIDIA_VISIBLE_DEVICES"))


def _pods_on(env: Env) -> dict[str, str]:
    """pod name → the GPU UUID(s) it is pinned to."""
    return {p["metadata"]["name"]: _visible(p) for p in env.pods()}


def test_seed_setup_end_to_end(env: Env) -> None:
    workstation = env.node("workstation", RTX_4070, RTX_2060)
    env.operator()
    env.apply(
        "assistant",
        engine="ollama",
        models=[{"name": "qwen2.5:14b"}, {"name": "llama3.1:8b"}, {"name": "nomic-embed-text"}],
    )
    wait_for(env.placed("assistant"), what="Placed=True")
    ready = wait_for(
        lambda: (
            (c := env.cluster.condition(env.namespace, "assistant", "Ready")) and c["status"] == "True" and c
        ),
        what="Ready=True (KWOK marks the pods ready)",
    )
    assert ready["message"] == "2/2 pods ready"
    pods = {p["metadata"]["annotations"][constants.PLACEMENT_ANNOTATION]: p for p in env.pods()}
    assert len(pods) == 2
    uuid_4070, uuid_2060 = (g.uuid for g in workstation.gpus)
    by_models = {tuple(json.loads(a)["models"]): p for a, p in pods.items()}
    assert _visible(by_models[("qwen2.5:14b", "nomic-embed-text")]) == uuid_4070
    assert _visible(by_models[("llama3.1:8b",)]) == uuid_2060
    for pod in pods.values():
        assert pod["spec"]["nodeName"] == workstation.name
        assert pod["metadata"]["ownerReferences"][0]["kind"] == "LLMDeployment"
    status = env.cluster.deployment(env.namespace, "assistant")["status"]
    assert status["engine"] == "ollama" and status["gpus"] == 2 and status["ready"] == "2/2"
    assert sorted(g["uuid"] for p in status["placements"] for g in p["gpus"]) == sorted(
        [uuid_4070, uuid_2060]
    )
    table = env.cluster.kubectl("get", "llmd", "-n", env.namespace).stdout
    assert table.split("\n")[0].split()[:6] == ["NAME", "ENGINE", "MODELS", "GPUS", "READY", "REASON"]
    assert "ollama" in table and "2/2" in table and "Placed" in table
    services = env.cluster.get(f"/api/v1/namespaces/{env.namespace}/services")["items"]
    assert len(services) == 3
    events = {e["reason"] for e in env.cluster.events(env.namespace, "assistant")}
    assert "CreatedPod" in events and "Placed" not in events, "one Event per pod, none more per deployment"


def test_heterogeneous_tensor_parallel_is_refused(env: Env) -> None:
    env.node("workstation", RTX_4070, RTX_2060)
    env.operator()
    env.apply(
        "chat-tp2",
        engine="vllm",
        models=[{"name": "Qwen/Qwen2.5-3B-Instruct"}],
        tensorParallelSize=2,
        vllm={"maxModelLen": 8192},
    )
    condition = wait_for(env.placed("chat-tp2", "False"), what="Placed=False")
    assert condition["reason"] == "HeterogeneousTensorParallel"
    assert "2 × 6.0 GiB usable" in condition["message"] and "tensorParallelSize: 1" in condition["message"]
    warnings = wait_for(
        lambda: [e for e in env.cluster.events(env.namespace, "chat-tp2") if e["type"] == "Warning"],
        what="a Warning Event",
    )
    assert warnings[0]["reason"] == "HeterogeneousTensorParallel"
    assert env.pods() == []
    env.apply(
        "chat-tp2",
        engine="vllm",
        models=[{"name": "Qwen/Qwen2.5-3B-Instruct"}],
        tensorParallelSize=2,
        vllm={"maxModelLen": 8192},
        allowMixedGPUs=True,
    )
    placed = wait_for(env.placed("chat-tp2"), what="placed with allowMixedGPUs")
    assert placed["reason"] == "MixedGPUsAllowed"
    wait_for(lambda: len(env.pods()) == 1, what="one pod holding both GPUs")
    assert len(_visible(env.pods()[0]).split(",")) == 2
    # the same spec on a uniform node: placed without allowMixedGPUs, one pod holding two GPUs
    uniform = env.node("uniform", A10, A10)
    env.apply(
        "uniform-tp2",
        engine="vllm",
        models=[{"name": "Qwen/Qwen2.5-3B-Instruct"}],
        tensorParallelSize=2,
        vllm={"maxModelLen": 8192},
        gpuSelector={"nodes": [uniform.name]},
    )
    assert wait_for(env.placed("uniform-tp2"), what="placed on the uniform node")["reason"] == "Placed"
    pod = wait_for(
        lambda: [p for p in env.pods() if p["metadata"]["name"].startswith("uniform-tp2-")], what="its pod"
    )[0]
    assert sorted(_visible(pod).split(",")) == sorted(g.uuid for g in uniform.gpus)


def test_deleting_a_deployment_frees_its_gpus_for_a_waiting_one(env: Env) -> None:
    env.node("a10", A10)
    env.operator()
    env.apply("first", models=[{"name": "Qwen/Qwen2.5-3B-Instruct"}])
    wait_for(env.placed("first"), what="first placed")
    env.apply("second", models=[{"name": "Qwen/Qwen2.5-1.5B-Instruct"}])
    waiting = wait_for(env.placed("second", "False"), what="second waiting")
    assert waiting["reason"] == "InsufficientGPUs" and f"{env.namespace}/first holds" in waiting["message"]
    env.delete("first")
    wait_for(env.placed("second"), timeout=45, what="second placed once first's pod is gone")
    pods = wait_for(lambda: env.pods(), what="second's pod")  # status and pod are written concurrently
    assert [p["metadata"]["name"].startswith("second-") for p in pods] == [True]


def _all_pods(env: Env) -> list[dict[str, Any]]:
    """The namespace's pods, terminating ones included."""
    return env.cluster.kube.request("GET", f"/api/v1/namespaces/{env.namespace}/pods").get("items") or []


def _kubelet_finishes_deletions(env: Env) -> list[int]:
    """Play the kubelet of a node without one: confirm each graceful deletion (the pod is removed)
    and return the grace periods the deletions asked for."""
    graces = []
    for pod in _all_pods(env):
        if pod["metadata"].get("deletionTimestamp"):
            graces.append(pod["metadata"]["deletionGracePeriodSeconds"])
            env.cluster.kube.request(
                "DELETE",
                f"/api/v1/namespaces/{env.namespace}/pods/{pod['metadata']['name']}",
                {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0},
            )
    return graces


def test_gpu_leaving_the_inventory_replans_its_pods(env: Env) -> None:
    """A GPU a healthy annotation stops reporting keeps its pod for the grace period, then the pod
    is deleted with its normal grace (its node is alive) and re-planned; a deleted Node's pod goes
    at once. The node has no kubelet (the test confirms deletions), so each grace asked is seen."""
    box = env.node("box", A10, A10, kwok=False)
    env.operator("--gpu-loss-grace-seconds", "3")
    env.apply("chat", models=[{"name": "Qwen/Qwen2.5-3B-Instruct"}])
    wait_for(env.placed("chat"), what="placed")
    ((first_pod, first_gpu),) = wait_for(lambda: list(_pods_on(env).items()), what="a pod")
    survivor = next(g for g in box.gpus if g.uuid != first_gpu)
    env.cluster.set_inventory(NodeInventory(name=box.name, gpus=[survivor]))

    def gpu_gone_events() -> list[dict[str, Any]]:
        items = env.cluster.kube.request(
            "GET",
            "/api/v1/namespaces/default/events",
            params={"fieldSelector": f"involvedObject.kind=Node,involvedObject.name={box.name}"},
        ).get("items")
        return [e for e in items or [] if e["reason"] == "GPUGone"]

    (gone,) = wait_for(gpu_gone_events, what="a GPUGone Warning on the Node")
    assert first_gpu in gone["message"] and "deleted after 3 s unless it returns" in gone["message"]
    assert _pods_on(env) == {first_pod: first_gpu}, "within the grace period the pod stays"
    wait_for(
        lambda: list(_pods_on(env).values()) == [survivor.uuid],
        timeout=20,
        what="pod re-planned onto the other GPU",
    )
    assert _kubelet_finishes_deletions(env) == [30], "deleted with the pod's grace, not at once"
    degraded = wait_for(
        lambda: env.cluster.condition(env.namespace, "chat", "Degraded"), what="Degraded condition"
    )
    assert degraded["reason"] in ("GPULost", "AsExpected")
    # now the last GPU goes too (an explicit empty list is a real report): nothing to place on
    env.cluster.set_inventory(NodeInventory(name=box.name, gpus=[]))
    wait_for(env.placed("chat", "False"), timeout=20, what="Placed=False once the grace period is over")
    assert env.cluster.condition(env.namespace, "chat", "Degraded")["status"] == "True"  # type: ignore[index]
    wait_for(lambda: env.pods() == [], what="the pod deleted")
    assert _kubelet_finishes_deletions(env) == [30]
    env.cluster.set_inventory(box)
    wait_for(env.placed("chat"), timeout=20, what="placed again once capacity returns")
    # the node itself goes away: its pod is deleted at once and the status says why, within 10 s
    wait_for(lambda: len(env.pods()) == 1, what="the pod back")
    env.cluster.delete_node(box.name)
    env.nodes.remove(box.name)
    degraded = wait_for(
        lambda: (
            (c := env.cluster.condition(env.namespace, "chat", "Degraded")) and c["status"] == "True" and c
        ),
        timeout=10,
        what="Degraded after the node left",
    )
    assert box.name in degraded["message"] or degraded["reason"] == "PlacementLost"
    wait_for(
        lambda: _all_pods(env) == [],
        timeout=30,
        what="the pod on the vanished node removed, not left terminating",
    )


def test_operator_killed_between_two_pods_converges_without_duplicates(env: Env) -> None:
    env.node("box", A10, A10, A10, A10)
    proxy = env.proxy()
    # the second pod's creation hangs long enough for the test to kill the operator there
    proxy.inject("POST", rf"/namespaces/{env.namespace}/pods$", status=0, times=1, delay=0.0)
    proxy.inject("POST", rf"/namespaces/{env.namespace}/pods$", status=0, times=1, delay=30.0)
    operator = env.operator(kubeconfig=proxy.kubeconfig(env.tmp / "proxy.kubeconfig"))
    env.apply("pair", models=[{"name": "Qwen/Qwen2.5-3B-Instruct"}], replicas=2)
    wait_for(lambda: len(env.pods()) == 1, what="the first of two pods")
    operator.kill()
    assert len(env.pods()) == 1
    env.operator()  # a fresh process, straight to the API server
    wait_for(lambda: len(env.pods()) == 2, timeout=30, what="the second pod after the restart")
    wait_for(env.placed("pair"), what="status written by the new process")
    pods = env.pods()
    gpus = [_visible(p) for p in pods]
    assert len(set(gpus)) == 2, "each replica on its own GPU"
    assert len({p["metadata"]["name"] for p in pods}) == 2


def test_api_faults_converge_without_a_crash(env: Env) -> None:
    env.node("box", A10, A10)
    proxy = env.proxy()
    proxy.inject("PATCH", r"/llmdeployments/.+/status$", status=409, times=3)
    proxy.inject("POST", rf"/namespaces/{env.namespace}/pods$", status=500, times=2)
    operator = env.operator(kubeconfig=proxy.kubeconfig(env.tmp / "proxy.kubeconfig"))
    env.apply("chat", models=[{"name": "Qwen/Qwen2.5-3B-Instruct"}])
    wait_for(env.placed("chat"), timeout=60, what="placed despite the injected faults")
    # the status and the pod are written concurrently: Placed can be seen before the pod
    wait_for(lambda: len(env.pods()) == 1, what="the pod, created on the third try")
    assert proxy.count("POST", rf"/namespaces/{env.namespace}/pods$") >= 3
    # every watch stream is cut; the operator reconnects and still sees new work
    wait_for(lambda: proxy.drop_watches() >= 1, timeout=10, what="open watch streams to cut")
    env.apply("second", models=[{"name": "Qwen/Qwen2.5-1.5B-Instruct"}])
    wait_for(env.placed("second"), timeout=60, what="placed after the watches were dropped")
    assert operator.alive(), operator.tail()
    wait_for(lambda: len(env.pods()) == 2, what="both pods")


def test_two_deployments_racing_for_one_gpu(env: Env) -> None:
    env.node("single", A10)
    env.operator()
    manifest = "\n---\n".join(
        json.dumps(
            {
                "apiVersion": constants.API_VERSION,
                "kind": constants.KIND,
                "metadata": {"name": name, "namespace": env.namespace},
                "spec": {"models": [{"name": "Qwen/Qwen2.5-3B-Instruct"}]},
            }
        )
        for name in ("left", "right")
    )
    env.cluster.apply(manifest)

    def settled() -> dict[str, dict[str, Any]] | None:
        conditions = {n: env.cluster.condition(env.namespace, n, "Placed") for n in ("left", "right")}
        return conditions if all(conditions.values()) else None  # type: ignore[return-value]

    conditions = wait_for(settled, what="both deployments planned")
    winners = [n for n, c in conditions.items() if c["status"] == "True"]
    assert len(winners) == 1, conditions
    loser = "right" if winners == ["left"] else "left"
    assert conditions[loser]["reason"] == "InsufficientGPUs"
    assert len(wait_for(env.pods, what="the winner's pod")) == 1
    env.delete(winners[0])
    wait_for(env.placed(loser), timeout=45, what="the loser placed once the GPU is free")
    pods = wait_for(
        lambda: [p for p in env.pods() if p["metadata"]["name"].startswith(loser)], what="loser's pod"
    )
    assert len(pods) == 1


def test_least_privilege_rbac_is_enough(env: Env) -> None:
    """The operator authenticated only by a ServiceAccount token bound to rbac.RULES does its job."""

    from gpupin.controller import rbac

    name = f"gpupin-test-{env.suffix}"
    grant(env.cluster, env.namespace, "gpupin", name, rbac.RULES)
    try:
        kubeconfig = token_kubeconfig(env.cluster, env.namespace, "gpupin", env.tmp / "sa.kubeconfig")
        env.node("workstation", RTX_4070, RTX_2060)
        operator = env.operator(kubeconfig=kubeconfig)
        env.apply("assistant", engine="ollama", models=[{"name": "qwen2.5:14b"}, {"name": "llama3.1:8b"}])
        env.apply(
            "chat-tp2", engine="vllm", models=[{"name": "Qwen/Qwen2.5-3B-Instruct"}], tensorParallelSize=2
        )
        wait_for(env.placed("assistant"), what="placed by the ServiceAccount-only operator")
        wait_for(env.placed("chat-tp2", "False"), what="the refusal written")
        wait_for(lambda: len(env.cluster.events(env.namespace, "chat-tp2")) >= 1, what="an Event posted")
        wait_for(lambda: len(env.pods()) == 2, what="the two Ollama pods")
        log = operator.log.read_text()
        assert '"status": 403' not in log and "Forbidden" not in log, operator.tail()
        _assert_can_do_no_more_than(env, f"system:serviceaccount:{env.namespace}:gpupin", rbac.RULES)
        operator.stop()  # before its rights go (it releases its Lease on the way out)
        assert "Forbidden" not in operator.log.read_text(), operator.tail()
    finally:
        revoke(env.cluster, name)


# What every authenticated identity may do in any cluster (self reviews), beyond its own rules.
_DEFAULT_ALLOWED = {
    "selfsubjectreviews.authentication.k8s.io": {"create"},
    "selfsubjectaccessreviews.authorization.k8s.io": {"create"},
    "selfsubjectrulesreviews.authorization.k8s.io": {"create"},
    # readable by every authenticated identity (system:basic-user, v1.37)
    "clustertrustbundles.certificates.k8s.io": {"get", "list", "watch"},
}


def _assert_can_do_no_more_than(env: Env, user: str, rules: list[dict[str, Any]]) -> None:
    """`kubectl auth can-i --list` for the identity: every resource and verb is one gpupin needs."""
    allowed: dict[str, set[str]] = {k: set(v) for k, v in _DEFAULT_ALLOWED.items()}
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                name = (
                    resource
                    if not group
                    else f"{resource.split('/')[0]}.{group}"
                    + ("/" + resource.split("/", 1)[1] if "/" in resource else "")
                )
                allowed.setdefault(name, set()).update(rule["verbs"])
    listing = env.cluster.kubectl("auth", "can-i", "--list", "--as", user).stdout.splitlines()[1:]
    extra = []
    for line in listing:
        columns = line.split()
        if not columns or columns[0].startswith("["):  # non-resource URLs
            continue
        # Resources, Non-Resource URLs, Resource Names, Verbs: the verbs are the last bracketed group
        resource, verbs = columns[0], set(line[line.rindex("[") + 1 : line.rindex("]")].split())
        if not verbs <= allowed.get(resource, set()):
            extra.append(f"{resource}: {sorted(verbs - allowed.get(resource, set()))}")
    assert not extra, f"{user} may do more than gpupin needs: {extra}"
    for verb, resource in (
        ("get", "secrets"),
        ("update", "pods"),
        ("patch", "nodes"),
        ("delete", "llmdeployments"),
    ):
        answer = env.cluster.kubectl(
            "auth", "can-i", verb, resource, "--all-namespaces", "--as", user, check=False
        )
        assert answer.stdout.strip() == "no", f"{user} may {verb} {resource}"


def test_namespaced_operator_serves_its_namespace_and_sees_node_changes(env: Env) -> None:
    """--namespace: only that namespace's deployments are served, while Nodes (cluster-scoped) still stream in."""
    env.operator("--namespace", env.namespace)
    env.apply("chat", models=[{"name": "Qwen/Qwen2.5-3B-Instruct"}])
    waiting = wait_for(env.placed("chat", "False"), what="refused: no GPU known yet")
    assert waiting["reason"] == "NoMatchingGPU"
    env.node("late", A10)  # a node that appears after start-up, seen through the watch
    wait_for(env.placed("chat"), timeout=20, what="placed once the node's inventory arrives")
    other = f"{env.namespace}-other"
    env.cluster.create_namespace(other)
    try:
        env.cluster.apply(
            json.dumps(
                {
                    "apiVersion": constants.API_VERSION,
                    "kind": constants.KIND,
                    "metadata": {"name": "ignored", "namespace": other},
                    "spec": {"models": [{"name": "Qwen/Qwen2.5-1.5B-Instruct"}]},
                }
            )
        )
        # No fixed wait. The one free GPU comes with a node added after "ignored", and a deployment
        # of the served namespace applied after that wants it too. Served, "ignored" would get a
        # status at once (InsufficientGPUs: "chat" holds the A10 on "late") and be planned before
        # "later" for the spare GPU. "later" placed on it proves that the operator has seen and
        # planned everything since "ignored" was applied, and left "ignored" untouched.
        spare = env.node("spare", A10)
        env.apply("later", models=[{"name": "Qwen/Qwen2.5-1.5B-Instruct"}])

        def ignored_served_or_later_placed() -> Any:
            if "status" in env.cluster.deployment(other, "ignored"):
                return "ignored served"
            return env.placed("later")()

        outcome = wait_for(ignored_served_or_later_placed, timeout=20, what='"later" placed on the spare GPU')
        assert outcome != "ignored served", "another namespace is not served"
        (pod,) = wait_for(
            lambda: [p for p in env.pods() if p["metadata"]["name"].startswith("later-")], what="its pod"
        )
        assert _visible(pod) == spare.gpus[0].uuid
        assert "status" not in env.cluster.deployment(other, "ignored"), "another namespace is not served"
        assert env.cluster.pods(other) == []
    finally:
        env.cluster.kubectl("delete", "llmd", "--all", "-n", other, "--wait=true", check=False)
        env.cluster.delete_namespace(other)


def test_plain_kopf_run_serves_the_same_operator(env: Env) -> None:
    """`kopf run -m gpupin.controller.handlers`, configured by environment variables, places and serves /metrics."""
    import socket
    import subprocess
    import sys
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env.node("box", A10)
    log = (env.tmp / "kopf-run.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kopf",
            "run",
            "--standalone",
            "--all-namespaces",
            "-m",
            "gpupin.controller.handlers",
        ],
        env={
            **__import__("os").environ,
            "KUBECONFIG": str(env.cluster.operator_kubeconfig or env.cluster.kubeconfig),
            "GPUPIN_RUNTIME_CLASS": "",
            "GPUPIN_METRICS_PORT": str(port),
            "GPUPIN_HEALTH_PORT": "0",
        },
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        env.apply("chat", models=[{"name": "Qwen/Qwen2.5-3B-Instruct"}])
        wait_for(env.placed("chat"), what="placed by `kopf run`")
        (pod,) = wait_for(env.pods, what="its pod")
        assert "runtimeClassName" not in pod["spec"], "GPUPIN_RUNTIME_CLASS='' was read"
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert "gpupin_reconciles_total" in text
        assert f'gpupin_gpus_allocated{{node="{env.nodes[0]}"}} 1.0' in text, (
            "counted from the cache at scrape time"
        )
        node = env.nodes[0]
        assert f'gpupin_node_gpus{{node="{node}"}} 1.0' in text, "capacity"
        reserved = [line for line in text.splitlines() if line.startswith("gpupin_gpu_reserved_bytes{")]
        assert len(reserved) == 1 and f'pod="{pod["metadata"]["name"]}"' in reserved[0], reserved
        assert 'llmdeployment="chat"' in reserved[0] and 'UUID="GPU-' in reserved[0], reserved
        assert (
            f'gpupin_llmdeployment_condition{{condition="Placed",llmdeployment="chat",namespace="{env.namespace}",'
            'reason="Placed",status="True"} 1.0'
        ) in text
        assert 'gpupin_api_requests_total{code="201",resource="pods",verb="POST"} 1.0' in text
        assert "gpupin_build_info{" in text
    finally:
        process.terminate()
        process.wait(15)


_INIT_DONE: dict[str, Any] = {
    "ready": True,
    "restartCount": 0,
    "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
}


def _kubelet_status(
    env: Env, pod: dict[str, Any], container_state: dict[str, Any], init: dict[str, Any] = _INIT_DONE
) -> None:
    """Write a pod's status as the kubelet would (the node has no kubelet: the test plays it):
    the server container in ``container_state``, never ready; the pull init container's
    ``ready``, ``restartCount``, ``state`` and ``lastState`` from ``init`` (default: done)."""
    (container,) = pod["spec"]["containers"]
    (init_container,) = pod["spec"]["initContainers"]
    ready = False
    env.cluster.kube.request(
        "PATCH",
        f"/api/v1/namespaces/{env.namespace}/pods/{pod['metadata']['name']}/status",
        {
            "status": {
                "podIP": "10.0.0.9",
                "podIPs": [{"ip": "10.0.0.9"}],
                "hostIP": "10.0.0.1",
                "phase": "Running" if "running" in container_state else "Pending",
                "initContainerStatuses": [
                    {"name": init_container["name"], "image": init_container["image"], "imageID": "", **init}
                ],
                "conditions": [
                    {"type": "PodScheduled", "status": "True"},
                    {"type": "Ready", "status": str(ready)},
                ],
                "containerStatuses": [
                    {
                        "name": container["name"],
                        "image": container["image"],
                        "imageID": "",
                        "ready": ready,
                        "restartCount": 0,
                        "state": container_state,
                    }
                ],
            }
        },
        content_type="application/merge-patch+json",
    )


def test_why_a_pod_is_not_ready_reaches_the_deployment(env: Env) -> None:
    """A failed model pull (the init container's status, the pod staying Pending), a readiness
    probe failure (the kubelet's Unhealthy Event, read by pod uid) and a failed image pull (the
    pod's status) each become the Ready reason, with a message naming the pod and the cause (the
    CPU spill also as a Warning Event). The node runs no kubelet and no KWOK: the test writes what the kubelet would."""
    env.node("gpu", A10, kwok=False)
    env.operator()
    env.apply("chat", engine="ollama", models=[{"name": "llama3.1:8b"}])
    wait_for(env.placed("chat"), what="Placed=True")
    pod = wait_for(
        lambda: next((p for p in env.pods() if p["spec"].get("nodeName")), None), what="the pod scheduled"
    )
    name = pod["metadata"]["name"]
    gib = 1024**3

    def probe_failed(report: str, at: float) -> None:
        """The kubelet's Event for a failed readiness probe of the pod."""
        env.cluster.kube.request(
            "POST",
            f"/api/v1/namespaces/{env.namespace}/events",
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"generateName": f"{name}.", "namespace": env.namespace},
                "involvedObject": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": name,
                    "namespace": env.namespace,
                    "uid": pod["metadata"]["uid"],
                },
                "reason": "Unhealthy",
                "type": "Warning",
                "message": f"Readiness probe failed: gpupin: not serving: {report};\n",
                "source": {"component": "kubelet"},
                "lastTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)),
            },
        )

    def ready_reason(reason: str) -> Any:
        condition = env.cluster.condition(env.namespace, "chat", "Ready")
        return condition if condition and condition["reason"] == reason else None

    # The model pull fails in the init container, first thing. The real kubelet keeps the pod
    # Pending and unready through it: the operator must look again at the status change itself
    # (the kind tier caught it waiting for its 10-minute resync).
    _kubelet_status(
        env,
        pod,
        {"waiting": {"reason": "PodInitializing"}},
        init={
            "ready": False,
            "restartCount": 1,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {
                "terminated": {
                    "exitCode": 1,
                    "reason": "Error",
                    "message": "gpupin: cannot pull model(s) llama3.1:8b: Error: no such host\n",
                }
            },
        },
    )
    not_pulled = wait_for(
        lambda: ready_reason("ModelPullFailed"), what="Ready reason ModelPullFailed", timeout=15
    )
    assert not_pulled["message"] == (
        f"0/1 pods ready; pod {name}: pulling the models failed: cannot pull model(s) llama3.1:8b: Error: no such host"
    )

    now = time.time()
    probe_failed("llama3.1:8b: failed to load: from a container run that is over", now - 3600)
    probe_failed(f"llama3.1:8b: on CPU: {2 * gib} of {6 * gib} bytes in GPU memory", now)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 60))
    _kubelet_status(env, pod, {"running": {"startedAt": started}})

    on_cpu = wait_for(lambda: ready_reason("ModelOnCPU"), what="Ready reason ModelOnCPU", timeout=60)
    assert on_cpu["status"] == "False"
    assert on_cpu["message"].startswith(
        f"0/1 pods ready; pod {name}: llama3.1:8b runs partly on the CPU: "
        "Ollama holds 2.0 GiB of 6.0 GiB in GPU memory; gpupin estimated "
    )
    warning = wait_for(
        lambda: next(
            (e for e in env.cluster.events(env.namespace, "chat") if e["reason"] == "ModelOnCPU"), None
        ),
        what="a ModelOnCPU Event",
    )
    assert warning["type"] == "Warning" and name in warning["message"]

    # The pod does not change while its probe keeps failing: the operator looks again by itself.
    probe_failed("llama3.1:8b: failed to load: CUDA error: out of memory", time.time() + 1)
    failed = wait_for(lambda: ready_reason("ModelNotLoaded"), what="Ready reason ModelNotLoaded", timeout=60)
    assert (
        failed["message"]
        == f"0/1 pods ready; pod {name}: llama3.1:8b: failed to load: CUDA error: out of memory"
    )

    _kubelet_status(
        env,
        pod,
        {
            "waiting": {
                "reason": "ImagePullBackOff",
                "message": 'Back-off pulling image "ollama/ollama:0.17.4"',
            }
        },
    )
    pulled = wait_for(
        lambda: ready_reason("ImagePullFailed"), what="Ready reason ImagePullFailed", timeout=60
    )
    assert f"pod {name}: cannot pull image ollama/ollama:0.17.4: Back-off pulling image" in pulled["message"]
