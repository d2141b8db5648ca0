"""The operator's view of the cluster stays honest: forged pods and watch gaps (real control plane,
`gpupin operator` as a process, the fault proxy standing in for the network). Marker: e2e.

Aspects: a pod anyone could make — gpupin's label, a placement annotation claiming a GPU
exclusively with a negative or unreadable size, an ownerReference with the right name and a
wrong uid or none — changes no allocation, at start-up or through the watch, and stops no
reconcile; pods deleted while the pod watch is cut past the resourceVersion window (kopf lists
again, and a list has no DELETED events) still hold their GPUs in the operator's cache without
the periodic relist, and with it are made again within a bounded time.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from gpupin import constants, reasons

from faultproxy import FaultProxy
from helpers import A10
from kwok import Env, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

QWEN3B = "Qwen/Qwen2.5-3B-Instruct"
QWEN1B = "Qwen/Qwen2.5-1.5B-Instruct"
KEEP = "gpupin.test/keep"
"""A finalizer: the garbage collector deletes a pod whose owner does not exist, and a forged pod
must stay for the test (terminating, it would still hold its GPU under the old reading)."""


def _forged_pod(
    name: str, namespace: str, gpu_uuid: str, node_name: str, vram: Any, owner_uid: str | None
) -> dict[str, Any]:
    """A pod as anyone allowed to create pods could make it: gpupin's label, a placement
    annotation claiming ``gpu_uuid`` exclusively, a controller reference to "chat" with
    ``owner_uid`` (None: no reference). It never runs (no node matches its selector)."""
    annotation = {
        "node": node_name,
        "models": ["squatter"],
        "exclusive": True,
        "gpus": [{"index": 0, "uuid": gpu_uuid, "name": "NVIDIA A10", "vramBytes": vram}],
    }
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "finalizers": [KEEP],
        "labels": {constants.MANAGED_BY_LABEL: constants.MANAGED_BY, constants.DEPLOYMENT_LABEL: "chat"},
        "annotations": {constants.PLACEMENT_ANNOTATION: json.dumps(annotation)},
    }
    if owner_uid is not None:
        meta["ownerReferences"] = [
            {
                "apiVersion": constants.API_VERSION,
                "kind": constants.KIND,
                "name": "chat",
                "uid": owner_uid,
                "controller": True,
            }
        ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {
            "nodeSelector": {"gpupin-test": "nowhere"},
            "containers": [{"name": "squat", "image": "example.invalid/squat"}],
        },
    }


@pytest.fixture
def forger(env: Env) -> Iterator[str]:
    """Another namespace; its pods' finalizers are lifted afterwards."""
    namespace = f"{env.namespace}-forger"
    env.cluster.create_namespace(namespace)
    for ns in (namespace, env.namespace):  # pods are admitted once the namespace's ServiceAccount is made
        wait_for(lambda ns=ns: env.cluster.get(f"/api/v1/namespaces/{ns}/serviceaccounts/default"), what="SA")
    yield namespace
    for ns in (namespace, env.namespace):
        for pod in env.cluster.kube.request("GET", f"/api/v1/namespaces/{ns}/pods").get("items") or []:
            if KEEP in (pod["metadata"].get("finalizers") or []):
                env.cluster.kube.request(
                    "PATCH",
                    f"/api/v1/namespaces/{ns}/pods/{pod['metadata']['name']}",
                    {"metadata": {"finalizers": None}},
                    content_type="application/merge-patch+json",
                )
    env.cluster.delete_namespace(namespace)


def _visible(pod: dict[str, Any]) -> str:
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    return str(env.get("NVIDIA_VISIBLE_DEVICES"))


def test_a_forged_pod_changes_no_allocation(env: Env, forger: str) -> None:
    """Without the ownership check each forgery holds the A10 wholly (an unreadable or negative
    size counts as the whole GPU): "chat" would be refused with InsufficientGPUs."""
    single = env.node("single", A10)
    gpu = single.gpus[0].uuid
    create = env.cluster.kube.request
    create(
        "POST",
        f"/api/v1/namespaces/{forger}/pods",
        _forged_pod("neg", forger, gpu, single.name, -(2**34), str(uuid.uuid4())),
    )
    create(
        "POST", f"/api/v1/namespaces/{forger}/pods", _forged_pod("junk", forger, gpu, single.name, "x", None)
    )
    # in the deployment's own namespace, the right name and a wrong uid
    create(
        "POST",
        f"/api/v1/namespaces/{env.namespace}/pods",
        _forged_pod("chat-squat", env.namespace, gpu, single.name, "x", str(uuid.uuid4())),
    )
    operator = env.operator()  # reads the forgeries at start-up
    env.apply("chat", models=[{"name": QWEN3B}])
    placed = wait_for(env.placed("chat"), what="chat placed on the GPU the forgeries claim")
    assert placed["reason"] == reasons.PLACED
    (pod,) = wait_for(
        lambda: [
            p
            for p in env.pods()
            if p["metadata"]["name"].startswith("chat-") and "squat" not in p["metadata"]["name"]
        ],
        what="chat's pod",
    )
    assert _visible(pod) == gpu
    # a forgery that arrives through the watch, on a node that arrives later
    more = env.node("more", A10)
    create(
        "POST",
        f"/api/v1/namespaces/{forger}/pods",
        _forged_pod("late", forger, more.gpus[0].uuid, more.name, -1, None),
    )
    wait_for(
        lambda: f'"namespace": "{forger}", "pod": "late"' in operator.log.read_text(),
        what="the late forgery seen and ignored",
    )
    env.apply("second", models=[{"name": QWEN1B}])
    wait_for(env.placed("second"), what="second placed: reconciles go on")
    (second,) = wait_for(
        lambda: [p for p in env.pods() if p["metadata"]["name"].startswith("second-")], what="second's pod"
    )
    assert _visible(second) == more.gpus[0].uuid
    assert operator.alive(), operator.tail()
    log = operator.log.read_text()
    ignored = [  # other tests' pods may be there too, their deployments deleted
        entry
        for line in log.splitlines()
        if "no LLMDeployment controls" in line
        and (entry := json.loads(line))["namespace"] in (forger, env.namespace)
    ]
    assert sorted(entry["pod"] for entry in ignored) == ["chat-squat", "junk", "late", "neg"], "once each"
    assert "Traceback" not in log and "Reconcile failed" not in log, operator.tail()
    still = env.cluster.kube.request("GET", f"/api/v1/namespaces/{forger}/pods")["items"]
    assert sorted(p["metadata"]["name"] for p in still) == ["junk", "late", "neg"], "the forgeries stayed"


def _cut_the_pod_watch_while_pods_go(env: Env, proxy: FaultProxy, pods: list[str]) -> None:
    """Hold the pod watch back, delete ``pods`` (the operator hears nothing), then let the watch
    resume into a 410 Expired, as when it was away longer than the server keeps resourceVersions:
    kopf lists the pods again, and a list has no DELETED events."""
    held, expired, lists = proxy.held, proxy.expired, len(proxy.lists)
    proxy.pause_watches(r"^/api/v1/pods$")
    proxy.expire_watches(r"^/api/v1/pods$")
    wait_for(lambda: proxy.drop_watches() >= 1, timeout=10, what="open watch streams to cut")
    wait_for(lambda: proxy.held > held, timeout=15, what="the pod watch reconnecting, held back")
    for name in pods:
        env.cluster.kube.request(
            "DELETE", f"/api/v1/namespaces/{env.namespace}/pods/{name}", None, {"gracePeriodSeconds": "0"}
        )
    wait_for(
        lambda: not env.cluster.kube.request("GET", f"/api/v1/namespaces/{env.namespace}/pods")["items"],
        what="the pods gone from the API server",
    )
    proxy.resume_watches()
    wait_for(lambda: proxy.expired > expired, what="the watch answered 410 Expired")
    wait_for(lambda: "/api/v1/pods" in proxy.lists[lists:], what="kopf listing the pods again after the 410")


def _two_pods(env: Env) -> list[str]:
    pods = wait_for(lambda: len(ps := env.pods()) == 2 and ps, what="chat's two pods")
    return [p["metadata"]["name"] for p in pods]


def test_pods_deleted_during_a_watch_gap_are_made_again(env: Env) -> None:
    box = env.node("box", A10, A10)
    proxy = env.proxy()
    kubeconfig = proxy.kubeconfig(env.tmp / "proxy.kubeconfig")
    # Without the relist: the deleted pods stay in the cache, holding both GPUs, never made again.
    first = env.operator("--relist-seconds", "0", kubeconfig=kubeconfig)
    env.apply("chat", models=[{"name": QWEN3B}], replicas=2)
    names = _two_pods(env)
    _cut_the_pod_watch_while_pods_go(env, proxy, names)
    env.apply("probe", models=[{"name": QWEN1B}])
    refused = wait_for(env.placed("probe", "False"), what="probe planned against the cache")
    assert refused["reason"] == reasons.INSUFFICIENT_GPUS and f"{env.namespace}/chat" in refused["message"], (
        "both A10s are free, yet the operator's cache still gives them to chat's deleted pods"
    )
    assert env.pods() == [], "and chat's pods were not made again"
    assert [g.uuid for g in box.gpus]  # two GPUs, both free in truth
    first.stop()
    env.cluster.kubectl("delete", "llmd", "probe", "-n", env.namespace, "--wait=true")
    # With it (every 2 s): a fresh process lists everything, then the same gap heals by itself.
    second = env.operator("--relist-seconds", "2", kubeconfig=kubeconfig)
    names = _two_pods(env)
    _cut_the_pod_watch_while_pods_go(env, proxy, names)
    wait_for(lambda: len(env.pods()) == 2, timeout=30, what="chat's pods made again after the relist")
    swept = {  # other tests' objects may go meanwhile, and one pass may find one pod, the next the other
        name
        for line in second.log.read_text().splitlines()
        if "DELETED event was missed" in line and '"Pod"' in line
        for name in json.loads(line)["names"]
        if name.startswith(f"{env.namespace}/")
    }
    assert swept == {f"{env.namespace}/{n}" for n in names}, second.tail()
    assert second.alive(), second.tail()
