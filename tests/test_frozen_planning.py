"""Planning on a frozen inventory: pods stay, new pods go elsewhere.

Aspects: a frozen node keeps a deployment's pods exactly where they are and takes no new pod, and
the refusal names the node and why; a GPU in its grace period serves its pods and no one else;
GFD's stand-ins are the agent's GPUs for holds and for the pods kept (same name, same spec).
"""

from __future__ import annotations

from gpupin import reasons
from gpupin.inventory import gfd_uuid
from gpupin.kernel.state import Frozen, GPUAlias
from gpupin.placement import CurrentPod, Hold
from gpupin.planner import Planner

from helpers import A10, deployment, inventory, layout, models, node

QWEN3B = "Qwen/Qwen2.5-3B-Instruct"
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
