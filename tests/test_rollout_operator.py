"""Rollouts and refusals on the real control plane, with the real operator (marker e2e).

KWOK plays the kubelet: a scheduled pod is Running and Ready at once, a deleted one is gone at
once. So these tests check what the operator writes and in which order — never more pods down than
the rollout allows, nothing retried in a loop — not how long a model takes to load (the pure
simulation in tests/test_rollout.py plays slow pods).

Aspects: an image change on a 3-replica deployment with no free GPU never leaves fewer than 2
Ready; a pod the API server refuses (422) is a condition and one Event, not a loop, and a spec
edit the server would refuse never takes down the pod that serves; replicas: 0 frees the GPUs for
another deployment and scaling back up serves again; a surge pod the server refuses falls back to
replacing in place.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from gpupin import reasons

from helpers import A10
from kwok import Env, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

QWEN = "Qwen/Qwen2.5-3B-Instruct"
BAD_TOLERATION = [{"key": "gpu", "operator": "Sometimes", "effect": "NoSchedule"}]


def _ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _status(env: Env, name: str) -> dict[str, Any]:
    body = env.cluster.deployment(env.namespace, name)
    status: dict[str, Any] = body.get("status") or {}
    return status if status.get("observedGeneration") == body["metadata"]["generation"] else {}


def _condition(env: Env, name: str, kind: str) -> dict[str, Any]:
    return next((c for c in _status(env, name).get("conditions") or [] if c["type"] == kind), {})


class ReadyWatcher:
    """Counts the deployment's Ready, not-terminating pods as often as the API server answers."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.counts: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        path = f"/api/v1/namespaces/{self.env.namespace}/pods"
        while not self._stop.is_set():
            items = self.env.cluster.get(path).get("items") or []
            self.counts.append(
                sum(1 for p in items if _ready(p) and not p["metadata"].get("deletionTimestamp"))
            )

    def __enter__(self) -> ReadyWatcher:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_an_image_change_on_three_replicas_never_leaves_fewer_than_two_ready(env: Env) -> None:
    env.node("box", A10, A10, A10)  # no free GPU: replaced in place, one at a time
    env.operator()
    env.apply("chat", models=[{"name": QWEN}], replicas=3)
    wait_for(lambda: _status(env, "chat").get("ready") == "3/3", timeout=60, what="3 replicas")
    with ReadyWatcher(env) as watcher:
        env.apply("chat", models=[{"name": QWEN}], replicas=3, image="vllm/vllm-openai:v0.34.0")

        def rolled() -> bool:
            pods = env.pods()
            images = {p["spec"]["containers"][0]["image"] for p in pods}
            ready = _condition(env, "chat", reasons.READY)
            return len(pods) == 3 and images == {"vllm/vllm-openai:v0.34.0"} and ready.get("status") == "True"

        wait_for(rolled, timeout=120, what="all three pods replaced")
    assert len(watcher.counts) > 10, "the watcher saw the rollout"
    assert min(watcher.counts) >= 2, f"fewer than 2 Ready during the rollout: {watcher.counts}"
    events = [e for e in env.cluster.events(env.namespace, "chat") if e["reason"] == "DeletingPod"]
    assert len(events) == 3, [e["message"] for e in events]


def test_a_pod_the_api_server_refuses_is_a_condition_and_one_event_not_a_loop(env: Env) -> None:
    env.node("box", A10, A10)
    proxy = env.proxy()  # only counts requests here: nothing is injected
    operator = env.operator(kubeconfig=proxy.kubeconfig(env.tmp / "proxy.kubeconfig"))
    env.apply("chat", models=[{"name": QWEN}], tolerations=BAD_TOLERATION)
    placed = wait_for(
        lambda: (c := _condition(env, "chat", reasons.PLACED)) and c["reason"] == reasons.POD_REJECTED and c,
        timeout=60,
        what="Placed=False PodRejected",
    )
    assert placed["status"] == "False" and "422" in placed["message"] and "tolerations" in placed["message"]
    ready = _condition(env, "chat", reasons.READY)
    assert ready["reason"] == reasons.POD_REJECTED
    creates = proxy.count("POST", rf"/namespaces/{env.namespace}/pods$")
    time.sleep(6)  # proving that nothing happens: no retry loop
    assert proxy.count("POST", rf"/namespaces/{env.namespace}/pods$") == creates, "retried in a loop"
    events = [e for e in env.cluster.events(env.namespace, "chat") if e["reason"] == reasons.POD_REJECTED]
    assert len(events) == 1 and events[0]["type"] == "Warning", [e.get("message") for e in events]
    assert env.pods() == []

    # a spec the server accepts is placed at once: the rejection was for that generation only
    env.apply("chat", models=[{"name": QWEN}])
    wait_for(lambda: _status(env, "chat").get("ready") == "1/1", timeout=60, what="placed once fixed")
    (serving,) = env.pods()

    # an edit the server would refuse is tried first (a dry run): the serving pod stays
    env.apply("chat", models=[{"name": QWEN}], tolerations=BAD_TOLERATION)
    wait_for(
        lambda: _condition(env, "chat", reasons.PLACED).get("reason") == reasons.POD_REJECTED,
        timeout=60,
        what="the edit refused",
    )
    assert [p["metadata"]["uid"] for p in env.pods()] == [serving["metadata"]["uid"]], "never deleted"

    # and once the edit is taken back, the pod that kept serving is the deployment's again, at once
    env.apply("chat", models=[{"name": QWEN}])
    wait_for(lambda: _status(env, "chat").get("ready") == "1/1", timeout=30, what="serving, as before")
    assert [p["metadata"]["uid"] for p in env.pods()] == [serving["metadata"]["uid"]]
    assert operator.alive(), operator.tail()


def test_replicas_zero_frees_the_gpus_and_scaling_up_serves_again(env: Env) -> None:
    env.node("box", A10)
    env.operator()
    env.apply("chat", models=[{"name": QWEN}])
    wait_for(lambda: _status(env, "chat").get("ready") == "1/1", timeout=60, what="serving")
    env.apply("other", models=[{"name": QWEN}])
    wait_for(env.placed("other", "False"), timeout=60, what="the other waits for the GPU")
    env.cluster.kubectl("scale", "llmd", "chat", "-n", env.namespace, "--replicas=0")
    wait_for(env.placed("other"), timeout=60, what="the paused deployment's GPU given to the other")
    paused = _condition(env, "chat", reasons.READY)
    assert paused["reason"] == reasons.PAUSED and _status(env, "chat")["gpus"] == 0
    assert [p["metadata"]["name"].startswith("other-") for p in env.pods()] == [True]
    env.delete("other")
    env.cluster.kubectl("scale", "llmd", "chat", "-n", env.namespace, "--replicas=1")
    wait_for(lambda: _status(env, "chat").get("ready") == "1/1", timeout=60, what="serving again")
    assert env.cluster.deployment(env.namespace, "chat")["spec"]["replicas"] == 1


def test_a_surge_the_api_server_refuses_falls_back_to_replacing_in_place(env: Env) -> None:
    env.node("box", A10, A10)  # a free GPU: the new pod would go there first
    proxy = env.proxy()
    env.operator(kubeconfig=proxy.kubeconfig(env.tmp / "proxy.kubeconfig"))
    env.apply("chat", models=[{"name": QWEN}])
    wait_for(lambda: _status(env, "chat").get("ready") == "1/1", timeout=60, what="serving")
    (old,) = env.pods()
    # the surge pod is refused once, for good (a quota answers 403; 422 here, because the suite
    # reads any 403 in the operator's log as a hole in its RBAC)
    proxy.inject("POST", rf"/namespaces/{env.namespace}/pods$", status=422, times=1)
    env.apply("chat", models=[{"name": QWEN}], image="vllm/vllm-openai:v0.34.0")

    def replaced() -> list[dict[str, Any]] | None:
        pods = env.pods()
        done = _condition(env, "chat", reasons.READY).get("status") == "True"
        return (
            pods
            if done and [p["spec"]["containers"][0]["image"] for p in pods] == ["vllm/vllm-openai:v0.34.0"]
            else None
        )

    (new,) = wait_for(replaced, timeout=60, what="replaced in place after the refused surge")
    assert new["metadata"]["name"] == old["metadata"]["name"], "in place: same GPU, same name"
    assert proxy.count("POST", rf"/namespaces/{env.namespace}/pods$") >= 3, "surge, dry run, create"
    placed = _condition(env, "chat", reasons.PLACED)
    assert placed["status"] == "True", placed
