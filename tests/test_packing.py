"""Packing a set of deployments: GPU choice by what GPUs are scarce for, the batch planner
(:func:`gpupin.packing.plan_all`), planner trials, and the reason a tensor-parallel group is
refused when GPUs are big enough but too few on any node.

How close the batch planner comes to an exact solver is ``tests/test_packing_quality.py`` (and
``make bench-packing``).
"""

from __future__ import annotations

import random

from gpupin import reasons
from gpupin.api.v1alpha1 import LLMDeployment
from gpupin.kernel.context import UNEXPLAINED
from gpupin.packing import plan_all
from gpupin.planner import Planner

from helpers import A10, A100_80, T4, deployment, inventory, layout, node
from packing_model import fleet, shuffled, violations

V100 = ("Tesla V100-SXM2-32GB", "32768Mi", "7.0")


def _ollama(name: str, vram: str, replicas: int = 1) -> LLMDeployment:
    return deployment(
        name, engine="ollama", models=[{"name": f"{name}:latest", "vram": vram}], replicas=replicas
    )


def _vllm(name: str, vram: str, tp: int = 1, replicas: int = 1) -> LLMDeployment:
    return deployment(
        name,
        engine="vllm",
        models=[{"name": f"org/{name}", "vram": vram}],
        tensorParallelSize=tp,
        replicas=replicas,
    )


def test_a_shared_server_opens_an_old_gpu_before_one_an_owning_engine_can_use() -> None:
    """The V100 is the bigger card, but vLLM cannot use it: the Ollama model goes there, and the
    A10 stays free for vLLM (best fit alone chose the A10 and refused vLLM)."""
    planner = Planner(inventory(node("n", A10, V100)))
    chat = planner.plan(_ollama("chat", "10Gi"))
    served = planner.plan(_vllm("api", "18Gi"))
    assert layout(chat) == [("n", (1,), ("chat:latest",))]
    assert served.placed and layout(served) == [("n", (0,), ("org/api",))]


def test_a_shared_model_joins_a_shared_gpu_before_opening_a_free_one() -> None:
    """A small model goes beside the big one on the A100 rather than on the free T4, which a
    vLLM deployment then gets."""
    planner = Planner(inventory(node("n", A100_80, T4)))
    planner.plan(_ollama("big", "30Gi"))
    small = planner.plan(_ollama("small", "4Gi"))
    served = planner.plan(_vllm("api", "10Gi"))
    assert layout(small) == [("n", (0,), ("small:latest",))]
    assert served.placed and layout(served) == [("n", (1,), ("org/api",))]


def test_big_enough_gpus_too_few_on_any_node_are_too_few_gpus_not_too_little_vram() -> None:
    cluster = inventory(node("a100s", A100_80, A100_80, A100_80, A100_80), node("t4s", *[T4] * 8))
    result = Planner(cluster).plan(_vllm("big", "200Gi", tp=8))
    assert result.reason == reasons.TOO_FEW_GPUS
    assert "the most on one node is 4 (a100s:" in result.message
    assert "Instead: tensorParallelSize 4 (a100s:" in result.message
    assert Planner(cluster).plan(_vllm("big", "200Gi", tp=4)).placed  # the advice works


def test_too_few_big_enough_gpus_advises_no_group_size_they_cannot_hold() -> None:
    """400 GiB over 4 A100s is 100 GiB a rank: too big for them, so no smaller size is offered."""
    cluster = inventory(node("a100s", A100_80, A100_80, A100_80, A100_80), node("t4s", *[T4] * 8))
    result = Planner(cluster).plan(_vllm("big", "400Gi", tp=8))
    assert result.reason == reasons.TOO_FEW_GPUS
    assert "Instead: a node with 8 such GPUs" in result.message


def test_plan_all_never_places_fewer_than_the_canonical_order() -> None:
    """The repair cannot find this layout (one trade of one deployment for two); planning in key
    order does, and is one of the layouts compared."""
    h100 = ("NVIDIA H100 80GB HBM3", "81559Mi", "9.0")
    p40 = ("Tesla P40", "24576Mi", "6.1")
    items = [
        deployment("d10", engine="ollama", replicas=2, models=[{"name": "a:latest", "vram": "12Gi"}]),
        deployment("d14", engine="ollama", replicas=2, models=[{"name": "b:latest", "vram": "12Gi"}]),
        deployment(
            "d19",
            engine="ollama",
            models=[{"name": "c:latest", "vram": "9Gi"}, {"name": "d:latest", "vram": "70Gi"}],
            gpuSelector={"minComputeCapability": "8.9"},
        ),
        deployment("d2", engine="ollama", models=[{"name": "e:latest", "vram": "3Gi"}]),
    ]
    cluster = inventory(node("n0", h100), node("n1", p40))
    sequential = Planner(cluster)
    in_key_order = sum(sequential.plan(item).placed for item in sorted(items, key=lambda i: i.key))
    assert sum(p.placed for p in plan_all(Planner(cluster), items)) >= in_key_order == 3


def test_plan_all_sizes_a_deployment_afresh_each_time() -> None:
    """The sizing a search keeps is dropped when plan_all returns: a changed spec is sized again."""
    planner = Planner(inventory(node("n", A10)))
    item = _ollama("x", "5Gi")
    assert plan_all(planner, [item])[0].placed
    planner.release(item.key)
    item.spec = item.spec.model_copy(
        update={"models": [item.spec.models[0].model_copy(update={"vram": "60Gi"})]}
    )
    assert not plan_all(planner, [item])[0].placed


def test_plan_all_places_more_than_the_file_order() -> None:
    """Listed first, the large group takes both A100s and strands the small models; the batch
    planner places the two it can, and explains the third against the final layout."""
    items = [_vllm("large", "120Gi", tp=2), _ollama("one", "5Gi"), _ollama("two", "5Gi")]
    sequential = Planner(inventory(node("n", A100_80, A100_80)))
    assert [sequential.plan(item).placed for item in items] == [True, False, False]
    plans = plan_all(Planner(inventory(node("n", A100_80, A100_80))), items)
    assert [p.key for p in plans] == [item.key for item in items]  # input order
    assert [p.placed for p in plans] == [False, True, True]
    assert plans[0].reason == reasons.INSUFFICIENT_GPUS
    assert "others hold them" in plans[0].message and UNEXPLAINED not in plans[0].message


def test_plan_all_does_not_depend_on_the_input_order() -> None:
    case = fleet(14)
    expected = {p.key: p for p in plan_all(Planner(case.inventory), case.deployments)}
    assert not violations(case, expected.values())
    for seed in range(4):
        plans = plan_all(Planner(case.inventory), shuffled(case.deployments, seed))
        assert {p.key: p for p in plans} == expected


def test_plan_all_keeps_paused_and_never_fitting_deployments_as_plan_says() -> None:
    items = [
        _ollama("paused", "5Gi", replicas=0),
        _vllm("huge", "900Gi"),
        _ollama("fits", "5Gi"),
    ]
    plans = plan_all(Planner(inventory(node("n", A10))), items)
    assert (plans[0].placed, plans[0].reason) == (True, reasons.PAUSED)
    assert (plans[1].placed, plans[1].reason) == (False, reasons.INSUFFICIENT_VRAM)
    assert plans[2].placed


def test_plan_all_takes_the_gpus_of_what_it_places() -> None:
    planner = Planner(inventory(node("n", A10, A10)))
    plan_all(planner, [_vllm("one", "10Gi"), _vllm("two", "10Gi")])
    assert not planner.plan(_vllm("three", "10Gi")).placed


def _snapshot(planner: Planner) -> object:
    state = planner.state
    return (
        [(s.free, dict(s.holders), set(s.exclusive_holders), s.exclusive) for s in state.by_order],
        {owner: set(uuids) for owner, uuids in state.owner_slots.items() if uuids},
        list(state.partly_used),
        {k: {c: list(p) for c, p in b.items() if p} for k, b in state.count_buckets.items()},
    )


def test_a_trial_not_kept_leaves_the_state_as_it_was_and_a_kept_one_stays() -> None:
    case = fleet(2)
    planner = Planner(case.inventory)
    items = list(case.deployments)
    for item in items[: len(items) // 2]:
        planner.plan(item)
    before = _snapshot(planner)
    rng = random.Random(0)
    with planner.trial():
        for item in rng.sample(items[: len(items) // 2], 3):
            planner.release(item.key)
        for item in items[len(items) // 2 :]:
            planner.plan(item, explain=False)
    assert _snapshot(planner) == before
    with planner.trial() as trial:
        planner.release(items[0].key)
        trial.keep()
    assert items[0].key not in planner.state.owner_slots
    assert not planner.state.undo  # the outermost kept trial leaves nothing to undo
