"""Properties of the planner over random inventories and specs (hypothesis).

Aspects: a plan never oversubscribes a GPU; never forms a tensor-parallel group of
mismatched GPUs unless allowed; never spans nodes with one group or one Ollama pod;
vLLM and (in dra/device-plugin modes) every pod owns its GPUs; placements have the
shape the spec asks for; the same inputs give the same plans; refusals are explained.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gpupin import reasons
from gpupin.api.v1alpha1 import LLMDeployment
from gpupin.inventory import Inventory, NodeInventory
from gpupin.pinning import PINNING_MODES, PinningModeName
from gpupin.placement import Plan
from gpupin.planner import Planner

from helpers import A10, A100_80, GTX_1080TI, L4, RTX_2060, RTX_3060, RTX_4070, RTX_4090, T4, deployment, gpu

PRODUCTS = [RTX_4070, RTX_2060, RTX_4090, RTX_3060, A100_80, A10, L4, T4, GTX_1080TI]
OLLAMA_MODELS = [
    "qwen2.5:14b",
    "llama3.1:8b",
    "nomic-embed-text",
    "qwen2.5:32b",
    "llama3.2:3b",
    "phi4:14b",
    "qwen2.5:14b-instruct-q8_0",
    "mistral:7b",
    "gemma3:27b",
]
VLLM_MODELS = [
    "Qwen/Qwen2.5-3B-Instruct",
    "Qwen/Qwen2.5-1.5B-Instruct",
    "Qwen/Qwen2.5-7B-Instruct",
    "microsoft/phi-4",
    "meta-llama/Llama-3.1-8B-Instruct",
    "acme/Custom-13B",
]


@st.composite
def inventories(draw: st.DrawFn) -> Inventory:
    nodes = []
    for n in range(draw(st.integers(1, 5))):
        products = draw(st.lists(st.sampled_from(PRODUCTS), min_size=1, max_size=8))
        mig = draw(st.lists(st.booleans(), min_size=len(products), max_size=len(products)))
        nodes.append(
            NodeInventory(
                name=f"node-{n}",
                gpus=[
                    gpu(i, p, uuid=f"GPU-{n}-{i}", migEnabled=m and draw(st.integers(0, 9)) == 0)
                    for i, (p, m) in enumerate(zip(products, mig, strict=True))
                ],
            )
        )
    return Inventory(nodes=nodes)


@st.composite
def deployments(draw: st.DrawFn, index: int) -> LLMDeployment:
    spec: dict[str, Any] = {}
    if draw(st.booleans()):
        names = draw(st.lists(st.sampled_from(OLLAMA_MODELS), min_size=1, max_size=3, unique=True))
        spec["engine"] = "ollama"
        spec["models"] = [{"name": n} for n in names]
        if draw(st.booleans()):
            spec["ollama"] = {
                "contextLength": draw(st.sampled_from([2048, 4096, 8192])),
                "numParallel": draw(st.integers(1, 2)),
            }
    else:
        spec["engine"] = "vllm"
        spec["models"] = [{"name": draw(st.sampled_from(VLLM_MODELS))}]
        spec["tensorParallelSize"] = draw(st.sampled_from([1, 1, 2, 4]))
        spec["allowMixedGPUs"] = draw(st.booleans())
        spec["vllm"] = {"maxModelLen": draw(st.sampled_from([4096, 8192, 16384]))}
    if draw(st.integers(0, 4)) == 0:
        spec["models"][0]["vram"] = draw(st.sampled_from(["3Gi", "9Gi", "20Gi", "70Gi"]))
    spec["replicas"] = draw(st.integers(1, 3))
    if draw(st.integers(0, 5)) == 0:
        spec["gpuSelector"] = {"minMemory": draw(st.sampled_from(["8Gi", "16Gi", "40Gi"]))}
    return deployment(f"d{index}", **spec)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Inventory, list[LLMDeployment], PinningModeName]:
    inventory = draw(inventories())
    count = draw(st.integers(1, 8))
    return inventory, [draw(deployments(i)) for i in range(count)], draw(st.sampled_from(PINNING_MODES))


def _plan_all(inventory: Inventory, items: list[LLMDeployment], pinning: PinningModeName) -> list[Plan]:
    planner = Planner(inventory, pinning=pinning)
    return [planner.plan(item) for item in items]


@given(scenarios())
def test_plans_respect_every_invariant(
    scenario: tuple[Inventory, list[LLMDeployment], PinningModeName],
) -> None:
    inventory, items, pinning = scenario
    plans = _plan_all(inventory, items, pinning)
    gpus = {g.uuid: (n.name, g) for n in inventory.nodes for g in n.gpus}
    used: dict[str, int] = defaultdict(int)
    holders: dict[str, set[str]] = defaultdict(set)
    exclusive: set[str] = set()
    for item, result in zip(items, plans, strict=True):
        spec = item.spec
        if not result.placed:
            assert result.reason in reasons.REFUSALS and result.message
            assert not result.placements
            continue
        assert result.reason in reasons.WARNINGS | {reasons.PLACED_OK}
        pods_in_plan = [p.pod for p in result.placements]
        assert len(pods_in_plan) == len(set(pods_in_plan)), "pod names are unique"
        for placement in result.placements:
            nodes = {gpus[g.uuid][0] for g in placement.gpus}
            assert nodes == {placement.node}, "a pod's GPUs are all on its node"
            assert len({g.uuid for g in placement.gpus}) == len(placement.gpus)
            for assigned in placement.gpus:
                _, real = gpus[assigned.uuid]
                assert not real.mig_enabled
                assert (assigned.index, assigned.name) == (real.index, real.name)
                used[assigned.uuid] += assigned.vram_bytes
                holders[assigned.uuid].add(result.key)
            if result.engine == "vllm":
                assert len(placement.gpus) == spec.tensor_parallel_size
                if not spec.allow_mixed_gpus:
                    assert len({gpus[g.uuid][1].product_key for g in placement.gpus}) == 1, (
                        "matching TP group"
                    )
                assert all(gpus[g.uuid][1].cc >= (7, 5) for g in placement.gpus)
            if result.engine == "vllm" or pinning != "visible-devices":
                exclusive.update(g.uuid for g in placement.gpus)
        if result.engine == "vllm":
            assert len(result.placements) == spec.replicas
        else:
            for model in spec.models:
                holding = [p for p in result.placements if model.name in p.models]
                assert len(holding) == spec.replicas, "each Ollama model on `replicas` pods"
                uuids = [g.uuid for p in holding for g in p.gpus]
                assert len(uuids) == len(set(uuids)), "replicas on distinct GPUs"
            all_uuids = [g.uuid for p in result.placements for g in p.gpus]
            assert len(all_uuids) == len(set(all_uuids)), "one Ollama pod per GPU of a deployment"
    for uuid, total in used.items():
        assert total <= gpus[uuid][1].memory, f"{uuid} oversubscribed"
    for uuid in exclusive:
        assert len(holders[uuid]) == 1, f"{uuid} is owned by one deployment but held by {holders[uuid]}"


@given(scenarios())
def test_same_inputs_give_the_same_plans(
    scenario: tuple[Inventory, list[LLMDeployment], PinningModeName],
) -> None:
    inventory, items, pinning = scenario
    assert _plan_all(inventory, items, pinning) == _plan_all(inventory, items, pinning)


@given(scenarios())
def test_planning_one_by_one_equals_the_pure_function(
    scenario: tuple[Inventory, list[LLMDeployment], PinningModeName],
) -> None:
    """The indexed session planner and the one-shot pure function agree, given the same holds."""
    from gpupin.placement import Hold
    from gpupin.planner import plan

    inventory, items, pinning = scenario
    planner = Planner(inventory, pinning=pinning)
    holds: list[Hold] = []
    for item in items:
        session = planner.plan(item)
        alone = plan(item, inventory, holds, pinning)
        assert session == alone
        holds.extend(
            Hold(g.uuid, g.vram_bytes, session.engine == "vllm", session.key)
            for p in session.placements
            for g in p.gpus
        )


@given(scenarios(), st.lists(st.integers(0, 7), min_size=1, max_size=20), st.data())
def test_one_planner_following_the_cluster_equals_a_fresh_one(
    scenario: tuple[Inventory, list[LLMDeployment], PinningModeName], order: list[int], data: st.DataObject
) -> None:
    """release + hold keep a long-lived Planner exactly where a fresh one built from the same holds is
    (the operator keeps one instead of rebuilding the cluster state for every reconcile)."""
    from gpupin.placement import Hold

    inventory, items, pinning = scenario
    kept = Planner(inventory, pinning=pinning)
    holds: dict[str, list[Hold]] = {}
    for step in order:
        item = items[step % len(items)]
        if data.draw(st.integers(0, 4)) == 0:  # the deployment goes away
            kept.release(item.key)
            holds.pop(item.key, None)
            continue
        kept.release(item.key)
        others = [h for key, hs in holds.items() if key != item.key for h in hs]
        fresh = Planner(inventory, others, pinning).plan(item, commit=False)
        incremental = kept.plan(item, commit=False)
        assert incremental == fresh
        # its pods are created (or, refused, nothing): record them as the operator's cache would
        holds[item.key] = [
            Hold(g.uuid, g.vram_bytes, incremental.engine == "vllm" or pinning != "visible-devices", item.key)
            for p in incremental.placements
            for g in p.gpus
        ]
        kept.hold(holds[item.key])
