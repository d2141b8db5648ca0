"""The inventory format, the node annotation and reading Node objects (annotation, else GFD).

Aspects: quantities and numbers for memory; duplicate indices/UUIDs rejected; the annotation
round-trips byte-identically (the agent relies on it to skip patches); GFD labels are used
only where they describe every card (count equals the node's nvidia.com/gpu), never guessed.
"""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from gpupin import constants
from gpupin.inventory import (
    Inventory,
    NodeInventory,
    NodeReadError,
    inventory_from_nodes,
    node_inventory_from_annotation,
    node_inventory_from_node,
)
from gpupin.loading import load_inventory

from helpers import EXAMPLES, RTX_2060, RTX_4070, node


def test_example_inventory_loads() -> None:
    inventory, problems = load_inventory(EXAMPLES / "inventory" / "workstation.yaml")
    assert problems == []
    gpus = inventory.nodes[0].gpus
    assert [g.memory for g in gpus] == [12282 * 2**20, 6144 * 2**20]
    assert [g.compute_capability for g in gpus] == ["8.9", "7.5"]
    assert inventory.nodes[0].mixed


def test_duplicates_are_rejected() -> None:
    with pytest.raises(ValidationError, match="index 0 appears twice"):
        NodeInventory.model_validate(
            {
                "name": "n",
                "gpus": [
                    {"index": 0, "uuid": "GPU-a", "name": "x", "memory": 1, "computeCapability": "8.0"},
                    {"index": 0, "uuid": "GPU-b", "name": "x", "memory": 1, "computeCapability": "8.0"},
                ],
            }
        )
    with pytest.raises(ValidationError, match="appears twice"):
        Inventory(nodes=[node("a", RTX_4070), node("a", RTX_2060)])


def test_compute_capability_must_be_major_minor() -> None:
    with pytest.raises(ValidationError, match=r'"MAJOR\.MINOR"'):
        NodeInventory.model_validate(
            {
                "name": "n",
                "gpus": [
                    {"index": 0, "uuid": "GPU-a", "name": "x", "memory": 1, "computeCapability": "eight"}
                ],
            }
        )


def test_annotation_round_trip_is_byte_identical() -> None:
    original = node("workstation", RTX_4070, RTX_2060)
    text = original.to_annotation()
    assert "name" not in json.loads(text), "the Node's own name is implied"
    parsed = node_inventory_from_annotation("workstation", text)
    assert parsed == original
    assert parsed.to_annotation() == text
    assert json.loads(text)["gpus"][0]["memory"] == "12282Mi"


def test_bad_annotation_names_the_node() -> None:
    with pytest.raises(NodeReadError, match=r"node w1: annotation gpupin\.dev/gpu-inventory is not JSON"):
        node_inventory_from_annotation("w1", "{nope")


def _node(
    name: str,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    gpus: str | None = None,
) -> dict[str, object]:
    return {
        "kind": "Node",
        "metadata": {"name": name, "labels": labels or {}, "annotations": annotations or {}},
        "status": {
            "capacity": {"nvidia.com/gpu": gpus} if gpus else {},
            "allocatable": {"nvidia.com/gpu": gpus} if gpus else {},
        },
    }


GFD_A100 = {
    constants.GFD_PRODUCT_LABEL: "NVIDIA-A100-SXM4-80GB",
    constants.GFD_MEMORY_LABEL: "81920",
    constants.GFD_COUNT_LABEL: "4",
    constants.GFD_CC_MAJOR_LABEL: "8",
    constants.GFD_CC_MINOR_LABEL: "0",
}


def test_gfd_labels_used_when_they_describe_every_card() -> None:
    parsed = node_inventory_from_node(_node("a100", GFD_A100, gpus="4"))
    assert parsed is not None and len(parsed.gpus) == 4
    assert parsed.gpus[0].memory == 81920 * 2**20 and parsed.gpus[0].compute_capability == "8.0"
    assert not parsed.gpus[0].pinnable_by_uuid, "GFD has no UUIDs: pinned by index"


def test_gfd_on_a_mixed_node_is_unknown_not_guessed() -> None:
    # GFD on a 4070 + 2060 node describes one of them, with gpu.count=1, while the node has 2 GPUs
    labels = {
        **GFD_A100,
        constants.GFD_PRODUCT_LABEL: "NVIDIA-GeForce-RTX-4070",
        constants.GFD_COUNT_LABEL: "1",
    }
    with pytest.raises(NodeReadError, match="describe one GPU model per node"):
        node_inventory_from_node(_node("workstation", labels, gpus="2"))


def test_gfd_time_sliced_is_unknown() -> None:
    labels = {**GFD_A100, constants.GFD_PRODUCT_LABEL: "NVIDIA-A100-SXM4-80GB-SHARED"}
    with pytest.raises(NodeReadError, match="time-sliced"):
        node_inventory_from_node(_node("a100", labels, gpus="4"))


def test_annotation_wins_over_gfd_and_cpu_nodes_are_skipped() -> None:
    annotated = node("w", RTX_4070).to_annotation()
    inventory, problems = inventory_from_nodes(
        [
            _node("w", GFD_A100, {constants.INVENTORY_ANNOTATION: annotated}, gpus="4"),
            _node("cpu-only"),
            _node("mixed", {**GFD_A100, constants.GFD_COUNT_LABEL: "1"}, gpus="2"),
        ]
    )
    assert [n.name for n in inventory.nodes] == ["w"]
    assert inventory.nodes[0].gpus[0].name == "NVIDIA GeForce RTX 4070"
    assert len(problems) == 1 and "mixed" in problems[0]
