"""Planning and deciding on a frozen inventory: pods stay, new pods go elsewhere, nobody is evicted.

Aspects: a frozen node keeps a deployment's pods exactly where they are and takes no new pod, and
the refusal names the node and why; a GPU in its grace period serves its pods and no one else; a
pod on a frozen node is never deleted (not even when the operator has no facts for it since it
started), a GPU really gone deletes its pod with the normal grace and only a deleted Node with
grace 0; after a switch from GFD labels to the agent the pods placed on GFD's stand-ins stay as
they are (same name, same spec) and their GPUs are counted once — also after an operator restart.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

from gpupin import constants, reasons
from gpupin.api.v1alpha1 import LLMDeployment
from gpupin.controller.cache import ClusterCache
from gpupin.controller.decide import decide, lost_gpus
from gpupin.controller.rollout import hints
from gpupin.inventory import gfd_uuid
from gpupin.kernel.state import Frozen, GPUAlias
from gpupin.placement import CurrentPod, Hold
from gpupin.planner import Planner
from gpupin.render import RenderConfig

from helpers import A10, GFD_A10, deployment, inventory, layout, models, node

QWEN3B = "Qwen/Qwen2.5-3B-Instruct"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
WHY = "annotation gpupin.dev/gpu-inventory is not JSON (Expecting value) (since 2026-11-27T12:00:00Z)"


def test_a_frozen_node_keeps_its_pods_and_takes_no_new_ones() -> None:
    cluster = inventory(node("box", A10, A10))
    chat = deployment("chat", models=models(QWEN3B))
    before = Planner(cluster).plan(chat)
    frozen = Frozen(nodes={"box": WHY})
    planner = Planner(cluster, frozen=frozen)
    current = [CurrentPod(p.gpu_uuids, p.models) for p in before.placements]
    kept = planner.plan(chat, current)
    assert kept.placed and kept.placements == before.placements, "its pod stays exactly as it is"
    refused = planner.plan(deployment("other", models=models(QWEN3B)))
    assert refused.reason == reasons.NODE_INVENTORY_PROBLEM
    assert f"node box: {WHY}" in refused.message and "takes new pods" in refused.message
    more = planner.plan(deployment("chat", models=models(QWEN3B), replicas=2), current)
    assert more.reason == reasons.NODE_INVENTORY_PROBLEM, "a second replica does not go there either"


def test_a_gpu_in_its_grace_period_serves_its_pods_and_no_one_else() -> None:
    cluster = inventory(node("box", A10, A10))
    going = cluster.nodes[0].gpus[0].uuid
    why = "GPU 0 is no longer reported by its annotation since …; its pods are deleted at … unless it returns"
    planner = Planner(cluster, [Hold(going, 2**30, True, "ns/old")], frozen=Frozen(gpus={going: why}))
    first = planner.plan(deployment("first", models=models(QWEN3B)))
    assert layout(first) == [("box", (1,), (QWEN3B,))]
    second = planner.plan(deployment("second", models=models(QWEN3B)))
    assert second.reason == reasons.INSUFFICIENT_GPUS
    assert f"Not counted, taking no new pods: node box: {why}" in second.message


def test_gfd_stand_ins_are_the_agent_gpus_for_holds_and_for_the_pods_kept() -> None:
    gfd = inventory(
        node("g", A10, A10).model_copy(
            update={
                "gpus": [
                    g.model_copy(update={"uuid": gfd_uuid("g", g.index), "name": "NVIDIA A10"})
                    for g in node("g", A10, A10).gpus
                ]
            }
        )
    )
    chat = deployment("chat", models=models(QWEN3B))
    placed = Planner(gfd, pinning="device-plugin").plan(chat)
    (placement,) = placed.placements
    assert placement.gpu_uuids == ("GFD-g-0",)
    agent = inventory(node("g", A10, A10))
    aliases = {
        gfd_uuid("g", i): GPUAlias(agent.nodes[0].gpus[i].uuid, gfd.nodes[0].gpus[i]) for i in range(2)
    }
    planner = Planner(
        agent,
        [Hold("GFD-g-0", 2**30, True, "default/chat")],
        pinning="device-plugin",
        frozen=Frozen(aliases=aliases),
    )
    other = planner.plan(deployment("other", models=models(QWEN3B)), commit=False)
    assert other.placements[0].gpu_uuids == (agent.nodes[0].gpus[1].uuid,), "GPU 0 is held under its old name"
    planner.release("default/chat")
    kept = planner.plan(chat, [CurrentPod(placement.gpu_uuids, placement.models)])
    assert kept.placements == placed.placements, "same pod name, same annotation: the pod is not replaced"


def _pod(obj: dict[str, Any], uid: str) -> dict[str, Any]:
    pod = copy.deepcopy(obj)
    pod["metadata"].update(uid=uid, resourceVersion="1")
    pod["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    return pod


def _body(deployment_: LLMDeployment) -> dict[str, Any]:
    return {
        **deployment_.model_dump(by_alias=True, exclude_none=True, mode="json"),
        "metadata": {
            "name": deployment_.metadata.name,
            "namespace": "default",
            "uid": "uid-d",
            "generation": 1,
        },
    }


def _node(name: str, annotation: str | None = None, labels: dict[str, str] | None = None) -> dict[str, Any]:
    gpus = {constants.GPU_RESOURCE: "2"}
    return {
        "metadata": {
            "name": name,
            "annotations": {constants.INVENTORY_ANNOTATION: annotation} if annotation else {},
            "labels": labels or {},
        },
        "status": {"capacity": gpus, "allocatable": gpus},
    }


def _reconcile(cache: ClusterCache, chat: LLMDeployment, config: RenderConfig) -> Any:
    """What the runtime does for one deployment, on the cache (where it is, so its pods count)."""
    cache.deployments.upsert({**_body(chat), "kind": "LLMDeployment", "apiVersion": "gpupin.dev/v1alpha1"})
    frozen = cache.frozen()
    planner = Planner(cache.inventory(), cache.holds(), config.pinning, frozen=frozen)
    planner.release("default/chat")
    pods = list(cache.pods.values())
    plan = planner.plan(chat, hints(pods), commit=False)
    return decide(
        _body(chat),
        chat,
        None,
        plan,
        pods,
        [],
        [],
        cache.inventory(),
        config,
        NOW,
        node_notes=frozen.nodes,
        gpu_aliases={u: a.uuid for u, a in frozen.aliases.items()},
    )


def test_a_node_switched_from_gfd_to_the_agent_keeps_its_pods_also_after_a_restart() -> None:
    config = RenderConfig(pinning="device-plugin")
    chat = deployment("chat", models=models(QWEN3B))
    agent = node("g", A10, A10)
    for restarted in (False, True):
        cache = ClusterCache()
        if not restarted:
            cache.set_node(_node("g", labels=GFD_A10))
        first = _reconcile(cache, chat, config)
        if restarted:  # the pod from the run before: placed on GFD's stand-in
            first = _reconcile(_gfd_cache(), chat, config)
        (created,) = [o for o in first.create if o["kind"] == "Pod"]
        assert (
            json.loads(created["metadata"]["annotations"][constants.PLACEMENT_ANNOTATION])["gpus"][0]["uuid"]
            == "GFD-g-0"
        )
        cache.pods.upsert(_pod(created, "uid-pod"))
        cache.set_node(_node("g", agent.to_annotation(), labels=GFD_A10))
        after = _reconcile(cache, chat, config)
        assert after.delete == [] and [o for o in after.create if o["kind"] == "Pod"] == [], restarted
        other = Planner(cache.inventory(), cache.holds(), "device-plugin", frozen=cache.frozen()).plan(
            deployment("other", models=models(QWEN3B)), commit=False
        )
        assert other.placements[0].gpu_uuids == (agent.gpus[1].uuid,), "GPU 0 is not given twice"


def _gfd_cache() -> ClusterCache:
    cache = ClusterCache()
    cache.set_node(_node("g", labels=GFD_A10))
    return cache


def test_pods_on_a_frozen_node_are_never_deleted_and_only_a_gone_node_means_grace_0() -> None:
    config = RenderConfig()
    chat = deployment("chat", models=models(QWEN3B))
    box = node("box", A10, A10)
    cache = ClusterCache()
    cache.set_node(_node("box", box.to_annotation()))
    (created,) = [o for o in _reconcile(cache, chat, config).create if o["kind"] == "Pod"]
    pod = _pod(created, "uid-pod")
    cache.pods.upsert(pod)
    cache.set_node(_node("box", "{broken"))
    frozen_run = _reconcile(cache, chat, config)
    assert frozen_run.delete == [] and [o for o in frozen_run.create if o["kind"] == "Pod"] == []
    (line,) = frozen_run.stale_nodes
    assert line.startswith("node box: annotation gpupin.dev/gpu-inventory is not JSON")
    assert line.endswith("; its pods keep running on the last good inventory")
    # an operator started while the annotation is broken has no last good inventory: the pod stays
    fresh = ClusterCache()
    fresh.pods.upsert(pod)
    fresh.set_node(_node("box", "{broken"))
    assert lost_gpus(pod, fresh.inventory(), fresh.node_notes()) is None
    assert fresh.unknown_gpus([pod]) is not None, "the runtime does not re-plan it (that would move it)"
    unannotated = ClusterCache()  # …and one whose node has no GPU facts at all any more
    unannotated.pods.upsert(pod)
    unannotated.set_node(_node("box"))
    assert "gpupin pods sit on it" in unannotated.node_notes()["box"]
    assert unannotated.unknown_gpus([pod]) is not None
    # a GPU a healthy report really lost, once the grace period is over: deleted with its grace
    cache.book.grace_seconds = 0
    held = json.loads(created["metadata"]["annotations"][constants.PLACEMENT_ANNOTATION])["gpus"][0]["uuid"]
    rest = [g for g in box.gpus if g.uuid != held]
    cache.set_node(_node("box", box.model_copy(update={"gpus": rest}).to_annotation()))
    cache.expire_gpu_losses()
    lost = _reconcile(cache, chat, config)
    assert [(o["metadata"]["name"], grace) for o, grace in lost.delete] == [(pod["metadata"]["name"], None)]
    cache.remove_node("box")
    gone = _reconcile(cache, chat, config)
    assert [grace for o, grace in gone.delete if o["kind"] == "Pod"] == [0], "no kubelet will confirm"
