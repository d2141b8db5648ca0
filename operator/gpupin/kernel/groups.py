"""Exclusive tensor-parallel groups: each pod owns ``tensor_parallel`` whole GPUs on one node.

Pure and generic: how an engine that shards one model over GPUs (vLLM; SGLang would too) is
placed. A group is GPUs of one product key (memory, compute capability) on one node, or mixed
GPUs when the user allows it — then every rank is sized to the smallest. Choices are best fit:
the smallest GPUs that hold a rank, on the node with the fewest such free GPUs that suffice.
The engine supplies a :class:`GroupRequest`: the model's size, its settings, and its own words
for the options a refusal offers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gpupin import naming, reasons
from gpupin.inventory import short_name
from gpupin.kernel.context import UNEXPLAINED, PlanContext
from gpupin.kernel.eligibility import Refusal, cc_tuple
from gpupin.kernel.prose import count, group_text, holders_text
from gpupin.kernel.state import ProductKey, Slot
from gpupin.placement import CurrentPod, GPUAssignment, LaunchSettings, Placement
from gpupin.quantity import format_gib
from gpupin.sizing import Estimate

PlanWarning = tuple[str, str]
"""(reason from :mod:`gpupin.reasons`, sentence) for a placement the user should read about."""


@dataclass(frozen=True)
class GroupRequest:
    """What an exclusive-group engine asks for, and what it says when it cannot have it."""

    estimate: Estimate
    tensor_parallel: int
    replicas: int
    utilization: float
    """Fraction of each GPU's memory the engine takes (vLLM --gpu-memory-utilization)."""
    utilization_setting: str
    """The spec field that sets it, for messages: ``gpuMemoryUtilization``."""
    allow_mixed: bool
    engine: str
    """The engine as messages name it: ``vLLM``."""
    preferred_min_cc: tuple[int, int] | None
    """Prefer GPUs at or above this compute capability (bfloat16 natively from 8.0)."""
    launch: Callable[[Sequence[Slot]], tuple[LaunchSettings, list[PlanWarning]]]
    """The launch settings for a group, and warnings about them (a dtype fallback)."""
    smaller_options: Callable[[], list[str]]
    """What else could make the model fit, in the engine's words (quantization, another engine)."""
    alternatives: Sequence[str]
    """Other ways to use mismatched GPUs (another engine), for a heterogeneous-group refusal."""
    tensor_parallel_problem: Callable[[int], str | None] = lambda size: None
    """Why the model cannot be split over ``size`` ranks (heads it does not divide), or None."""


class GroupPlacer:
    """Places one deployment's groups: :meth:`run` returns (placements, reason, message) or raises
    :class:`~gpupin.kernel.eligibility.Refusal` with the stage that failed and the options left."""

    def __init__(self, ctx: PlanContext, request: GroupRequest) -> None:
        if not ctx.exclusive:  # a rank sized to a fraction of each GPU leaves room nobody else may take
            raise ValueError(f"{request.engine} is placed in tensor-parallel groups, so it must own its GPUs")
        self.ctx = ctx
        self.state = ctx.state
        self.filter = ctx.filter
        self.request = request
        self.est = request.estimate
        self.tp = request.tensor_parallel
        self.util = request.utilization
        self.replicas = request.replicas
        self.allow_mixed = request.allow_mixed
        self.engine = request.engine
        self.per_rank = self.est.per_gpu(self.tp)

    def run(self) -> tuple[list[Placement], str, str]:
        est, tp = self.est, self.tp
        problem = self.request.tensor_parallel_problem(tp)
        if problem is not None:
            widest = max((len(slots) for slots in self.state.nodes.values()), default=1)
            sizes = [d for d in range(1, widest + 1) if self.request.tensor_parallel_problem(d) is None]
            raise Refusal(
                reasons.INVALID_SPEC,
                f"tensorParallelSize {tp} cannot split {est.model}: {problem}. "
                f"Use one of {', '.join(map(str, sizes))}",
            )
        placements: list[Placement] = []
        warnings: list[PlanWarning] = []
        kept = 0
        for pod in sorted(self.ctx.current, key=lambda p: (p.rank, p.gpu_uuids)):
            if kept >= self.replicas:
                break
            group = self._still_valid(pod)
            if group is not None:
                placements.append(self._take(group, warnings, pod.gpu_uuids))
                kept += 1
        if kept < self.replicas:  # new groups are needed: is any GPU open to one at all?
            self.filter.ensure_any()
        for _ in range(self.replicas - kept):
            group = self._choose_group()
            placements.append(self._take(group, warnings))
        reason = warnings[0][0] if warnings else reasons.PLACED_OK
        summary = f"{est.model} on {len(placements)} pod(s), {tp} GPU(s) each; needs {est.explain(tp)}"
        if tp > 1:
            summary += f", {format_gib(self.per_rank)} per rank"
        message = "; ".join([summary, *dict.fromkeys(text for _, text in warnings)])
        return placements, reason, message

    def _fits(self, slot: Slot) -> bool:
        return self.per_rank <= self.util * slot.gpu.memory

    def _still_valid(self, pod: CurrentPod) -> list[Slot] | None:
        slots = [self.state.slot_of(uuid) for uuid in pod.gpu_uuids]
        if len(slots) != self.tp or any(s is None for s in slots):
            return None
        group = [s for s in slots if s is not None]
        if len({s.node for s in group}) != 1 or not all(s.fully_free and self.filter.keeps(s) for s in group):
            return None
        if len({s.key for s in group}) > 1 and not self.allow_mixed:
            return None
        if not self._fits(min(group, key=lambda s: s.gpu.memory)):
            return None
        return sorted(group, key=lambda s: s.gpu.index)

    def _choose_group(self) -> list[Slot]:
        keys = [
            k
            for k in self.state.keys_by_memory
            if self.filter.key_ok(k) and self.util * k[1] >= self.per_rank
        ]
        preferred = self.request.preferred_min_cc
        if preferred is not None:  # a GPU that runs the model's dtype natively beats a fallback
            keys.sort(key=lambda k: cc_tuple(k[2]) < preferred)
        for key in keys:
            group = self.state.free_group(key, self.tp, self.filter.node_ok)
            if group is not None:
                return group
        if self.tp > 1 and self.allow_mixed:
            group = self._mixed_group(lambda s: s.fully_free)
            if group is not None:
                return group
        if not self.ctx.explain:
            raise Refusal(reasons.INSUFFICIENT_GPUS, UNEXPLAINED)
        raise self._refusal()

    def _mixed_group(self, usable: Callable[[Slot], bool]) -> list[Slot] | None:
        """The smallest-memory set of ``tp`` usable GPUs on one node that each fit a rank."""
        best: tuple[tuple[int, int], list[Slot]] | None = None
        for node, slots in self.state.nodes.items():
            if not self.filter.node_ok(node):
                continue
            fitting = sorted(
                (
                    s
                    for s in slots
                    if usable(s) and not s.frozen and self.filter.key_ok(s.key) and self._fits(s)
                ),
                key=lambda s: (s.gpu.memory, s.gpu.index),
            )
            if len(fitting) >= self.tp:
                group = fitting[: self.tp]
                score = (sum(s.gpu.memory for s in group), group[0].order)
                if best is None or score < best[0]:
                    best = (score, group)
        return sorted(best[1], key=lambda s: s.gpu.index) if best else None

    def _take(
        self, group: list[Slot], warnings: list[tuple[str, str]], named: tuple[str, ...] = ()
    ) -> Placement:
        """Reserve a group; ``named``: the UUIDs the existing pod kept here names them by."""
        gpus = []
        for slot in group:
            reserved = math.floor(self.util * slot.gpu.memory)
            self.state.reserve(slot, reserved, self.ctx.owner, exclusive=self.ctx.exclusive)
            gpu = self.state.as_named(slot, named)
            gpus.append(GPUAssignment(gpu.index, gpu.uuid, gpu.name, reserved))
        if len({s.key for s in group}) > 1:
            smallest = min(s.gpu.memory for s in group)
            stranded = sum(s.gpu.memory - smallest for s in group)
            warnings.append(
                (
                    reasons.MIXED_GPUS_ALLOWED,
                    f"tensor parallel over mismatched GPUs ({group_text(group)}) as allowMixedGPUs permits: "
                    f"every rank is sized to the smallest, {self.tp} × {format_gib(smallest)} usable, "
                    f"{format_gib(stranded)} stranded",
                )
            )
        launch, launch_warnings = self.request.launch(group)
        warnings.extend(launch_warnings)
        return Placement(
            pod=naming.pod_name(self.ctx.name, (g.uuid for g in gpus)),
            node=group[0].node,
            models=(self.est.model,),
            gpus=tuple(gpus),
            exclusive=self.ctx.exclusive,
            launch=launch,
        )

    # -- why not -------------------------------------------------------------------------

    def _refusal(self) -> Refusal:
        eligible = self.filter.eligible()
        if self.ctx.capacity_exists():
            return self._taken(eligible)
        by_node: dict[str, list[Slot]] = {}
        for slot in eligible:
            by_node.setdefault(slot.node, []).append(slot)
        most = max(by_node.items(), key=lambda kv: (len(kv[1]), -kv[1][0].order))
        if len(most[1]) < self.tp:
            return Refusal(
                reasons.TOO_FEW_GPUS,
                f"tensorParallelSize {self.tp} needs {self.tp} GPUs on one node; the most eligible GPUs on one "
                f"node is {len(most[1])} ({most[0]}: {group_text(most[1])})",
            )
        matching_groups = sum(
            sum(1 for s in slots if s.key == key and self._fits(s)) // self.tp
            for slots in by_node.values()
            for key in {s.key for s in slots}
        )
        matching_exists = any(
            sum(1 for s in slots if s.key == key) >= self.tp
            for slots in by_node.values()
            for key in {s.key for s in slots}
        )
        mixed_groups = sum(sum(1 for s in slots if self._fits(s)) // self.tp for slots in by_node.values())
        if (
            self.tp > 1
            and not self.allow_mixed
            and not matching_groups
            and (mixed_groups or not matching_exists)
        ):
            return self._heterogeneous(by_node, mixed_groups > 0)
        groups = mixed_groups if self.allow_mixed else matching_groups
        if groups:
            return Refusal(
                reasons.TOO_FEW_GPUS,
                f"replicas {self.replicas} need {self.replicas} groups of {self.tp} GPU(s) with ≥ "
                f"{format_gib(self.per_rank / self.util)} each; the eligible GPUs form {groups}",
            )
        big_enough = [s for s in eligible if self._fits(s)]
        if big_enough:  # GPUs hold a rank, but no node has enough of them
            return self._too_few_big_enough(big_enough)
        return self._too_small(eligible)

    def _too_few_big_enough(self, big_enough: list[Slot]) -> Refusal:
        together: dict[tuple[str, ProductKey | None], list[Slot]] = {}
        for slot in big_enough:
            together.setdefault((slot.node, None if self.allow_mixed else slot.key), []).append(slot)
        (node, _), most = max(together.items(), key=lambda kv: (len(kv[1]), -kv[1][0].order))
        kind = "" if self.allow_mixed else " matching"
        smallest = min(s.gpu.memory for s in most)
        fewer = [  # a smaller group those GPUs hold: each rank is bigger, and the heads must divide
            size
            for size in range(len(most), 0, -1)
            if self.request.tensor_parallel_problem(size) is None
            and self.est.per_gpu(size) <= self.util * smallest
        ]
        instead = (
            f"tensorParallelSize {fewer[0]} ({node}: {group_text(most[: fewer[0]])}), or " if fewer else ""
        )
        return Refusal(
            reasons.TOO_FEW_GPUS,
            f"tensorParallelSize {self.tp} needs {self.tp}{kind} GPUs with ≥ {format_gib(self.per_rank / self.util)} "
            f"each on one node; GPUs that big exist, but the most on one node is {len(most)} "
            f"({node}: {group_text(most)}). Instead: {instead}a node with {self.tp} such GPUs",
        )

    def _taken(self, eligible: list[Slot]) -> Refusal:
        # the GPUs that could form a group if nobody held them
        groups: dict[tuple[str, ProductKey | None], list[Slot]] = {}
        for slot in eligible:
            if self._fits(slot):
                key = None if self.allow_mixed else slot.key
                groups.setdefault((slot.node, key), []).append(slot)
        fitting = [s for members in groups.values() if len(members) >= self.tp for s in members]
        return Refusal(
            reasons.INSUFFICIENT_GPUS,
            f"{self.est.model} needs {count(self.replicas * self.tp, 'free GPU')} with ≥ "
            f"{format_gib(self.per_rank / self.util)} each ({self.engine} owns its GPUs){self._grouping()}; GPUs that big exist but "
            f"others hold them: {holders_text(fitting, exclude=self.ctx.owner)}. It is placed when they are freed",
        )

    def _grouping(self) -> str:
        if self.tp == 1:
            return ""
        return f", in {count(self.replicas, 'group')} of {self.tp} matching GPUs on one node"

    def _heterogeneous(self, by_node: dict[str, list[Slot]], mixed_fit: bool) -> Refusal:
        # describe the best mixed group: the tp largest GPUs on the node where they are largest
        groups = [
            sorted(slots, key=lambda s: -s.gpu.memory)[: self.tp]
            for slots in by_node.values()
            if len(slots) >= self.tp
        ]
        group = max(groups, key=lambda g: (min(s.gpu.memory for s in g), -g[0].order))
        smallest = min(s.gpu.memory for s in group)
        largest = max(group, key=lambda s: s.gpu.memory)
        usable = self.tp * smallest
        stranded = sum(s.gpu.memory for s in group) - usable
        if usable <= largest.gpu.memory * 1.05:  # within 5%: 2 × 6144 MiB vs 12282 MiB is "no more"
            compare = f"no more than the {short_name(largest.gpu.name)} alone"
        else:
            compare = f"{format_gib(usable - largest.gpu.memory)} more than the {short_name(largest.gpu.name)} alone"
        text = (
            f"tensorParallelSize {self.tp} over {group_text(group)} gives {self.tp} × {format_gib(smallest)} usable "
            f"— {compare}, with {format_gib(stranded)} stranded ({self.engine} sizes every rank to the smallest GPU)"
        )
        if not mixed_fit:
            text += f"; even so {self.est.model} would not fit ({format_gib(self.per_rank)} per rank)"
        single = self.est.per_gpu(1)
        biggest = max(
            (s for slots in by_node.values() for s in slots), key=lambda s: (s.gpu.memory, -s.order)
        )
        if single <= self.util * biggest.gpu.memory:
            options = [
                f"tensorParallelSize: 1 on the {format_gib(biggest.gpu.memory)} {short_name(biggest.gpu.name)} "
                f"({self.est.model} needs {self.est.explain(1)})"
            ]
        else:
            options = [f"matching GPUs for tensor parallel ({self.est.model} needs {self.est.explain(1)})"]
        options.extend(self.request.alternatives)
        if mixed_fit:
            options.append(f"allowMixedGPUs: true to accept {self.tp} × {format_gib(smallest)}")
        return Refusal(reasons.HETEROGENEOUS_TENSOR_PARALLEL, f"{text}. Instead: {'; or '.join(options)}")

    def _too_small(self, eligible: list[Slot]) -> Refusal:
        biggest = max(eligible, key=lambda s: (s.gpu.memory, -s.order))
        text = (
            f"{self.est.model} needs {self.est.explain(self.tp)}"
            + (f", {format_gib(self.per_rank)} per rank over {self.tp} GPUs" if self.tp > 1 else "")
            + f"; the largest eligible GPU gives {self.engine} {format_gib(self.util * biggest.gpu.memory)} "
            f"({biggest.describe()} × {self.request.utilization_setting} {self.util})"
        )
        options = []
        widest = max((len(slots) for slots in self.state.nodes.values()), default=1)
        for size in range(self.tp + 1, widest + 1):
            if self.request.tensor_parallel_problem(size) is not None:
                continue
            if self.est.per_gpu(size) <= self.util * biggest.gpu.memory:
                options.append(
                    f"tensorParallelSize {size} over matching GPUs of ≥ {format_gib(self.est.per_gpu(size) / self.util)}"
                )
                break
        options.extend(self.request.smaller_options())
        return Refusal(reasons.INSUFFICIENT_VRAM, f"{text}. Options: {'; '.join(options)}")
