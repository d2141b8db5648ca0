"""The inventory format, the node annotation and reading Node objects (annotation, else GFD).

Aspects: quantities and numbers for memory; duplicate indices/UUIDs rejected; the annotation
round-trips byte-identically (the agent relies on it to skip patches); GFD labels are used
only where they describe every card (count equals the node's nvidia.com/gpu), never guessed;
GFD labels of MIG devices are never read as whole GPUs (index i would not be the i-th card).
"""

from __future__ import annotations

import json
from pathlib import Path

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
from gpupin.loading import InputError, load_inventory

from helpers import EXAMPLES, FIXTURES, RTX_2060, RTX_4070, node

CASE_04 = FIXTURES / "cases" / "04-gfd-mig-single-labels"


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


def test_the_annotation_of_a_newer_agent_is_read_and_a_file_is_read_strictly(tmp_path: Path) -> None:
    """Operator and agent at different versions: fields the operator does not know, at the top
    level or per GPU, are ignored in the annotation; the inventory file people write keeps
    rejecting them, so a typo is caught."""
    original = node("workstation", RTX_4070, RTX_2060)
    body = json.loads(original.to_annotation())
    body["agentVersion"] = "9.9.9"
    body["gpus"][0]["temperatureC"] = 41
    body["gpus"][1]["nvlink"] = {"peers": []}
    assert node_inventory_from_annotation("workstation", json.dumps(body)) == original
    body["gpus"][0]["memory"] = "lots"
    with pytest.raises(
        NodeReadError,
        match=r"node workstation: annotation \S+ is invalid: gpus\.0\.memory \(GPU index 0\): 'lots' is not",
    ):
        node_inventory_from_annotation("workstation", json.dumps(body))
    typo = tmp_path / "inventory.yaml"
    typo.write_text(
        "nodes:\n- name: w\n  gpus:\n  - {index: 0, uuid: GPU-a, name: x, memory: 1Gi, "
        'computeCapability: "8.9", memroy: 2Gi}\n'
    )
    with pytest.raises(InputError, match="memroy"):
        load_inventory(typo)


def test_bad_annotation_names_the_node() -> None:
    with pytest.raises(NodeReadError, match=r"node w1: annotation gpupin\.dev/gpu-inventory is not JSON"):
        node_inventory_from_annotation("w1", "{nope")
    deep = '{"gpus": ' + "[" * 100_000 + "]" * 100_000 + "}"
    with pytest.raises(NodeReadError, match=r"node w1: .* is not JSON \(nested too deeply\)"):
        node_inventory_from_annotation("w1", deep)


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


def _status(node_obj: dict[str, object]) -> dict[str, dict[str, str]]:
    status = node_obj["status"]
    assert isinstance(status, dict)
    return status


def test_gfd_mig_single_node_is_skipped_with_a_problem_that_says_what_to_do() -> None:
    # vllm-project/vllm#5107's machine: one A100 80GB cut into two 3g.40gb instances; under
    # mig.strategy=single gpu.count (2) equals nvidia.com/gpu (2), so only the MIG signs tell
    inventory, problems = load_inventory(CASE_04 / "inventory.yaml")
    assert inventory.nodes == []
    (problem,) = problems
    for fragment in (
        "node gpu-node-1",
        "MIG devices, not whole GPUs",
        "product NVIDIA-A100-SXM4-80GB-MIG-3g.40gb",
        "nvidia.com/gpu.slices.ci, nvidia.com/gpu.slices.gi",
        "nvidia.com/mig.strategy=single",
        "gpupin does not place on MIG slices",
        "run the gpupin agent",
        "reports MIG mode per GPU",
    ):
        assert fragment in problem, (fragment, problem)


MIG_SIGNALS = {
    "product ends in -MIG-<profile>": (
        {constants.GFD_PRODUCT_LABEL: "NVIDIA-A100-SXM4-80GB-MIG-3g.40gb"},
        {},
    ),
    "product -MIG-INVALID (single, layout GFD cannot express)": (
        {constants.GFD_PRODUCT_LABEL: "NVIDIA-A100-SXM4-80GB-MIG-INVALID"},
        {},
    ),
    "MIG and time-slicing together": (
        {constants.GFD_PRODUCT_LABEL: "NVIDIA-A100-SXM4-80GB-MIG-1g.10gb-SHARED"},
        {},
    ),
    "gpu.slices label": ({"nvidia.com/gpu.slices.gi": "3"}, {}),
    "mixed strategy per-profile label": ({"nvidia.com/mig-3g.40gb.count": "2"}, {}),
    "mig-* capacity": ({}, {"capacity": {"nvidia.com/mig-3g.40gb": "2"}}),
    "mig-* allocatable": ({}, {"allocatable": {"nvidia.com/mig-3g.40gb": "2"}}),
}


@pytest.mark.parametrize(("labels", "resources"), MIG_SIGNALS.values(), ids=MIG_SIGNALS.keys())
def test_each_mig_signal_alone_excludes_the_node(
    labels: dict[str, str], resources: dict[str, dict[str, str]]
) -> None:
    # a whole-GPU node that passes every other check (count 4 = capacity 4 = allocatable 4) plus one sign
    node_obj = _node("a100", {**GFD_A100, **labels}, gpus="4")
    for field, extra in resources.items():
        _status(node_obj)[field].update(extra)
    with pytest.raises(NodeReadError, match="GFD labels describe MIG devices") as caught:
        node_inventory_from_node(node_obj)
    assert "run the gpupin agent" in str(caught.value)
    assert caught.value.kind == "mig", "the operator reports it as its own problem"
    inventory, problems = inventory_from_nodes([node_obj])
    assert inventory.nodes == [] and len(problems) == 1


def test_gpu_operator_whole_gpu_node_is_read_despite_mig_strategy_label() -> None:
    # What a GPU Operator install with mig.strategy=single writes on a whole-GPU node (MIG off):
    # GFD labels the strategy on every GPU node, so it is not a MIG sign on its own; neither is
    # a mig-* resource kubelet keeps at 0 after MIG was turned off
    labels = {
        **GFD_A100,
        "nvidia.com/mig.strategy": "single",
        "nvidia.com/mig.capable": "true",
        "nvidia.com/mig.config": "all-disabled",
        "nvidia.com/mig.config.state": "success",
        "nvidia.com/gpu.replicas": "1",
        "nvidia.com/gpu.sharing-strategy": "none",
    }
    node_obj = _node("a100", labels, gpus="4")
    _status(node_obj)["capacity"]["nvidia.com/mig-3g.40gb"] = "0"
    parsed = node_inventory_from_node(node_obj)
    assert parsed is not None
    assert [g.index for g in parsed.gpus] == [0, 1, 2, 3]
    assert parsed.gpus[0].name == "NVIDIA A100 SXM4 80GB"


@pytest.mark.parametrize(
    ("capacity", "allocatable", "readable"),
    [
        ("4", "4", True),
        ("4", None, True),  # a hand-written Node with capacity only
        (None, "4", True),
        ("6", "4", False),  # allocatable matches but the node has 6 devices: which 4 are these?
        ("4", "3", False),  # a card is unhealthy; its index is not known
        (None, None, False),
    ],
)
def test_gfd_count_must_match_every_stated_gpu_count(
    capacity: str | None, allocatable: str | None, readable: bool
) -> None:
    node_obj = _node("a100", GFD_A100)
    status = _status(node_obj)
    if capacity is not None:
        status["capacity"] = {"cpu": "64", "nvidia.com/gpu": capacity}
    if allocatable is not None:
        status["allocatable"] = {"cpu": "64", "nvidia.com/gpu": allocatable}
    if readable:
        parsed = node_inventory_from_node(node_obj)
        assert parsed is not None and len(parsed.gpus) == 4
    else:
        with pytest.raises(NodeReadError, match="describe one GPU model per node"):
            node_inventory_from_node(node_obj)


def test_gfd_count_against_a_node_that_lists_other_resources_but_no_gpus() -> None:
    node_obj = _node("a100", GFD_A100)
    _status(node_obj)["capacity"] = {"cpu": "64"}
    with pytest.raises(NodeReadError, match=r"capacity no nvidia\.com/gpu"):
        node_inventory_from_node(node_obj)


# --- GPU UUIDs at the boundary -------------------------------------------------------------------

GOOD_UUIDS = [
    "GPU-fb05d912-f869-e10e-78d7-dc7634975bba",  # NVML, the DRA driver
    "MIG-b2c4a1d0-3e5f-5a6b-9c7d-0e1f2a3b4c5d",
    "GPU-workstation-0",  # the fake inventories of tests and demos
    "GFD-ip-10-0-1-23.ec2.internal-0",  # gpupin's stand-in for a GFD-only node
    "GFD-" + "n" * 253 + "-15",  # the longest node name there is
]
BAD_UUIDS = [
    "GPU-a'b",
    'GPU-a"b',
    "GPU-a\\b",
    "GPU-a b",
    "GPU-a\nb",
    "GPU-a,GPU-b",
    "GPU-\u00e9",
    "",
    "GPU-",
    "all",  # NVIDIA_VISIBLE_DEVICES=all would hand a pod every GPU
    "gpu-a",
    "GPU-" + "a" * 297,
]


@pytest.mark.parametrize("uuid", GOOD_UUIDS)
def test_uuids_of_nvml_the_dra_driver_gfd_and_the_fixtures_are_read(uuid: str) -> None:
    body = json.loads(node("w", RTX_4070).to_annotation())
    body["gpus"][0]["uuid"] = uuid
    assert node_inventory_from_annotation("w", json.dumps(body)).gpus[0].uuid == uuid


@pytest.mark.parametrize("uuid", BAD_UUIDS)
def test_a_bad_uuid_makes_the_annotation_unreadable_naming_node_gpu_and_what_is_allowed(uuid: str) -> None:
    body = json.loads(node("w", RTX_4070, RTX_2060).to_annotation())
    body["gpus"][1]["index"] = 7
    body["gpus"][1]["uuid"] = uuid
    with pytest.raises(NodeReadError) as caught:
        node_inventory_from_annotation("w", json.dumps(body))
    message = str(caught.value)
    assert message.startswith(
        f"node w: annotation {constants.INVENTORY_ANNOTATION} is invalid: gpus.1.uuid (GPU index 7): "
    )
    assert "is not a GPU UUID; allowed: GPU-… or MIG-…" in message and "\n" not in message
    assert caught.value.kind == "unreadable"


def test_a_bad_uuid_in_an_inventory_file_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text(
        "nodes:\n- name: w\n  gpus:\n  - {index: 0, uuid: GPU-a, name: x, memory: 1Gi, computeCapability: '8.9'}\n"
        "  - {index: 1, uuid: \"GPU-b' || true || 'c\", name: x, memory: 1Gi, computeCapability: '8.9'}\n"
    )
    with pytest.raises(InputError) as caught:
        load_inventory(path)
    assert str(caught.value).startswith(
        f"{path}: nodes[0].gpus[1].uuid: \"GPU-b' || true || 'c\" is not a GPU UUID; allowed: GPU-… or MIG-…"
    )


def test_a_node_name_no_gfd_uuid_can_hold_is_unreadable_not_a_crash() -> None:
    """Node objects from a file (``kubectl get nodes -o yaml`` edited by hand) are not validated
    by an API server: the stand-in UUID ``GFD-<node>-<i>`` must still be one."""
    with pytest.raises(NodeReadError, match=r"^node a b: GFD labels are unusable \(uuid: 'GFD-a b-0' is not"):
        node_inventory_from_node(_node("a b", GFD_A100, gpus="4"))
