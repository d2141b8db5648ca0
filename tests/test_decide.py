"""The reconcile's pure decision: state in (deployment, its children, inventory, plan) → writes out.

Aspects: a first reconcile creates pods and Services and writes status; steady state writes
nothing at all; a changed spec deletes the outdated pod and waits for it before creating its
successor (both would hold the same GPU); a refusal keeps the pods that serve and says so; a
GPU or node leaving the inventory deletes its pod (at once when the node is gone) and sets
Degraded; conditions keep their lastTransitionTime while unchanged; a Service name another deployment's
Service has (names are unique within a deployment only) is a status on the deployment that asks
for it, written once, and the other's Service is left alone; a policy the admin tightened under a
running deployment refuses its spec once (one Event) and keeps its pod, Service and NetworkPolicy.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from gpupin import constants, reasons
from gpupin.controller.decide import Actions, decide
from gpupin.controller.podstate import placement_of
from gpupin.controller.status import condition
from gpupin.inventory import Inventory, NodeInventory
from gpupin.planner import Planner
from gpupin.render import RenderConfig

from helpers import A10, RTX_2060, RTX_4070, inventory, node

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _body(
    spec: dict[str, Any],
    generation: int = 1,
    status: dict[str, Any] | None = None,
    name: str = "chat",
    uid: str = "uid-1",
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": constants.API_VERSION,
        "kind": constants.KIND,
        "metadata": {"name": name, "namespace": "default", "uid": uid, "generation": generation},
        "spec": spec,
    }
    if status is not None:
        body["status"] = status
    return body


def _decide(
    body: dict[str, Any],
    cluster: Inventory,
    pods: list[dict[str, Any]],
    services: list[dict[str, Any]],
    now: datetime = NOW,
    rejected: str | None = None,
) -> Actions:
    from gpupin.api.v1alpha1 import LLMDeployment
    from gpupin.controller.rollout import hints

    deployment = LLMDeployment.model_validate(
        {k: body[k] for k in ("apiVersion", "kind", "metadata", "spec")}
    )
    plan = Planner(cluster).plan(deployment, hints(pods))
    return decide(
        body, deployment, None, plan, pods, services, [], cluster, RenderConfig(), now, rejected=rejected
    )


def _as_created(objs: list[dict[str, Any]], ready: bool = True) -> list[dict[str, Any]]:
    """What the API server would hand back: uid, and for pods a Ready condition (KWOK-like)."""
    result = []
    for i, obj in enumerate(objs):
        created = copy.deepcopy(obj)
        created["metadata"]["uid"] = f"uid-child-{i}"
        if obj["kind"] == "Pod":
            created["status"] = {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            }
        result.append(created)
    return result


def _converge(
    body: dict[str, Any], cluster: Inventory
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    first = _decide(body, cluster, [], [])
    children = _as_created(first.create)
    pods = [c for c in children if c["kind"] == "Pod"]
    services = [c for c in children if c["kind"] == "Service"]
    body = {**body, "status": first.status}
    second = _decide(body, cluster, pods, services)
    if second.status is not None:  # Ready flips once the pods exist
        body = {**body, "status": second.status}
    return body, pods, services


def test_first_reconcile_creates_and_reports() -> None:
    actions = _decide(
        _body({"engine": "ollama", "models": [{"name": "qwen2.5:14b"}, {"name": "llama3.1:8b"}]}),
        inventory(node("w", RTX_4070, RTX_2060)),
        [],
        [],
    )
    assert sorted(o["kind"] for o in actions.create) == ["Pod", "Pod", "Service", "Service"]
    assert all(o["metadata"]["ownerReferences"][0]["uid"] == "uid-1" for o in actions.create)
    assert actions.delete == [] and actions.status is not None
    placed = next(c for c in actions.status["conditions"] if c["type"] == reasons.PLACED)
    assert (placed["status"], placed["observedGeneration"]) == ("True", 1)
    assert {e.reason for e in actions.events} == {"CreatedPod"}, (
        "its CreatedPod Events say where it was placed"
    )


def test_steady_state_writes_nothing() -> None:
    cluster = inventory(node("w", A10))
    body, pods, services = _converge(_body({"models": [{"name": "Qwen/Qwen2.5-3B-Instruct"}]}), cluster)
    again = _decide(body, cluster, pods, services)
    assert (again.create, again.delete, again.status, again.events) == ([], [], None, [])


def test_changed_spec_replaces_the_pod_after_the_old_one_is_gone() -> None:
    cluster = inventory(node("w", A10))
    body, pods, services = _converge(_body({"models": [{"name": "Qwen/Qwen2.5-3B-Instruct"}]}), cluster)
    edited = {
        **body,
        "spec": {"models": [{"name": "Qwen/Qwen2.5-3B-Instruct"}], "vllm": {"maxModelLen": 8192}},
        "metadata": {**body["metadata"], "generation": 2},
    }
    actions = _decide(edited, cluster, pods, services)
    assert [o["kind"] for o, _ in actions.delete] == ["Pod"]
    assert not [o for o in actions.create if o["kind"] == "Pod"], (
        "its successor waits: both would hold the GPU"
    )
    assert actions.waiting
    terminating = [
        {**pods[0], "metadata": {**pods[0]["metadata"], "deletionTimestamp": "2026-11-27T12:00:00Z"}}
    ]
    still = _decide(edited, cluster, terminating, services)
    assert still.waiting and not [o for o in still.create if o["kind"] == "Pod"]
    gone = _decide(edited, cluster, [], services)
    assert [o["kind"] for o in gone.create] == ["Pod"]


def test_refusal_keeps_the_pods_that_serve() -> None:
    cluster = inventory(node("w", A10))
    body, pods, services = _converge(_body({"models": [{"name": "Qwen/Qwen2.5-3B-Instruct"}]}), cluster)
    bigger = {
        **body,
        "spec": {"models": [{"name": "Qwen/Qwen2.5-3B-Instruct"}], "replicas": 2},
        "metadata": {**body["metadata"], "generation": 2},
    }
    actions = _decide(bigger, cluster, pods, services)
    assert actions.delete == [] and actions.create == []
    assert actions.status is not None
    assert actions.status["reason"] == reasons.TOO_FEW_GPUS
    assert "1 pod placed earlier keeps running" in actions.status["message"]
    ready = condition(actions.status, reasons.READY)
    assert ready is not None and ready["reason"] == reasons.PARTLY_SERVING, ready
    assert actions.status["ready"] == "1/2", "one replica serves, two are wanted"
    degraded = condition(actions.status, reasons.DEGRADED)
    assert degraded is not None and degraded["status"] == "False", "nothing was lost"
    assert actions.status["placements"][0]["pod"] == pods[0]["metadata"]["name"]
    assert actions.status["placements"][0]["state"] == "Outdated"


def test_lost_gpus_delete_their_pods() -> None:
    cluster = inventory(node("w", A10, A10))
    body, pods, services = _converge(_body({"models": [{"name": "Qwen/Qwen2.5-3B-Instruct"}]}), cluster)
    env = {e["name"]: e.get("value") for e in pods[0]["spec"]["containers"][0]["env"]}
    held = env["NVIDIA_VISIBLE_DEVICES"]
    placement = placement_of(pods[0])
    assert placement is not None and list(placement.gpu_uuids) == [held], "pinned as placed"
    survivor = [g for g in cluster.nodes[0].gpus if g.uuid != held]
    shrunk = inventory(NodeInventory(name="w", gpus=survivor))
    actions = _decide(body, shrunk, pods, services)
    assert [(o["metadata"]["name"], grace) for o, grace in actions.delete] == [
        (pods[0]["metadata"]["name"], None)
    ]
    assert any(e.reason == "GPULost" for e in actions.events)
    assert actions.status is not None
    degraded = next(c for c in actions.status["conditions"] if c["type"] == reasons.DEGRADED)
    assert degraded["status"] == "True" and held in degraded["message"]
    node_gone = _decide(body, inventory(node("elsewhere", A10)), pods, services)
    assert [grace for _, grace in node_gone.delete] == [0], "no kubelet will confirm: delete at once"


def test_conditions_move_their_transition_time_only_when_they_flip() -> None:
    cluster = inventory(node("w", A10))
    body, pods, services = _converge(_body({"models": [{"name": "Qwen/Qwen2.5-3B-Instruct"}]}), cluster)
    from gpupin.api.v1alpha1 import LLMDeployment

    deployment = LLMDeployment.model_validate(
        {k: body[k] for k in ("apiVersion", "kind", "metadata", "spec")}
    )
    same_plan = Planner(cluster).plan(deployment)
    an_hour_later = decide(
        body, deployment, None, same_plan, pods, services, [], cluster, RenderConfig(), NOW.replace(hour=13)
    )
    assert an_hour_later.status is None, "nothing flipped: nothing to write, times kept"
    before = {c["type"]: c["lastTransitionTime"] for c in body["status"]["conditions"]}
    later = decide(
        body, None, "ignored", None, pods, services, [], cluster, RenderConfig(), NOW.replace(hour=13)
    )
    assert later.status is not None
    after = {c["type"]: c for c in later.status["conditions"]}
    assert after[reasons.PLACED]["lastTransitionTime"] != before[reasons.PLACED], "Placed flipped to False"
    assert after[reasons.DEGRADED]["status"] == "False", "nothing was lost: its pod keeps serving"
    assert after[reasons.DEGRADED]["lastTransitionTime"] == before[reasons.DEGRADED]


def test_unchanged_conditions_keep_their_transition_time_across_status_writes() -> None:
    """Each reconcile reads the status the one before wrote: a condition whose status stays keeps
    its lastTransitionTime even when its message changes and the status is written; one that
    flips takes the reconcile's time."""
    cluster = inventory(node("w", A10, A10))
    body = _body({"models": [{"name": "Qwen/Qwen2.5-3B-Instruct"}], "replicas": 2})
    first = _decide(body, cluster, [], [])
    assert first.status is not None
    at_first = {c["type"]: c for c in first.status["conditions"]}
    assert {t: (c["status"], c["lastTransitionTime"]) for t, c in at_first.items()} == {
        reasons.PLACED: ("True", "2026-11-27T12:00:00Z"),
        reasons.READY: ("False", "2026-11-27T12:00:00Z"),
        reasons.DEGRADED: ("False", "2026-11-27T12:00:00Z"),
    }
    children = _as_created(first.create)
    services = [c for c in children if c["kind"] == "Service"]
    pods = [c for c in children if c["kind"] == "Pod"]
    assert len(pods) == 2
    half_ready = [
        pods[0],
        {**pods[1], "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}},
    ]

    # an hour later one pod is ready: Ready's message changes, no condition flips
    second = _decide({**body, "status": first.status}, cluster, half_ready, services, NOW.replace(hour=13))
    assert second.status is not None, "the Ready message changed: the status is written"
    at_second = {c["type"]: c for c in second.status["conditions"]}
    assert at_second[reasons.READY]["message"] != at_first[reasons.READY]["message"]
    assert {t: (c["status"], c["lastTransitionTime"]) for t, c in at_second.items()} == {
        t: (c["status"], c["lastTransitionTime"]) for t, c in at_first.items()
    }

    # two hours later both are: Ready flips to True and takes that time; the others keep theirs
    third = _decide({**body, "status": second.status}, cluster, pods, services, NOW.replace(hour=14))
    assert third.status is not None
    at_third = {c["type"]: (c["status"], c["lastTransitionTime"]) for c in third.status["conditions"]}
    assert at_third == {
        reasons.PLACED: ("True", "2026-11-27T12:00:00Z"),
        reasons.READY: ("True", "2026-11-27T14:00:00Z"),
        reasons.DEGRADED: ("False", "2026-11-27T12:00:00Z"),
    }


def test_a_damaged_placement_record_is_reported_on_its_owner_and_the_pod_kept() -> None:
    cluster = inventory(node("w", A10, A10))
    body, pods, services = _converge(_body({"models": [{"name": "Qwen/Qwen2.5-3B-Instruct"}]}), cluster)
    damaged = copy.deepcopy(pods[0])
    annotations = damaged["metadata"]["annotations"]
    annotations[constants.PLACEMENT_ANNOTATION] = annotations[constants.PLACEMENT_ANNOTATION].replace(
        '"vramBytes":', '"vramBytes":"x","was":'
    )
    actions = _decide(body, cluster, [damaged], services)
    assert actions.delete == [] and actions.create == [], "kept: it serves, and its spec is current"
    assert actions.status is not None
    degraded = condition(actions.status, reasons.DEGRADED)
    assert degraded is not None and (degraded["status"], degraded["reason"]) == ("True", "PodsUnverified")
    assert "gpus[0].vramBytes" in degraded["message"] and damaged["metadata"]["name"] in degraded["message"]
    assert [e.type for e in actions.events if e.reason == "PodsUnverified"] == ["Warning"]


_VLLM_MISTRAL = {"models": [{"name": "mistralai/Mistral-7B-Instruct-v0.3"}]}
_OLLAMA_MISTRAL = {"engine": "ollama", "models": [{"name": "mistral"}]}


@pytest.mark.parametrize(
    ("first", "second", "taken"),
    [
        (("chat-mistral", _VLLM_MISTRAL), ("chat", _OLLAMA_MISTRAL), "chat-mistral"),
        (("chat", _OLLAMA_MISTRAL), ("chat-mistral", _VLLM_MISTRAL), "chat-mistral"),
        (
            ("chat", {"engine": "ollama", "models": [{"name": "a-b:7b"}]}),
            ("chat-a", {"engine": "ollama", "models": [{"name": "b:7b"}]}),
            "chat-a-b-7b",
        ),
    ],
    ids=["vllm-then-ollama", "ollama-then-vllm", "ollama-then-ollama"],
)
def test_a_service_name_another_deployment_has_is_a_status_on_the_later_one(
    first: tuple[str, dict[str, Any]], second: tuple[str, dict[str, Any]], taken: str
) -> None:
    """The reconcile as the runtime runs it (``namesakes``, then ``decide`` with the rejection):
    the later deployment is Placed=False PodRejected naming the Service, with one Warning, and
    creates nothing; reconciled again it writes nothing (no loop); the earlier one's Service is
    not touched and that deployment stays as it was."""
    from gpupin.controller.cache import ClusterCache
    from gpupin.controller.writes import namesakes

    cluster = inventory(node("w", A10, A10))
    earlier, earlier_pods, earlier_services = _converge(_body(first[1], name=first[0], uid="uid-1"), cluster)
    cache = ClusterCache()
    for obj in (*earlier_pods, *earlier_services):
        stored = {**obj, "metadata": {**obj["metadata"], "resourceVersion": "1"}}
        (cache.pods if obj["kind"] == "Pod" else cache.services).upsert(stored)
    theirs = copy.deepcopy(cache.services.get(("default", taken)))
    assert theirs is not None and theirs["metadata"]["ownerReferences"][0]["uid"] == "uid-1"

    body = _body(second[1], name=second[0], uid="uid-2")
    for attempt in range(2):
        planned = _decide(body, cluster, [], [])
        assert taken in {o["metadata"]["name"] for o in planned.create if o["kind"] == "Service"}
        why = namesakes(body, planned, lambda obj: cache.pods if obj["kind"] == "Pod" else cache.services)
        assert (
            why == f"Service {taken} exists and is not this deployment's: delete it, or rename the deployment"
        )
        actions = _decide(body, cluster, [], [], rejected=why)
        assert (actions.create, actions.delete) == ([], [])
        if attempt == 0:
            assert actions.status is not None
            placed = condition(actions.status, reasons.PLACED)
            assert placed is not None and (placed["status"], placed["reason"], placed["message"]) == (
                "False",
                reasons.POD_REJECTED,
                why,
            )
            assert [(e.type, e.reason) for e in actions.events] == [("Warning", reasons.POD_REJECTED)]
            body = {**body, "status": actions.status}
        else:
            assert (actions.status, actions.events) == (None, []), "said once: no status write, no Event"
    assert cache.services.get(("default", taken)) == theirs, "the other deployment's Service is untouched"
    again = _decide(earlier, cluster, earlier_pods, earlier_services)
    assert (again.create, again.delete, again.status, again.events) == ([], [], None, [])


def test_a_tightened_policy_refuses_the_spec_and_keeps_what_serves() -> None:
    """The admin allows fewer images while a deployment runs one: its plan is refused
    (PolicyRefused, one Warning Event), nothing is created or deleted — not its pod, Service or
    NetworkPolicy — and the next reconcile writes nothing (no retry loop)."""
    from gpupin.api.v1alpha1 import LLMDeployment
    from gpupin.controller.rollout import hints
    from gpupin.policy import Policy

    cluster = inventory(node("w", A10))
    config = RenderConfig(network_policy="namespace")
    body = _body({"models": [{"name": "Qwen/Qwen2.5-3B-Instruct"}], "image": "registry.example/vllm:1"})

    def reconcile(body: dict[str, Any], children: list[dict[str, Any]], policy: Policy) -> Actions:
        deployment = LLMDeployment.model_validate(
            {k: body[k] for k in ("apiVersion", "kind", "metadata", "spec")}
        )
        pods = [c for c in children if c["kind"] == "Pod"]
        plan = Planner(cluster, policy=policy).plan(deployment, hints(pods))
        of = {kind: [c for c in children if c["kind"] == kind] for kind in ("Service", "NetworkPolicy")}
        return decide(
            body, deployment, None, plan, pods, of["Service"], [], cluster, config, NOW,
            network_policies=of["NetworkPolicy"],
        )  # fmt: skip

    first = reconcile(body, [], Policy())
    assert sorted(o["kind"] for o in first.create) == ["NetworkPolicy", "Pod", "Service"]
    assert first.create[0]["kind"] == "NetworkPolicy", "created before the pod it guards"
    children = _as_created(first.create)
    body = {**body, "status": first.status}
    body = {**body, "status": reconcile(body, children, Policy()).status or body["status"]}

    tightened = Policy(allowed_images=("vllm/vllm-openai",))
    refused = reconcile(body, children, tightened)
    assert (refused.create, refused.delete) == ([], [])
    assert refused.status is not None and refused.status["reason"] == reasons.POLICY_REFUSED
    assert (
        "spec.image: registry.example/vllm:1 is not an image this cluster allows" in refused.status["message"]
    )
    assert "1 pod placed earlier keeps running" in refused.status["message"]
    assert [(e.type, e.reason) for e in refused.events] == [("Warning", reasons.POLICY_REFUSED)]
    again = reconcile({**body, "status": refused.status}, children, tightened)
    assert (again.create, again.delete, again.status, again.events) == ([], [], None, [])


def test_a_routed_deployment_reports_its_endpoint_and_whether_its_router_answers() -> None:
    """With a router, status.endpoint names the one address and EndpointReady follows the
    router's Deployment: False while it is made or has no ready pod (with the Deployment's own
    words and where to look), True once a pod is ready. A vLLM deployment has neither."""
    from gpupin.api.v1alpha1 import LLMDeployment

    cluster = inventory(node("w", RTX_4070, RTX_2060))
    config = RenderConfig(router_image="ghcr.io/example/gpupin:1", require_gpu=False)

    def status(spec: dict[str, Any], routers: list[dict[str, Any]]) -> dict[str, Any]:
        body = _body(spec)
        deployment = LLMDeployment.model_validate(body)
        plan = Planner(cluster).plan(deployment)
        actions = decide(body, deployment, None, plan, [], [], [], cluster, config, NOW, routers=routers)
        return actions.status

    ollama = {"engine": "ollama", "models": [{"name": "llama3.1:8b"}, {"name": "nomic-embed-text"}]}
    made = status(ollama, [])
    assert made["endpoint"] == "chat.default.svc:11434"
    endpoint = condition(made, reasons.ENDPOINT_READY)
    assert endpoint is not None and (endpoint["status"], endpoint["reason"]) == (
        "False",
        reasons.ROUTER_NOT_READY,
    )
    assert "router Deployment chat-router is being created" in endpoint["message"]

    router = {"kind": "Deployment", "metadata": {"name": "chat-router", "namespace": "default"}, "status": {
        "conditions": [{"type": "Available", "status": "False", "message": "Deployment does not have minimum availability."}],
    }}  # fmt: skip
    waiting = condition(status(ollama, [router]), reasons.ENDPOINT_READY)
    assert waiting is not None and waiting["status"] == "False"
    assert "no ready pod (Deployment does not have minimum availability.)" in waiting["message"]
    assert "kubectl -n default describe deployment chat-router" in waiting["message"]
    other = {
        **router,
        "metadata": {"name": "another-router", "namespace": "default"},
        "status": {"readyReplicas": 1},
    }
    assert condition(status(ollama, [other]), reasons.ENDPOINT_READY)["status"] == "False", (
        "its own router only"
    )

    failing = {**router, "status": {"conditions": [
        {"type": "ReplicaFailure", "status": "True", "message": 'pods "chat-router-1" is forbidden: no PriorityClass'},
        {"type": "Progressing", "status": "True", "message": "ReplicaSet is progressing."},
    ]}}  # fmt: skip
    forbidden = condition(status(ollama, [failing]), reasons.ENDPOINT_READY)
    assert forbidden is not None and "no PriorityClass" in forbidden["message"], "why no pod could be made"
    assert "is progressing" not in forbidden["message"], "only what is wrong"
    ready = condition(status(ollama, [{**router, "status": {"readyReplicas": 1}}]), reasons.ENDPOINT_READY)
    assert ready is not None and (ready["status"], ready["reason"]) == ("True", reasons.ROUTER_READY)

    vllm = status({"engine": "vllm", "models": [{"name": "Qwen/Qwen2.5-0.5B-Instruct"}]}, [])
    assert "endpoint" not in vllm and condition(vllm, reasons.ENDPOINT_READY) is None
