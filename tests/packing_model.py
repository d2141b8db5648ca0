"""Seeded mixed fleets, an exact packing model (OR-Tools CP-SAT) and an independent rule check.

Shared by ``benchmarks/packing_quality.py`` (the figures in the README) and
``tests/test_packing_quality.py`` (a floor that must hold). The exact model is written from the
rules as the README states them, not from the planner's code, so that it can disagree:

- an Ollama model takes ``replicas`` distinct GPUs, each holding its whole ``vram``; models of
  any deployments share a GPU while their sizes fit its memory (one namespace here);
- a vLLM replica takes ``tensorParallelSize`` whole GPUs of one product on one node, nobody
  shares them, each rank (``vram / tp``) must fit ``gpuMemoryUtilization`` (0.9) of a GPU, and
  only GPUs of compute capability ≥ 7.5 qualify;
- a deployment counts as placed only when all its models and replicas are.

Sizes are fixed through ``models[].vram`` so both sides see the same bytes; Ollama models are
never larger than the fleet's largest GPU (spanning GPUs is not modelled).
"""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gpupin.api.v1alpha1 import LLMDeployment
from gpupin.inventory import GPU, Inventory, NodeInventory
from gpupin.placement import Plan

GIB = 2**30
UTILIZATION = 0.9
VLLM_MIN_CC = (7, 5)

PRODUCTS = {  # name, MiB, compute capability
    "h100": ("NVIDIA H100 80GB HBM3", 81559, "9.0"),
    "a100": ("NVIDIA A100-SXM4-40GB", 40960, "8.0"),
    "l40s": ("NVIDIA L40S", 46068, "8.9"),
    "a10": ("NVIDIA A10", 23028, "8.6"),
    "l4": ("NVIDIA L4", 23034, "8.9"),
    "t4": ("Tesla T4", 15360, "7.5"),
    "v100": ("Tesla V100-SXM2-32GB", 32768, "7.0"),
    "p40": ("Tesla P40", 24576, "6.1"),
    "4090": ("NVIDIA GeForce RTX 4090", 24564, "8.9"),
    "4070": ("NVIDIA GeForce RTX 4070", 12282, "8.9"),
    "2060": ("NVIDIA GeForce RTX 2060", 6144, "7.5"),
}
NODE_SHAPES = [
    ["h100"] * 8,
    ["h100"] * 4,
    ["a100"] * 4,
    ["l40s"] * 4,
    ["a10"] * 2,
    ["l4"] * 8,
    ["t4"] * 4,
    ["t4"] * 2 + ["v100"] * 2,
    ["v100"] * 4,
    ["p40"] * 4,
    ["4090", "4090", "4070", "2060"],
    ["4070", "2060"],
    ["l4"] * 4 + ["t4"] * 4,
]
OLLAMA_GIB = [1.5, 2, 3, 5, 6, 9, 12, 18, 22, 30, 45]
VLLM_GIB = [3, 6, 10, 15, 20, 30, 40, 60, 70, 120, 150, 280]


@dataclass(frozen=True)
class Fleet:
    seed: int
    inventory: Inventory
    deployments: tuple[LLMDeployment, ...]


def fleet(seed: int) -> Fleet:
    """A seeded fleet: 5–40 nodes of the shapes above and 10–150 deployments, about half each engine."""
    rng = random.Random(seed)
    node_count = rng.randint(5, 40)
    nodes = []
    for n in range(node_count):
        shape = rng.choice(NODE_SHAPES)
        gpus = [
            GPU(
                index=i,
                uuid=f"GPU-{seed:03d}-{n:03d}-{i}",
                name=PRODUCTS[key][0],
                memory=PRODUCTS[key][1] * 2**20,
                compute_capability=PRODUCTS[key][2],
            )
            for i, key in enumerate(shape)
        ]
        nodes.append(NodeInventory(name=f"node-{n:03d}", gpus=gpus))
    largest = max(g.memory for node in nodes for g in node.gpus)
    gpu_count = sum(len(node.gpus) for node in nodes)
    count = max(10, min(150, int(gpu_count * rng.uniform(0.5, 1.3))))
    items = []
    for i in range(count):
        if rng.random() < 0.5:
            sizes = [s for s in OLLAMA_GIB if s * GIB <= largest]
            spec = {
                "engine": "ollama",
                "models": [
                    {"name": f"model-{i}-{m}:latest", "vram": f"{rng.choice(sizes)}Gi"}
                    for m in range(rng.choice([1, 1, 1, 2, 3]))
                ],
                "replicas": rng.choice([1, 1, 1, 2]),
            }
        else:
            tp = rng.choice([1, 1, 1, 2, 2, 4, 8])
            spec = {
                "engine": "vllm",
                "models": [{"name": f"org/model-{i}", "vram": f"{rng.choice(VLLM_GIB)}Gi"}],
                "tensorParallelSize": tp,
                "replicas": rng.choice([1, 1, 1, 2]),
            }
        items.append(
            LLMDeployment.model_validate(
                {
                    "apiVersion": "gpupin.dev/v1alpha1",
                    "kind": "LLMDeployment",
                    "metadata": {"name": f"llm-{i:03d}", "namespace": "bench"},
                    "spec": spec,
                }
            )
        )
    return Fleet(seed, Inventory(nodes=nodes), tuple(items))


def _vram(model: dict[str, object] | object) -> int:
    return round(float(str(model.vram).removesuffix("Gi")) * GIB)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Exact:
    placed: int
    """Deployments placed in the best solution found."""
    bound: int
    """The solver's proven upper bound (== placed when optimal)."""
    optimal: bool
    seconds: float
    chosen: frozenset[str] = frozenset()
    """The keys of the deployments the best solution places."""


def exact(fleet_: Fleet, time_limit: float = 20.0, workers: int = 2, hint: Sequence[Plan] = ()) -> Exact:
    """The most deployments any placement can hold, by CP-SAT (imports OR-Tools lazily).

    ``hint``: a known layout (gpupin's plans), given to the solver whole as its first solution,
    so its time goes to improving on it and proving a bound. Not optimal within ``time_limit``:
    ``bound`` is the proven upper bound, the honest denominator."""
    from ortools.sat.python import cp_model

    gpus = [(node.name, gpu) for node in fleet_.inventory.nodes for gpu in node.gpus]
    groups: dict[tuple[str, tuple[str, int, str]], list[int]] = defaultdict(list)
    for g, (node, gpu) in enumerate(gpus):
        groups[(node, (gpu.name, gpu.memory, gpu.compute_capability))].append(g)
    model = cp_model.CpModel()
    used_by_groups = [model.new_bool_var(f"u{g}") for g in range(len(gpus))]
    load: dict[int, list[tuple[int, cp_model.IntVar]]] = defaultdict(list)
    ranks: dict[tuple[str, tuple[str, int, str]], list[tuple[int, cp_model.IntVar]]] = defaultdict(list)
    placed = []
    shared: dict[tuple[int, str, int], cp_model.IntVar] = {}
    owned: dict[tuple[int, str, tuple[str, int, str]], cp_model.IntVar] = {}
    for d, item in enumerate(fleet_.deployments):
        spec = item.spec
        p = model.new_bool_var(f"p{d}")
        placed.append(p)
        if spec.resolved_engine == "ollama":
            for m, entry in enumerate(spec.models):
                need = _vram(entry)
                on = []
                for g, (_, gpu) in enumerate(gpus):
                    if gpu.memory >= need:
                        y = model.new_bool_var(f"y{d}_{m}_{g}")
                        shared[(d, entry.name, g)] = y
                        on.append(y)
                        load[g].append((need, y))
                model.add(sum(on) == spec.replicas * p)
        else:
            tp = spec.tensor_parallel_size
            per_rank = -(-_vram(spec.models[0]) // tp)
            count = []
            for (node, key), members in groups.items():
                if len(members) < tp or per_rank > UTILIZATION * key[1]:
                    continue
                if tuple(int(x) for x in key[2].split(".")) < VLLM_MIN_CC:
                    continue
                c = model.new_int_var(0, min(spec.replicas, len(members) // tp), f"c{d}_{node}")
                owned[(d, node, key)] = c
                count.append(c)
                ranks[(node, key)].append((tp, c))
            model.add(sum(count) == spec.replicas * p)
    for (node, key), members in groups.items():
        model.add(sum(tp * c for tp, c in ranks[(node, key)]) == sum(used_by_groups[g] for g in members))
        for a, b in itertools.pairwise(members):  # interchangeable: fill in index order
            model.add(used_by_groups[a] >= used_by_groups[b])
    for g, (_, gpu) in enumerate(gpus):
        if load[g]:  # shared only while no group owns it, and only as far as its memory goes
            model.add(sum(need * y for need, y in load[g]) <= gpu.memory * (1 - used_by_groups[g]))
    if hint:
        _hint(model, fleet_, hint, gpus, groups, used_by_groups, placed, shared, owned)
    model.maximize(sum(placed))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit
    solver.parameters.num_workers = workers
    status = solver.solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return Exact(0, len(placed), False, solver.wall_time)
    return Exact(
        round(solver.objective_value),
        min(round(solver.best_objective_bound), len(placed)),
        status == cp_model.OPTIMAL,
        solver.wall_time,
        frozenset(item.key for item, p in zip(fleet_.deployments, placed, strict=True) if solver.value(p)),
    )


def _hint(
    model: object,
    fleet_: Fleet,
    plans: Sequence[Plan],
    gpus: list[tuple[str, GPU]],
    groups: dict[tuple[str, tuple[str, int, str]], list[int]],
    used_by_groups: list[object],
    placed: list[object],
    shared: dict[tuple[int, str, int], object],
    owned: dict[tuple[int, str, tuple[str, int, str]], object],
) -> None:
    """Every variable's value in the layout ``plans`` describe. GPUs of one kind on one node are
    interchangeable, and the model fills groups in index order: within each, the GPUs a group owns
    are renumbered first."""
    index = {gpu.uuid: g for g, (_, gpu) in enumerate(gpus)}
    by_key = {item.key: d for d, item in enumerate(fleet_.deployments)}
    exclusive = {
        index[a.uuid] for p in plans if p.placed for pl in p.placements if pl.exclusive for a in pl.gpus
    }
    renumber = {}
    for members in groups.values():
        for real, slot in zip(sorted(members, key=lambda g: (g not in exclusive, g)), members, strict=True):
            renumber[real] = slot
    values: dict[object, int] = dict.fromkeys(
        [*shared.values(), *owned.values(), *used_by_groups, *placed], 0
    )
    for plan in plans:
        if not plan.placed or not plan.placements:
            continue
        d = by_key[plan.key]
        values[placed[d]] = 1
        for placement in plan.placements:
            members = [renumber[index[a.uuid]] for a in placement.gpus]
            if placement.exclusive:
                node, gpu = gpus[members[0]]
                values[owned[(d, node, (gpu.name, gpu.memory, gpu.compute_capability))]] += 1
                for g in members:
                    values[used_by_groups[g]] = 1
            else:
                for model_name in placement.models:
                    values[shared[(d, model_name, members[0])]] = 1
    for variable, value in values.items():
        model.add_hint(variable, value)  # type: ignore[attr-defined]


def violations(fleet_: Fleet, plans: Iterable[Plan]) -> list[str]:
    """Rule breaks in a set of plans, checked from the placements alone (empty when none)."""
    gpus = {gpu.uuid: (node.name, gpu) for node in fleet_.inventory.nodes for gpu in node.gpus}
    by_key = {item.key: item for item in fleet_.deployments}
    held: dict[str, int] = defaultdict(int)
    owners: dict[str, set[str]] = defaultdict(set)
    exclusive: set[str] = set()
    problems = []
    for plan in plans:
        if not plan.placed:
            continue
        spec = by_key[plan.key].spec
        for placement in plan.placements:
            nodes = {gpus[a.uuid][0] for a in placement.gpus}
            if nodes != {placement.node}:
                problems.append(f"{plan.key}: {placement.pod} spans nodes {sorted(nodes)}")
            for assignment in placement.gpus:
                held[assignment.uuid] += assignment.vram_bytes
                owners[assignment.uuid].add(plan.key)
                if placement.exclusive:
                    exclusive.add(assignment.uuid)
            if spec.resolved_engine == "vllm":
                tp = spec.tensor_parallel_size
                group = [gpus[a.uuid][1] for a in placement.gpus]
                if len(group) != tp or len({g.product_key for g in group}) != 1:
                    problems.append(f"{plan.key}: {placement.pod} is not {tp} matching GPUs")
                per_rank = -(-_vram(spec.models[0]) // tp)
                if any(per_rank > UTILIZATION * g.memory or g.cc < VLLM_MIN_CC for g in group):
                    problems.append(f"{plan.key}: {placement.pod} has a GPU too small or too old")
        if spec.resolved_engine == "ollama":
            for entry in spec.models:
                hosts = [p for p in plan.placements if entry.name in p.models]
                if len({p.gpus for p in hosts}) != spec.replicas:
                    problems.append(f"{plan.key}: {entry.name} is not on {spec.replicas} distinct GPU sets")
    for uuid, total in held.items():
        if total > gpus[uuid][1].memory:
            problems.append(f"{uuid} holds {total} bytes of {gpus[uuid][1].memory}")
        if uuid in exclusive and len(owners[uuid]) > 1:
            problems.append(f"{uuid} is exclusive but held by {sorted(owners[uuid])}")
    return problems


def shuffled(items: Sequence[LLMDeployment], seed: int) -> list[LLMDeployment]:
    """The same deployments in another (seeded) order."""
    result = list(items)
    random.Random(seed).shuffle(result)
    return result
