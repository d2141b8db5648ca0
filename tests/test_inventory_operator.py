"""The real operator when a node's GPU inventory breaks, flaps or lies (issue 13), on a real API server.

Aspects: an agent of a newer version (unknown fields in its annotation) changes nothing and its
new GPU is used; a corrupt annotation keeps the node's pods and last good GPUs, says so with a
Warning Event on the Node, places nothing new there until it is fixed; a GPU UUID two nodes report
freezes the node that copied it (the incumbent keeps serving and taking pods; after an operator
restart, both), is an Event and a metric, and ends when the copy goes; GFD labels are used only
where they can be right — a MIG node never, a GFD node not by index (visible-devices refuses it;
device-plugin uses it), labels that flap keep the last good description and delete nothing.
"""

from __future__ import annotations

import json
import socket
import urllib.request
from typing import Any

import pytest

from gpupin import constants
from gpupin.inventory import NodeInventory

from helpers import A10, GFD_A10, node
from kwok import Env, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

QWEN = [{"name": "Qwen/Qwen2.5-3B-Instruct"}]


def _uids(env: Env) -> dict[str, str]:
    """pod name → uid, of the pods not terminating."""
    return {p["metadata"]["name"]: p["metadata"]["uid"] for p in env.pods()}


def _visible(pod: dict[str, Any]) -> str | None:
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    return env.get("NVIDIA_VISIBLE_DEVICES")


def _node_events(env: Env, name: str, reason: str) -> list[dict[str, Any]]:
    items = env.cluster.kube.request(
        "GET",
        "/api/v1/namespaces/default/events",
        params={"fieldSelector": f"involvedObject.kind=Node,involvedObject.name={name}"},
    ).get("items")
    return [e for e in items or [] if e["reason"] == reason]


def _annotate(env: Env, name: str, text: str | None) -> None:
    env.cluster.kube.request(
        "PATCH",
        f"/api/v1/nodes/{name}",
        {"metadata": {"annotations": {constants.INVENTORY_ANNOTATION: text}}},
        content_type="application/merge-patch+json",
    )


def _refused(env: Env, name: str) -> dict[str, Any]:
    return wait_for(env.placed(name, "False"), what=f"{name} refused")


def test_a_newer_agents_annotation_changes_nothing_and_its_new_gpu_is_used(env: Env) -> None:
    box = env.node("box", A10)
    env.operator()
    env.apply("chat", models=QWEN)
    wait_for(env.placed("chat"), what="chat placed")
    before = wait_for(lambda: _uids(env), what="chat's pod")
    # the agent restarts at a newer version: fields this operator does not know, and a second GPU
    newer = node(box.name, A10, A10)
    body = json.loads(newer.to_annotation())
    body["schemaVersion"] = 2
    body["gpus"][0]["temperatureC"] = 41
    body["gpus"][1]["nvlink"] = {"peers": [body["gpus"][0]["uuid"]]}
    _annotate(env, box.name, json.dumps(body))
    env.apply("other", models=QWEN)
    wait_for(env.placed("other"), what="other placed on the GPU only the newer annotation lists")
    pods = wait_for(lambda: len(env.pods()) == 2 and env.pods(), what="two pods")
    other = next(p for p in pods if p["metadata"]["name"].startswith("other-"))
    assert _visible(other) == newer.gpus[1].uuid
    assert {n: u for n, u in _uids(env).items() if n.startswith("chat-")} == before, "chat's pod untouched"
    assert not _node_events(env, box.name, "GPUInventoryUnreadable")


def test_a_corrupt_annotation_keeps_the_pods_and_places_nothing_new_until_fixed(env: Env) -> None:
    box = env.node("box", A10, A10)
    env.operator()
    env.apply("chat", models=QWEN)
    wait_for(env.placed("chat"), what="chat placed")
    before = wait_for(lambda: _uids(env), what="chat's pod")
    _annotate(env, box.name, "{not json")
    (event,) = wait_for(
        lambda: _node_events(env, box.name, "GPUInventoryUnreadable"), what="a Warning Event on the Node"
    )
    assert event["type"] == "Warning" and event["involvedObject"]["kind"] == "Node"
    assert f"node {box.name}: annotation {constants.INVENTORY_ANNOTATION} is not JSON" in event["message"]
    assert "the pods there keep running" in event["message"]
    env.apply("other", models=QWEN)
    refused = _refused(env, "other")
    assert refused["reason"] == "NodeInventoryProblem"
    assert f"node {box.name}: annotation {constants.INVENTORY_ANNOTATION} is not JSON" in refused["message"]
    assert _uids(env) == before, "chat's pod stays, nothing new on the node"
    _annotate(env, box.name, box.to_annotation())
    wait_for(env.placed("other"), what="other placed once the annotation is fixed")
    wait_for(lambda: len(env.pods()) == 2, what="other's pod")
    assert {n: u for n, u in _uids(env).items() if n in before} == before
    wait_for(lambda: _node_events(env, box.name, "GPUInventoryRestored"), what="a Normal Event: read again")


def test_a_node_that_copies_a_uuid_freezes_itself_and_moves_nothing(env: Env) -> None:
    """A node reports a GPU another node has had (a copied inventory, or a compromised node writing its
    own annotation): the copier is frozen, the incumbent keeps serving and taking pods. After an
    operator restart neither is the incumbent (the start-up list is judged as one batch): both frozen,
    still no pod moved."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    first = env.node("first", A10, A10)
    operator = env.operator("--metrics-port", str(port))
    env.apply("chat", models=QWEN)
    wait_for(env.placed("chat"), what="chat placed")
    before = wait_for(lambda: _uids(env), what="chat's pod")
    copy = NodeInventory(name=f"copy-{env.suffix}", gpus=first.gpus)  # a copied fake inventory
    env.cluster.add_node(copy)
    env.nodes.append(copy.name)
    (event,) = wait_for(lambda: _node_events(env, copy.name, "DuplicateGPUUUID"), what="Event on the copy")
    assert first.gpus[0].uuid in event["message"] and f"reported by node {first.name}" in event["message"]
    env.apply("other", models=QWEN)
    wait_for(env.placed("other"), what="other placed on the incumbent's free GPU")
    (other,) = wait_for(
        lambda: [p for p in env.pods() if p["metadata"]["name"].startswith("other-")], what="other's pod"
    )
    assert _placement_node(other) == first.name
    assert {n: u for n, u in _uids(env).items() if n in before} == before, "no pod moved"
    assert not _node_events(env, first.name, "DuplicateGPUUUID"), "the incumbent is not frozen"
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert f'gpupin_node_inventory_problem{{node="{copy.name}",problem="duplicate-uuid"}} 1.0' in text
    assert f'node="{first.name}",problem="duplicate-uuid"' not in text

    operator.stop()
    serving = _uids(env)
    env.operator()
    frozen = wait_for(
        lambda: _node_events(env, first.name, "DuplicateGPUUUID"), what="after a restart: both frozen"
    )
    assert len(frozen) == 1 and copy.name in frozen[0]["message"]
    env.apply("third", models=QWEN)
    refused = _refused(env, "third")
    assert refused["reason"] == "NodeInventoryProblem", refused
    assert _uids(env) == serving, "no pod moved"
    env.cluster.delete_node(copy.name)
    wait_for(
        lambda: _node_events(env, first.name, "GPUInventoryRestored"),
        what="first restored once the copy is gone",
    )
    env.delete("other")
    wait_for(env.placed("third"), what="third placed on first once other's GPU is free")
    assert {n: u for n, u in _uids(env).items() if n in before} == before, "chat's pod never moved"


def _placement_node(pod: dict[str, Any]) -> str:
    return str(json.loads(pod["metadata"]["annotations"][constants.PLACEMENT_ANNOTATION])["node"])


GFD_A10_PRESENT = {**GFD_A10, "nvidia.com/gpu.present": "true"}
# tests/fixtures/cases/04-gfd-mig-single-labels: an A100 80GB as two 3g.40gb instances, mig.strategy=single
GFD_MIG_SINGLE = {
    "nvidia.com/gpu.present": "true",
    "nvidia.com/mig.strategy": "single",
    constants.GFD_PRODUCT_LABEL: "NVIDIA-A100-SXM4-80GB-MIG-3g.40gb",
    constants.GFD_COUNT_LABEL: "2",
    "nvidia.com/gpu.replicas": "1",
    constants.GFD_MEMORY_LABEL: "40192",
    constants.GFD_CC_MAJOR_LABEL: "8",
    constants.GFD_CC_MINOR_LABEL: "0",
    "nvidia.com/gpu.slices.gi": "3",
    "nvidia.com/gpu.slices.ci": "3",
}


def _gfd_node(env: Env, name: str, labels: dict[str, str], gpus: int) -> str:
    """A KWOK node with GFD labels and the device plugin's nvidia.com/gpu, without the agent."""
    full = f"{name}-{env.suffix}"
    resources = {"cpu": "64", "memory": "512Gi", "pods": "110", constants.GPU_RESOURCE: str(gpus)}
    env.cluster.kube.request(
        "POST",
        "/api/v1/nodes",
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": full,
                "annotations": {"kwok.x-k8s.io/node": "fake"},
                "labels": {"kubernetes.io/hostname": full, "type": "kwok", **labels},
            },
            "status": {
                "capacity": resources,
                "allocatable": resources,
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
            },
        },
    )
    env.nodes.append(full)
    return full


def _set_allocatable(env: Env, name: str, gpus: int) -> None:
    env.cluster.kube.request(
        "PATCH",
        f"/api/v1/nodes/{name}/status",
        {"status": {"allocatable": {constants.GPU_RESOURCE: str(gpus)}}},
        content_type="application/merge-patch+json",
    )


def test_gfd_is_used_only_where_it_can_be_right_and_flapping_labels_move_nothing(env: Env) -> None:
    mig = _gfd_node(env, "mig", GFD_MIG_SINGLE, 2)
    gfd = _gfd_node(env, "gfd", GFD_A10_PRESENT, 2)
    pinned = env.operator()  # visible-devices: would pin by an index GFD does not give
    env.apply("chat", models=QWEN)
    refused = _refused(env, "chat")
    assert refused["reason"] == "PinningUnsupported" and "run the gpupin agent" in refused["message"]
    assert gfd in refused["message"] and "device-plugin" in refused["message"]
    (event,) = wait_for(lambda: _node_events(env, mig, "MIGNotUsed"), what="the MIG node's Event")
    assert "GFD labels describe MIG devices" in event["message"]
    assert env.pods() == []
    pinned.stop()
    env.operator("--pinning", "device-plugin")  # the kubelet picks among alike GPUs: no index needed
    wait_for(env.placed("chat"), what="chat placed on the GFD node by count")
    (pod,) = wait_for(env.pods, what="chat's pod")
    assert pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ][0]["matchFields"][0]["values"] == [gfd], "never on the MIG node"
    assert _visible(pod) is None, "nothing pinned by index"
    assert pod["spec"]["containers"][0]["resources"]["limits"][constants.GPU_RESOURCE] == "1"
    before = _uids(env)
    # the device plugin restarts: allocatable drops, GFD's count no longer matches
    _set_allocatable(env, gfd, 1)
    wait_for(lambda: _node_events(env, gfd, "GPUInventoryUnreadable"), what="the flap reported")
    env.apply("other", models=QWEN)
    assert _refused(env, "other")["reason"] == "NodeInventoryProblem"
    assert _uids(env) == before, "nothing deleted on a flap"
    _set_allocatable(env, gfd, 2)
    wait_for(env.placed("other"), what="other placed once the labels describe the node again")
    wait_for(lambda: len(env.pods()) == 2, what="other's pod")
    # the labels now describe other cards: GFD cannot say which one changed, so nothing moves
    _, chat_uid = next(iter(before.items()))
    env.cluster.kube.request(
        "PATCH",
        f"/api/v1/nodes/{gfd}",
        {
            "metadata": {
                "labels": {constants.GFD_PRODUCT_LABEL: "NVIDIA-L4", constants.GFD_MEMORY_LABEL: "23034"}
            }
        },
        content_type="application/merge-patch+json",
    )
    (changed,) = wait_for(lambda: _node_events(env, gfd, "GFDLabelsChanged"), what="the change reported")
    assert "cannot say which card changed" in changed["message"]
    assert chat_uid in _uids(env).values() and len(env.pods()) == 2
