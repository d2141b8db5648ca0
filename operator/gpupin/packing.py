"""Placing a set of deployments together: as many as fit, in whatever order they are listed.

Pure: no kopf, no kubernetes, no I/O. :meth:`Planner.plan <gpupin.planner.Planner.plan>` places
one deployment against what the ones before it took — first come, first served, which is what
the operator does as deployments arrive and what keeps running pods where they are. When a whole
set is known at once (``gpupin plan -f``), the order is ours to choose, and the order of a file is
a poor one: two large tensor-parallel groups early in it take every big GPU, and the small
models after them find nothing left. :func:`plan_all` therefore

1. puts the set in a canonical order (by ``namespace/name``), so the input order changes nothing;
2. places it as it comes in that order; when every deployment is placed, or refused only because
   it would not fit even on the empty cluster, that is the answer (no search: the common case);
3. otherwise places the deployments that fit on the empty cluster greedily in each of
   :data:`ORDERS` — cheapest first (by the GPU memory its placement takes on the empty cluster:
   ``gpuMemoryUtilization`` of each whole GPU for an engine that owns them), since the count of
   deployments placed is what is maximised; the canonical order (so the result is never below
   step 2's); those that want big GPUs first — and repairs each layout: for each deployment
   still unplaced and each node holding placed ones, it tries releasing the deployments on that
   node, placing it, then placing the released ones (and, if still short, any other unplaced
   one) anywhere. A try is kept only when the layout gets better (:func:`_score`: more
   deployments placed, or as many on less GPU memory), so the search ends; its effort is a
   count of plan calls (:data:`REPAIR_EFFORT`, :data:`REPAIR_LIMIT`), never time, so the same
   input gives the same plans. The best layout of the orders is taken;
4. explains every refusal against the final layout (the search's tries are not explained).

How close this comes to an exact solver (OR-Tools CP-SAT, maximising deployments placed) on
seeded mixed fleets is measured by ``make bench-packing`` (``benchmarks/packing_quality.py``);
the figures are in the README.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gpupin.api.v1alpha1 import LLMDeployment
from gpupin.placement import Hold, Plan
from gpupin.planner import Planner

REPAIR_EFFORT = 40
"""Plan calls the repair may spend per deployment of the set (a bound on work, not on time)..."""
REPAIR_LIMIT = 20_000
"""... and in all per order, whatever the size of the set."""


@dataclass
class _Member:
    deployment: LLMDeployment
    position: int
    """Where it was in the input (plans are returned in input order)."""
    footprint: int
    """GPU memory its placement takes on the empty cluster (bytes; an engine that owns its GPUs
    takes ``gpuMemoryUtilization`` of each whole GPU)."""
    gpu_size: int
    """The smallest GPU memory its empty-cluster placement uses (bytes): a hint of how big a GPU
    it wants, for ordering only (it may fit smaller ones)."""
    plan: Plan | None = None
    """Its plan in the current layout: placed, or None while it is not."""


ORDERS: tuple[Callable[[_Member], tuple[int, ...]], ...] = (
    lambda m: (m.footprint,),  # cheapest first: the most deployments (and, on a tie, the layout kept)
    lambda m: (),  # as the fast path placed them (by key): the search never ends below it
    lambda m: (-m.gpu_size, m.footprint),  # those that want big GPUs first: big GPUs go to them
)
"""The orders the greedy pass tries, ties by key (each then repaired); the best layout is taken."""


def plan_all(planner: Planner, deployments: Sequence[LLMDeployment]) -> list[Plan]:
    """Plans for ``deployments`` in their input order, placing as many as fit (see the module).

    Placed plans have taken their GPUs in ``planner``; refused ones are explained against the
    final layout. Raises nothing a plan would not: refusals are plans."""
    try:
        return _plan_all(planner, deployments)
    finally:
        planner.forget_prepared()


def _plan_all(planner: Planner, deployments: Sequence[LLMDeployment]) -> list[Plan]:
    canonical = sorted(enumerate(deployments), key=lambda item: item[1].key)
    final: dict[int, Plan] = {}
    with planner.trial() as trial:  # most sets fit as they come: then no search is needed
        for position, deployment in canonical:
            result = planner.plan(deployment, explain=False)
            if not result.placed:
                alone = planner.plan_when_empty(deployment)  # explained: too small, invalid…
                if alone.placed:
                    break  # it could be placed in another layout: search
                result = alone
            final[position] = result
        else:
            trial.keep()
    if trial.kept:
        return [final[i] for i in range(len(deployments))]
    final.clear()
    memory = {gpu.uuid: gpu.memory for node in planner.inventory.nodes for gpu in node.gpus}
    members: list[_Member] = []
    for position, deployment in canonical:
        alone = planner.plan_when_empty(deployment)
        assignments = [a for p in alone.placements for a in p.gpus]
        if not assignments:  # refused whatever the others do (explained there), or paused
            final[position] = alone
            continue
        members.append(
            _Member(
                deployment,
                position,
                footprint=sum(a.vram_bytes or 0 for a in assignments),
                gpu_size=min(memory.get(a.uuid, 0) for a in assignments),
            )
        )
    best: tuple[tuple[int, int], list[Plan | None]] | None = None
    for order in ORDERS:
        members.sort(key=lambda m: (*order(m), m.deployment.key))
        with planner.trial():  # undone: only the best layout is taken, below
            for member in members:
                _try(planner, member)
            _repair(planner, members, budget=min(REPAIR_EFFORT * len(members), REPAIR_LIMIT))
            score = _score(members, memory)
            if best is None or score > best[0]:
                best = (score, [m.plan for m in members])
                chosen = list(members)
        if score[0] == len(members):  # all placed: another order cannot place more
            break
    if best is not None:
        for member, plan in zip(chosen, best[1], strict=True):
            member.plan = plan
            if plan is not None:
                planner.hold(
                    Hold(a.uuid, a.vram_bytes, p.exclusive, plan.key) for p in plan.placements for a in p.gpus
                )
    for member in members:  # the unplaced, explained against the final layout
        final[member.position] = member.plan or planner.plan(member.deployment, commit=False)
    return [final[i] for i in range(len(deployments))]


def _try(planner: Planner, member: _Member) -> bool:
    result = planner.plan(member.deployment, explain=False)
    member.plan = result if result.placed else None
    return result.placed


def _placed(members: Sequence[_Member]) -> int:
    return sum(1 for m in members if m.plan is not None)


def _score(members: Sequence[_Member], memory: dict[str, int]) -> tuple[int, int]:
    """What the repair maximises: deployments placed, then the memory of the GPUs left untouched
    (a layout that packs onto fewer and smaller GPUs leaves more room for the next deployment)."""
    touched = {a.uuid for m in members if m.plan for p in m.plan.placements for a in p.gpus}
    return _placed(members), -sum(memory.get(uuid, 0) for uuid in touched)


def _repair(planner: Planner, members: list[_Member], budget: int) -> None:
    """Trade the deployments on one node for a better layout (:func:`_score`), until no trade
    helps or the budget (plan calls) is spent."""
    memory = {gpu.uuid: gpu.memory for node in planner.inventory.nodes for gpu in node.gpus}
    names = sorted(node.name for node in planner.inventory.nodes)
    improved = True
    while improved and budget > 0:
        improved = False
        on_node = _on_node(members)
        score = _score(members, memory)
        placed = score[0]
        for member in [m for m in members if m.plan is None]:
            if member.plan is not None:  # placed by a trade earlier in this pass
                continue
            for node in names:
                victims = on_node.get(node)
                if not victims:
                    continue
                if budget <= 0:
                    return
                changed: list[tuple[_Member, Plan | None]] = []
                with planner.trial() as trial:
                    for victim in victims:
                        planner.release(victim.deployment.key)
                        changed.append((victim, victim.plan))
                        victim.plan = None
                    budget -= 1
                    if _try(planner, member):
                        changed.append((member, None))
                        for others in (victims, members):  # the released first; the rest only if still short
                            for other in others:
                                if other.plan is None and budget > 0:
                                    budget -= 1
                                    if _try(planner, other):
                                        changed.append((other, None))
                            if _placed(members) > placed:
                                break
                        new_score = _score(members, memory)
                        if new_score > score:
                            trial.keep()
                if trial.kept:
                    improved = True
                    score = new_score
                    placed = score[0]
                    on_node = _on_node(members)
                    break
                for changed_member, plan in reversed(changed):
                    changed_member.plan = plan


def _on_node(members: Sequence[_Member]) -> dict[str, list[_Member]]:
    """Node → the placed members holding a GPU on it."""
    result: dict[str, list[_Member]] = {}
    for member in members:
        if member.plan is not None:
            for node in dict.fromkeys(p.node for p in member.plan.placements):
                result.setdefault(node, []).append(member)
    return result
