"""A node's GPUs over time: what the operator plans on when a node's GPU facts change or break.

Aspects: unreadable or missing facts keep the node's last good inventory (frozen: its pods stay, no
new pod goes there) and say so; a healthy report without a GPU keeps it for the grace period, then
lets it go (an explicit empty list too, the node itself staying known); a UUID two nodes report
freezes both and evicts nothing; GFD labels that flap or change keep the last good inventory; a
switch from GFD to the agent renames GPUs (held by the same pods, counted once) instead of losing
them; only a deleted Node object loses its GPUs at once. Each problem is news once (for Events) and
a metric while it lasts.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from gpupin import constants
from gpupin.controller.metrics import NodeInventoryProblems
from gpupin.controller.nodeinventory import NodeBook
from gpupin.controller.nodewatch import event_message
from gpupin.inventory import NodeInventory

from helpers import A10, A100_80, GFD_A10, L4, gpu, node


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _book(grace: float = 60.0) -> tuple[NodeBook, Clock]:
    clock = Clock()
    return NodeBook(grace, clock, lambda: datetime(2026, 11, 27, 12, 0, tzinfo=UTC)), clock


def node_obj(
    name: str,
    annotation: str | None = None,
    labels: dict[str, str] | None = None,
    gpus: str | None = None,
) -> dict[str, Any]:
    resources = {constants.GPU_RESOURCE: gpus} if gpus else {}
    return {
        "metadata": {
            "name": name,
            "annotations": {constants.INVENTORY_ANNOTATION: annotation} if annotation is not None else {},
            "labels": labels or {},
        },
        "status": {"capacity": dict(resources), "allocatable": dict(resources)},
    }


def _gpus(book: NodeBook, name: str) -> list[str]:
    inventory, _ = book.inventory()
    return [g.uuid for n in inventory.nodes if n.name == name for g in n.gpus]


def test_an_unreadable_annotation_keeps_the_last_good_inventory_and_freezes_the_node() -> None:
    book, _ = _book()
    box = node("box", A10, A10)
    assert book.read("box", node_obj("box", box.to_annotation()))
    assert book.changes() == []
    assert not book.read("box", node_obj("box", box.to_annotation())), "the same facts change nothing"
    assert book.read("box", node_obj("box", "{not json")), "frozen: no new pods"
    assert _gpus(book, "box") == [g.uuid for g in box.gpus], "its pods keep their GPUs"
    _, frozen = book.inventory()
    assert "is not JSON" in frozen.nodes["box"] and "since 2026-11-27T12:00:00Z" in frozen.nodes["box"]
    ((name, problem, gpus),) = book.changes()
    assert (name, problem and problem.kind, gpus) == ("box", "unreadable", 2)
    text = event_message(name, problem, gpus)
    assert text.startswith("node box: annotation gpupin.dev/gpu-inventory is not JSON")
    assert "keeps its last good inventory (2 GPU(s))" in text and "no new pod is placed there" in text
    assert book.changes() == [], "news once"
    # a known field of the wrong type is unreadable too, not a change of GPUs
    body = json.loads(box.to_annotation())
    body["gpus"][1]["memory"] = "lots"
    book.read("box", node_obj("box", json.dumps(body)))
    assert _gpus(book, "box") == [g.uuid for g in box.gpus]
    assert "memory" in book.problems()["box"].message and book.changes() == []
    assert book.read("box", node_obj("box", box.to_annotation()))
    assert book.inventory()[1].nodes == {}
    assert [(n, p) for n, p, _ in book.changes()] == [("box", None)]


def test_a_bad_gpu_uuid_in_the_annotation_freezes_the_node_naming_the_gpu() -> None:
    """The UUID reaches env vars, labels and CEL: one with a quote makes the facts unreadable —
    the node keeps its last good inventory and takes no new pods — never a crash."""
    book, _ = _book()
    box = node("box", A10, A10)
    book.read("box", node_obj("box", box.to_annotation()))
    body = json.loads(box.to_annotation())
    body["gpus"][1]["uuid"] = "GPU-x' || true || 'y"
    assert book.read("box", node_obj("box", json.dumps(body))), "frozen: no new pods"
    assert _gpus(book, "box") == [g.uuid for g in box.gpus], "its pods keep their GPUs"
    problem = book.problems()["box"]
    assert problem.kind == "unreadable" and problem.freezes
    assert problem.message.startswith(
        "node box: annotation gpupin.dev/gpu-inventory is invalid: gpus.1.uuid (GPU index 1): "
        "\"GPU-x' || true || 'y\" is not a GPU UUID; allowed: GPU-… or MIG-…"
    )


def test_missing_facts_after_having_gpus_are_not_zero_gpus() -> None:
    book, _ = _book()
    box = node("box", A10)
    book.read("box", node_obj("box", box.to_annotation()))
    book.read("box", node_obj("box"))  # the annotation removed, no other source
    assert _gpus(book, "box") == [box.gpus[0].uuid]
    assert book.problems()["box"].kind == "missing"
    assert "no GPU facts any more" in book.problems()["box"].message
    book.read("cpu", node_obj("cpu"))
    assert "cpu" not in book.problems() and "cpu" not in [n.name for n in book.inventory()[0].nodes]


def test_a_gpu_a_healthy_source_stops_reporting_leaves_after_the_grace_period() -> None:
    book, clock = _book(grace=60)
    box = node("box", A10, A10)
    book.read("box", node_obj("box", box.to_annotation()))
    first, second = box.gpus
    assert book.read("box", node_obj("box", NodeInventory(name="box", gpus=[second]).to_annotation()))
    assert _gpus(book, "box") == [first.uuid, second.uuid], "kept for its pods during the grace period"
    _, frozen = book.inventory()
    assert first.uuid in frozen.gpus and "deleted at 2026-11-27T12:01:00Z" in frozen.gpus[first.uuid]
    assert frozen.nodes == {}, "the node itself still takes new pods on its other GPU"
    assert book.problems()["box"].kind == "gpu-gone"
    assert book.next_expiry() == 1060
    clock.now = 1059
    assert not book.expire()
    clock.now = 1060
    assert book.expire()
    assert _gpus(book, "box") == [second.uuid]
    assert "box" not in book.problems() and book.next_expiry() is None
    # a GPU back within the grace period is kept, and the problem ends
    book.read("box", node_obj("box", NodeInventory(name="box", gpus=[]).to_annotation()))
    clock.now = 1070
    book.read("box", node_obj("box", NodeInventory(name="box", gpus=[second]).to_annotation()))
    clock.now = 2000
    assert not book.expire()
    assert _gpus(book, "box") == [second.uuid] and "box" not in book.problems()


def test_a_heartbeat_is_not_read_again_and_any_change_of_facts_is(monkeypatch: Any) -> None:
    """A Node's status is rewritten on every heartbeat (its conditions): those events carry the same
    facts and are not read again; a change of annotation, labels or GPU resources is."""
    from gpupin.controller import nodeinventory

    reads: list[str] = []
    real = nodeinventory.read_node
    monkeypatch.setattr(nodeinventory, "read_node", lambda n, s=None: reads.append("read") or real(n, s))
    book, _ = _book()
    box = node("box", A10, A10)
    obj = node_obj("box", box.to_annotation())
    assert book.read("box", obj) and len(reads) == 1
    beat = {**obj, "status": {**obj["status"], "conditions": [{"type": "Ready", "status": "True"}]}}
    assert not book.read("box", beat) and len(reads) == 1, "a heartbeat: not read again"
    relabelled = {**beat, "metadata": {**beat["metadata"], "labels": {"zone": "b"}}}
    assert not book.read("box", relabelled) and len(reads) == 2, "new labels: read (same GPUs)"
    fewer = node_obj("box", NodeInventory(name="box", gpus=[box.gpus[1]]).to_annotation())
    assert book.read("box", fewer) and len(reads) == 3
    assert book.problems()["box"].kind == "gpu-gone"
    book.read("box", fewer)
    assert len(reads) == 4, "within a grace period every report is read (a GPU may come back)"


def test_an_explicit_empty_list_is_a_real_report_and_the_node_stays_known() -> None:
    book, clock = _book(grace=5)
    box = node("box", A10)
    book.read("box", node_obj("box", box.to_annotation()))
    book.read("box", node_obj("box", NodeInventory(name="box", gpus=[]).to_annotation()))
    assert _gpus(book, "box") == [box.gpus[0].uuid]
    clock.now += 5
    assert book.expire()
    inventory, frozen = book.inventory()
    assert [(n.name, n.gpus) for n in inventory.nodes] == [("box", [])], (
        "the Node is alive: its pods are deleted with their grace, not at once"
    )
    assert frozen.nodes == {} and frozen.gpus == {}


def test_a_uuid_another_node_copies_freezes_the_copier_and_evicts_nothing() -> None:
    """b reports a's GPU (a copied inventory, or a compromised node writing its own annotation): a
    had it in its last good inventory and keeps serving and taking pods; b is frozen."""
    book, _ = _book()
    a = node("a", A10, A10)
    book.read("a", node_obj("a", a.to_annotation()))
    copied = NodeInventory(name="b", gpus=[a.gpus[0], gpu(1, L4, uuid="GPU-b-1")])
    assert book.read("b", node_obj("b", copied.to_annotation()))
    problems = book.problems()
    assert {n: p.kind for n, p in problems.items()} == {"b": "duplicate-uuid"}
    assert f"GPU {a.gpus[0].uuid} is reported by node a too" in problems["b"].message
    inventory, frozen = book.inventory()
    assert set(frozen.nodes) == {"b"}
    assert _gpus(book, "a") == [g.uuid for g in a.gpus], "a keeps every GPU its pods hold"
    assert _gpus(book, "b") == ["GPU-b-1"], "b without a past keeps only what no other node reports"
    assert len({g.uuid for n in inventory.nodes for g in n.gpus}) == 3
    book.read("a", node_obj("a", a.to_annotation()))  # a's agent writes again: still the incumbent
    assert set(book.problems()) == {"b"}
    assert book.remove("b")
    assert book.problems() == {} and book.inventory()[1].nodes == {}


def test_a_uuid_two_nodes_of_one_batch_report_freezes_both() -> None:
    """Neither is the incumbent (the start-up list is judged as one batch: the order of a LIST must not
    crown a copier): both frozen with what they report (nothing is placed there, nothing evicted)."""
    book, _ = _book()
    a = node("a", A10, A10)
    copied = NodeInventory(name="b", gpus=[a.gpus[0], gpu(1, L4, uuid="GPU-b-1")])
    book.begin_batch()
    assert not book.read("a", node_obj("a", a.to_annotation()))
    assert not book.read("b", node_obj("b", copied.to_annotation()))
    assert book.end_batch()
    problems = book.problems()
    assert {n: p.kind for n, p in problems.items()} == {"a": "duplicate-uuid", "b": "duplicate-uuid"}
    assert f"GPU {a.gpus[0].uuid} is reported by node b too" in problems["a"].message
    assert set(book.inventory()[1].nodes) == {"a", "b"}
    assert sorted(g.uuid for n in book.inventory()[0].nodes for g in n.gpus) == sorted(
        [*(g.uuid for g in a.gpus), "GPU-b-1"]
    ), "each GPU once in the planning inventory"
    book.read("a", node_obj("a", a.to_annotation()))  # a's agent writes again: no incumbent yet
    assert set(book.problems()) == {"a", "b"}
    assert book.remove("b")
    assert book.problems() == {} and _gpus(book, "a") == [g.uuid for g in a.gpus]


def test_a_compromised_node_cannot_freeze_the_nodes_whose_uuids_it_claims() -> None:
    book, _ = _book()
    victims = [node(f"v{i}", A10) for i in range(2)]
    for victim in victims:
        book.read(victim.name, node_obj(victim.name, victim.to_annotation()))
    evil = NodeInventory(name="evil", gpus=[gpu(i, A10, uuid=v.gpus[0].uuid) for i, v in enumerate(victims)])
    book.read("evil", node_obj("evil", evil.to_annotation()))
    assert {n: p.kind for n, p in book.problems().items()} == {"evil": "duplicate-uuid"}
    assert set(book.inventory()[1].nodes) == {"evil"}


def test_gfd_labels_that_flap_or_change_keep_the_last_good_description() -> None:
    book, _ = _book()
    book.read("g", node_obj("g", labels=GFD_A10, gpus="2"))
    assert _gpus(book, "g") == ["GFD-g-0", "GFD-g-1"]
    before = book.inventory()[0]
    book.read("g", node_obj("g", labels=GFD_A10, gpus="1"))  # the device plugin restarting: count ≠ 2
    assert book.problems()["g"].kind == "unreadable" and book.inventory()[0] == before
    book.read("g", node_obj("g", labels=GFD_A10, gpus="2"))
    assert book.problems() == {}
    one = {**GFD_A10, constants.GFD_COUNT_LABEL: "1"}
    book.read("g", node_obj("g", labels=one, gpus="1"))
    problem = book.problems()["g"]
    assert problem.kind == "gfd-changed" and "cannot say which card changed" in problem.message
    assert book.inventory()[0] == before, "nothing is deleted on GFD's word"
    assert book.inventory()[1].nodes["g"]


def test_a_mig_gfd_node_is_frozen_with_its_own_problem() -> None:
    book, _ = _book()
    mig = {**GFD_A10, constants.GFD_PRODUCT_LABEL: "NVIDIA-A100-SXM4-80GB-MIG-3g.40gb"}
    book.read("m", node_obj("m", labels=mig, gpus="2"))
    assert book.problems()["m"].kind == "mig"
    assert "m" in book.inventory()[1].nodes and _gpus(book, "m") == []


def test_a_switch_from_gfd_to_the_agent_renames_the_gpus() -> None:
    book, _ = _book()
    book.read("g", node_obj("g", labels=GFD_A10, gpus="2"))
    agent = node("g", A10, A10)
    assert book.read("g", node_obj("g", agent.to_annotation(), labels=GFD_A10, gpus="2"))
    _, frozen = book.inventory()
    assert _gpus(book, "g") == [g.uuid for g in agent.gpus], "no GFD stand-in is kept beside its card"
    assert frozen.gpus == {} and book.problems() == {}, "renamed, not lost"
    assert {u: a.uuid for u, a in frozen.aliases.items()} == {
        "GFD-g-0": agent.gpus[0].uuid,
        "GFD-g-1": agent.gpus[1].uuid,
    }
    assert frozen.aliases["GFD-g-0"].was.name == "NVIDIA A10"
    # the other way round: GFD labels that agree with the agent keep the agent's UUIDs
    assert not book.read("g", node_obj("g", labels=GFD_A10, gpus="2"))
    assert _gpus(book, "g") == [g.uuid for g in agent.gpus]


def test_a_gfd_stand_in_of_another_product_is_lost_not_renamed() -> None:
    book, clock = _book(grace=1)
    book.read("g", node_obj("g", labels=GFD_A10, gpus="2"))
    book.read("g", node_obj("g", node("g", A100_80, A100_80).to_annotation()))
    assert book.inventory()[1].aliases == {} and book.problems()["g"].kind == "gpu-gone"
    clock.now += 1
    book.expire()
    assert _gpus(book, "g") == ["GPU-g-0", "GPU-g-1"]


def test_a_deleted_node_loses_its_gpus_at_once() -> None:
    book, _ = _book()
    box = node("box", A10)
    book.read("box", node_obj("box", "{bad"))
    book.read("box", node_obj("box", box.to_annotation()))
    assert book.remove("box")
    assert book.inventory()[0].nodes == [] and book.problems() == {}
    assert not book.remove("box")


def test_node_problems_are_a_metric_while_they_last() -> None:
    (family,) = NodeInventoryProblems(lambda: {"b": "unreadable", "a": "duplicate-uuid"}).collect()
    assert family.name == "gpupin_node_inventory_problem"
    assert [(s.labels, s.value) for s in family.samples] == [
        ({"node": "a", "problem": "duplicate-uuid"}, 1),
        ({"node": "b", "problem": "unreadable"}, 1),
    ]
