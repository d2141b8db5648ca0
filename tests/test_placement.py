"""The placement annotation: its public JSON shape, the round trip, and unreadable input.

The annotation is how the operator knows, after a restart, which GPU memory each pod holds; its
bytes are covered by the pod's spec hash, so its shape must not drift (a drift would replace every
serving pod at upgrade). Unreadable annotations are not placements: they neither hold GPUs nor
count as lost GPUs; a figure that cannot be read holds the whole GPU. Read strictly, a placement
that is not what gpupin writes is a problem named field by field, and its pod holds every GPU it
names wholly.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from gpupin import constants, reasons
from gpupin.controller.cache import ClusterCache
from gpupin.controller.decide import lost_gpus
from gpupin.controller.podstate import placement_of, placement_problem
from gpupin.placement import GPUAssignment, Hold, LaunchSettings, Placement, PlacementError
from gpupin.planner import Planner

from helpers import RTX_2060, RTX_4070, deployment, inventory, models, node

PLACEMENT = Placement(
    pod="chat-3f2a1c",
    node="workstation",
    models=("qwen2.5:14b",),
    gpus=(GPUAssignment(0, "GPU-workstation-0", "NVIDIA GeForce RTX 4070", 10 * 2**30),),
    exclusive=False,
    launch=LaunchSettings(context_length=4096),
)


def _pod(annotation: str, name: str = "chat-3f2a1c") -> dict[str, Any]:
    return {
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": f"uid-{name}",
            "annotations": {constants.PLACEMENT_ANNOTATION: annotation},
            "ownerReferences": [
                {
                    "apiVersion": constants.API_VERSION,
                    "kind": constants.KIND,
                    "name": "chat",
                    "controller": True,
                    "uid": "d",
                }
            ],
        },
        "status": {"phase": "Running"},
    }


def _owning_cache() -> ClusterCache:
    """A cache that knows the pods' deployment (default/chat, uid d): its pods count."""
    cache = ClusterCache()
    cache.deployments.upsert(
        {"kind": constants.KIND, "metadata": {"name": "chat", "namespace": "default", "uid": "d"}}
    )
    return cache


def test_the_annotation_keeps_its_public_shape() -> None:
    assert PLACEMENT.to_annotation() == (
        '{"exclusive":false,"gpus":[{"index":0,"name":"NVIDIA GeForce RTX 4070",'
        '"uuid":"GPU-workstation-0","vramBytes":10737418240}],"models":["qwen2.5:14b"],"node":"workstation"}'
    )


def test_a_pod_gives_back_its_placement_less_the_launch_settings() -> None:
    parsed = placement_of(_pod(PLACEMENT.to_annotation()))
    assert parsed == Placement(PLACEMENT.pod, PLACEMENT.node, PLACEMENT.models, PLACEMENT.gpus, False)
    assert parsed is not None and parsed.launch == LaunchSettings(), "launch settings ride in the container"


@pytest.mark.parametrize(
    "annotation", ["not json", "[]", '{"node": "workstation"}', '{"gpus": "GPU-workstation-0"}']
)
def test_an_annotation_that_is_no_placement_holds_nothing_and_loses_nothing(annotation: str) -> None:
    pod = _pod(annotation)
    assert placement_of(pod) is None
    assert lost_gpus(pod, inventory(node("workstation", RTX_4070))) is None, (
        "unreadable input is not a lost GPU"
    )
    cache = _owning_cache()
    cache.pods.upsert(pod)
    assert cache.holds() == [] and cache.gpus_per_node() == {}


def test_a_partly_unreadable_annotation_keeps_what_it_can_and_never_frees_a_gpu() -> None:
    """A figure that cannot be read counts as the whole GPU (before, it raised in the cache and
    stopped every reconcile); an entry without a UUID names no GPU; without a node, GPUs are found
    by UUID."""
    text = (
        '{"exclusive": false, "models": ["qwen2.5:14b"], "gpus": [1, {"index": 0}, '
        '{"uuid": "GPU-workstation-0", "index": null, "vramBytes": "10Gi"}]}'
    )
    pod = _pod(text)
    placement = placement_of(pod)
    assert placement is not None and placement.node == "" and placement.models == ("qwen2.5:14b",)
    assert placement.gpus == (GPUAssignment(0, "GPU-workstation-0", "", None),)
    cluster = inventory(node("workstation", RTX_4070))
    assert lost_gpus(pod, cluster) is None, "the GPU is there, on whichever node"
    assert lost_gpus(pod, inventory(node("elsewhere", RTX_2060))) == (
        "GPU GPU-workstation-0 has left the GPU inventory"
    )
    cache = _owning_cache()
    cache.pods.upsert(pod)
    (hold,) = cache.holds()
    assert hold.vram_bytes is None
    small = deployment("other", models=models("qwen2.5:0.5b"))
    refused = Planner(cluster, cache.holds()).plan(small)
    assert refused.reason == reasons.INSUFFICIENT_GPUS, "the unknown hold takes the whole GPU"


def _annotation(**change: Any) -> str:
    """The public shape with one field changed (None: removed), to break one thing at a time."""
    body: dict[str, Any] = json.loads(PLACEMENT.to_annotation())
    for path, value in change.items():
        target, key = (body["gpus"][0], path[5:]) if path.startswith("gpu0_") else (body, path)
        if value is None:
            del target[key]
        else:
            target[key] = value
    return json.dumps(body)


@pytest.mark.parametrize(
    ("annotation", "problem"),
    [
        ("not json", " is not JSON (Expecting value: line 1 column 1 (char 0))"),
        ("[]", " is an empty list, expected a JSON object"),
        (_annotation(node=None), ": node is missing, expected a node name (non-empty string)"),
        (_annotation(node=""), ": node is '', expected a node name (non-empty string)"),
        (_annotation(models="m"), ": models is 'm', expected a list of model names (strings)"),
        (_annotation(models=[1]), ": models is a list, expected a list of model names (strings)"),
        (_annotation(exclusive="yes"), ": exclusive is 'yes', expected true or false"),
        (_annotation(gpus=[]), ": gpus is an empty list, expected a non-empty list of GPUs"),
        (_annotation(gpus=["GPU-1"]), ": gpus[0] is 'GPU-1', expected an object"),
        (_annotation(gpu0_index=-1), ": gpus[0].index is -1, expected a GPU index (integer ≥ 0)"),
        (_annotation(gpu0_index=True), ": gpus[0].index is true, expected a GPU index (integer ≥ 0)"),
        (_annotation(gpu0_uuid=""), ": gpus[0].uuid is '', expected a GPU UUID (non-empty string)"),
        (_annotation(gpu0_name=None), ": gpus[0].name is missing, expected a product name (string)"),
        (_annotation(gpu0_vramBytes="x"), ": gpus[0].vramBytes is 'x', expected a byte count (integer ≥ 0)"),
        (_annotation(gpu0_vramBytes=-(2**33)), ": gpus[0].vramBytes is -8589934592, expected a byte count"),
        (_annotation(gpu0_vramBytes=1.5), ": gpus[0].vramBytes is 1.5, expected a byte count (integer ≥ 0)"),
        (_annotation(gpu0_vramBytes="y" * 100), ": gpus[0].vramBytes is 'yyyyyyyy"),
    ],
)
def test_the_strict_reading_names_the_field_and_what_is_allowed(annotation: str, problem: str) -> None:
    """A placement gpupin did not write is a problem of its pod, in one line a person can act on."""
    message = placement_problem(_pod(annotation))
    assert message is not None and message.startswith(
        "pod chat-3f2a1c: placement annotation gpupin.dev/placement" + problem
    )
    assert len(message) < 200, "a long value is cut short"
    with pytest.raises(PlacementError) as raised:
        Placement.parse("chat-3f2a1c", annotation)
    assert isinstance(raised.value, ValueError) and str(raised.value) in message


def test_the_strict_reading_accepts_what_gpupin_writes_and_nothing_twice() -> None:
    assert Placement.parse("chat-3f2a1c", PLACEMENT.to_annotation()) == placement_of(
        _pod(PLACEMENT.to_annotation())
    )
    assert placement_problem(_pod(PLACEMENT.to_annotation())) is None
    assert placement_problem(_pod(_annotation(future="ignored"))) is None, "unknown keys: a newer gpupin"
    body = json.loads(PLACEMENT.to_annotation())
    twice = json.dumps({**body, "gpus": body["gpus"] * 2})
    assert placement_problem(_pod(twice)) == (
        "pod chat-3f2a1c: placement annotation gpupin.dev/placement: gpus[1].uuid 'GPU-workstation-0' is "
        "listed twice, expected each GPU once"
    )
    missing = _pod("")
    del missing["metadata"]["annotations"]
    assert (
        placement_problem(missing) == "pod chat-3f2a1c: placement annotation gpupin.dev/placement is missing"
    )


@pytest.mark.parametrize("vram", [-(2**33), "x"])
def test_a_damaged_placement_of_a_gpupin_pod_holds_its_gpus_wholly(vram: object) -> None:
    """A negative figure must not make room for another model on the GPU (two 10 GiB models on a
    12 GiB card), and an unreadable one must not stop the allocator: the pod holds every GPU it
    names, wholly and exclusively, while its deployment's status says what is wrong."""
    text = _annotation(gpu0_vramBytes=vram, exclusive=False)
    cache = _owning_cache()
    cache.pods.upsert(_pod(text))
    assert cache.holds() == [Hold("GPU-workstation-0", None, True, "default/chat")]
    other = deployment("other", models=models("qwen2.5:14b"))
    refused = Planner(inventory(node("workstation", RTX_4070)), cache.holds()).plan(other)
    assert refused.reason == reasons.INSUFFICIENT_GPUS and "default/chat" in refused.message
