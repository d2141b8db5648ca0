"""Shared per-GPU servers: one server pod per GPU (or GPU set) holding several models.

Pure and generic: how an engine that loads models side by side and splits a model's layers over
GPUs by free memory (Ollama; a llama.cpp server would too) is placed. Each model goes on a GPU
this deployment already uses if one has room; else on the GPU already shared with the least free
memory that holds it; else it opens a free GPU, in the order
:meth:`~gpupin.kernel.state.ClusterState.best_fit_shared` gives (GPUs that only shared servers
can use first, then the smallest). A model larger than every eligible GPU spans GPUs of one node
in one server. Replicas are
distinct GPUs. The engine supplies a :class:`SharedRequest`: the models' sizes and its words.

Unless the context allows it (``share_across_namespaces``), a new server or a model added to one
goes only on GPUs that no pod of another namespace holds memory on: one namespace's tenant cannot
read or starve another's models through a shared GPU. Pods already sharing one (placed before the
rule, or under the flag) keep their GPUs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gpupin import naming, reasons
from gpupin.kernel.context import UNEXPLAINED, PlanContext, namespace_of
from gpupin.kernel.eligibility import Refusal
from gpupin.kernel.prose import group_text, holders_text, product_summary
from gpupin.kernel.state import Slot
from gpupin.placement import CurrentPod, GPUAssignment, LaunchSettings, Placement
from gpupin.quantity import format_gib
from gpupin.sizing import Estimate


@dataclass(frozen=True)
class SharedRequest:
    """What a shared-server engine asks for, and what it says about it."""

    estimates: Sequence[Estimate]
    replicas: int
    """Distinct GPUs (or GPU sets) holding each model."""
    engine: str
    """The engine as messages name it: ``Ollama``."""
    smaller_options: Sequence[str]
    """What else could make a model fit, in the engine's words (a lower context length)."""
    launch: Callable[[Sequence[str]], LaunchSettings]
    """The launch settings of a server holding these models."""
    summary: Callable[[Sequence[Placement], Sequence[Estimate]], str]
    """The Placed message."""


@dataclass
class _PodSet:
    slots: list[Slot]
    models: list[str] = field(default_factory=list)
    named: tuple[str, ...] = ()
    """The UUIDs an existing pod names its GPUs by (aliases included): it is rendered as before."""


class SharedPlacer:
    """Places one deployment's models: :meth:`run` returns (placements, reason, message) or raises
    :class:`~gpupin.kernel.eligibility.Refusal` saying whether the GPUs are too small or taken."""

    def __init__(self, ctx: PlanContext, request: SharedRequest) -> None:
        self.ctx = ctx
        self.state = ctx.state
        self.filter = ctx.filter
        self.request = request
        self.replicas = request.replicas

    def run(self) -> tuple[list[Placement], str, str]:
        estimates = sorted(self.request.estimates, key=lambda e: (-e.need_on(1), e.model))
        self.pods: list[_PodSet] = []
        self.pod_of: dict[str, _PodSet] = {}  # uuid -> pod set
        self.reserved: dict[str, int] = {}  # uuid -> bytes this deployment reserved
        self.on_gpus: dict[str, set[str]] = {e.model: set() for e in estimates}  # model -> uuids
        by_name = {e.model: e for e in estimates}
        replicas = self.replicas
        for pod in sorted(self.ctx.current, key=lambda p: (p.rank, p.gpu_uuids)):
            slots = self._valid_current(pod)
            if slots is None:
                continue
            podset = self._pod_for(slots, pod.gpu_uuids)
            for model in sorted(
                pod.models, key=lambda m: (-by_name[m].need_on(1), m) if m in by_name else (0, m)
            ):
                est = by_name.get(model)
                if est is None or len(self.on_gpus[model]) >= replicas:
                    continue
                self._put_in_pod(est, podset)
        checked = False
        for est in estimates:
            while sum(1 for p in self.pods if est.model in p.models) < replicas:
                if not checked:  # a new server is needed: is any GPU open to one at all?
                    self.filter.ensure_any()
                    checked = True
                if not self._place_replica(est):
                    if not self.ctx.explain:
                        raise Refusal(reasons.INSUFFICIENT_GPUS, UNEXPLAINED)
                    raise self._refusal(est)
        placements = [self._placement(pod) for pod in self.pods if pod.models]
        return placements, reasons.PLACED_OK, self.request.summary(placements, estimates)

    # -- pods of this deployment -------------------------------------------------------

    def _valid_current(self, pod: CurrentPod) -> list[Slot] | None:
        slots = [self.state.slot_of(uuid) for uuid in pod.gpu_uuids]
        if not slots or any(s is None for s in slots):
            return None
        found = [s for s in slots if s is not None]
        if len({s.node for s in found}) != 1 or any(s.exclusive or not self.filter.keeps(s) for s in found):
            return None
        if any(s.gpu.uuid in self.pod_of for s in found):
            return None
        return sorted(found, key=lambda s: s.gpu.index)

    def _pod_for(self, slots: list[Slot], named: tuple[str, ...] = ()) -> _PodSet:
        podset = _PodSet(slots, named=named)
        self.pods.append(podset)
        for slot in slots:
            self.pod_of[slot.gpu.uuid] = podset
        return podset

    def _reserve(self, slot: Slot, num_bytes: int, model: str) -> None:
        self.state.reserve(slot, num_bytes, self.ctx.owner, exclusive=self.ctx.exclusive)
        self.reserved[slot.gpu.uuid] = self.reserved.get(slot.gpu.uuid, 0) + num_bytes
        self.on_gpus[model].add(slot.gpu.uuid)

    def _put_in_pod(self, est: Estimate, podset: _PodSet) -> bool:
        """Add a model to one of this deployment's pods if its GPUs have room."""
        if any(s.gpu.uuid in self.on_gpus[est.model] for s in podset.slots):
            return False
        single = est.need_on(1)
        roomiest = max(podset.slots, key=lambda s: (s.free, -s.order))
        if roomiest.free >= single:
            self._reserve(roomiest, single, est.model)
            podset.models.append(est.model)
            return True
        if len(podset.slots) > 1:
            shares = _split(est.need_on(len(podset.slots)), podset.slots)
            if shares is not None:
                for slot, share in zip(podset.slots, shares, strict=True):
                    self._reserve(slot, share, est.model)
                podset.models.append(est.model)
                return True
        return False

    def _place_replica(self, est: Estimate) -> bool:
        single = est.need_on(1)
        # 1. a GPU this deployment already uses: fewer pods, and the server is shared
        # (not on a frozen GPU: a model added there would restart its pod where no new pod may go)
        open_pods = [p for p in self.pods if not any(s.frozen or not self._open_to_us(s) for s in p.slots)]
        for podset in sorted(open_pods, key=lambda p: (min(s.free for s in p.slots), p.slots[0].order)):
            if len(podset.slots) == 1 and podset.slots[0].free >= single and self._put_in_pod(est, podset):
                return True
        for podset in open_pods:
            if len(podset.slots) > 1 and self._put_in_pod(est, podset):
                return True
        # 2. the best-fitting GPU anywhere
        slot = self.state.best_fit_shared(
            single,
            self.filter.key_ok,
            lambda s: s.gpu.uuid not in self.pod_of and self.filter.ok(s) and self._open_to_us(s),
        )
        if slot is not None:
            podset = self._pod_for([slot])
            self._reserve(slot, single, est.model)
            podset.models.append(est.model)
            return True
        # 3. larger than every single eligible GPU: span GPUs of one node in one server
        if single > self._largest_eligible():
            group = self._span_group(est)
            if group is not None:
                podset = self._pod_for(group)
                shares = _split(est.need_on(len(group)), group)
                assert shares is not None
                for member, share in zip(group, shares, strict=True):
                    self._reserve(member, share, est.model)
                podset.models.append(est.model)
                return True
        return False

    def _other_namespaces(self, slot: Slot) -> list[str]:
        """The namespaces besides this deployment's whose pods hold memory on the GPU."""
        own = self.ctx.namespace
        return sorted({ns for owner in slot.holders if (ns := namespace_of(owner)) != own})

    def _open_to_us(self, slot: Slot) -> bool:
        """May this deployment's models go on the GPU, as far as namespaces go?"""
        if self.ctx.share_across_namespaces:
            return True
        own = self.ctx.namespace
        return all(namespace_of(owner) == own for owner in slot.holders)  # asked for most GPUs tried

    def _largest_eligible(self) -> int:
        return self.filter.largest_eligible()

    def _span_group(self, est: Estimate) -> list[Slot] | None:
        best: tuple[tuple[int, int, int], list[Slot]] | None = None
        for node, slots in self.state.nodes.items():
            if not self.filter.node_ok(node):
                continue
            usable = sorted(
                (
                    s
                    for s in slots
                    if not s.exclusive
                    and not s.frozen
                    and s.gpu.uuid not in self.pod_of
                    and self.filter.key_ok(s.key)
                    and self._open_to_us(s)
                ),
                key=lambda s: (-s.free, s.order),
            )
            total = 0
            for count, slot in enumerate(usable, start=1):
                total += slot.free
                if count > 1 and total >= est.need_on(count):
                    group = usable[:count]
                    score = (count, total - est.need_on(count), group[0].order)
                    if best is None or score < best[0]:
                        best = (score, sorted(group, key=lambda s: s.gpu.index))
                    break
        return best[1] if best else None

    def _placement(self, podset: _PodSet) -> Placement:
        named = [self.state.as_named(s, podset.named) for s in podset.slots]
        return Placement(
            pod=naming.pod_name(self.ctx.name, (gpu.uuid for gpu in named)),
            node=podset.slots[0].node,
            models=tuple(podset.models),
            gpus=tuple(
                GPUAssignment(gpu.index, gpu.uuid, gpu.name, self.reserved.get(s.gpu.uuid, 0))
                for s, gpu in zip(podset.slots, named, strict=True)
            ),
            exclusive=self.ctx.exclusive,
            launch=self.request.launch(podset.models),
        )

    # -- why not -------------------------------------------------------------------------

    def _refusal(self, est: Estimate) -> Refusal:
        if self.ctx.capacity_exists():
            eligible = [
                s for s in self.filter.eligible() if s.gpu.memory >= est.need_on(1)
            ] or self.filter.eligible()
            if not self.ctx.share_across_namespaces:
                closed = [
                    s
                    for s in eligible
                    if not s.exclusive and s.free >= est.need_on(1) and self._other_namespaces(s)
                ]
                if closed:
                    return self._namespace_refusal(est, closed)
            others = holders_text(eligible, exclude=self.ctx.owner)
            own = sum(s.holders.get(self.ctx.owner, 0) for s in eligible)
            if not others:  # only this deployment's own models fill them: nothing else will free it
                return Refusal(
                    reasons.INSUFFICIENT_VRAM,
                    f"{est.model} does not fit beside this deployment's other models: they take "
                    f"{format_gib(own)} of the GPUs big enough for its {est.explain()}. Place the models in "
                    "separate deployments (each gets its own GPU), or select bigger GPUs",
                )
            return Refusal(
                reasons.INSUFFICIENT_GPUS,
                f"{est.model} needs {est.explain()} on {self.replicas} GPU(s); GPUs with that much memory exist "
                f"but others hold it: {others}"
                + (f"; this deployment's other models take {format_gib(own)} of them" if own else "")
                + ". It is placed when memory is freed",
            )
        eligible = self.filter.eligible()
        biggest = max(eligible, key=lambda s: (s.gpu.memory, -s.order))
        per_node: dict[str, list[Slot]] = {}
        for slot in eligible:
            per_node.setdefault(slot.node, []).append(slot)
        node, slots = max(
            per_node.items(), key=lambda kv: (sum(s.gpu.memory for s in kv[1]), -kv[1][0].order)
        )
        text = f"{est.model} needs {est.explain()}; the largest eligible GPU is {biggest.describe()}"
        if len(slots) > 1:
            text += (
                f" and the most on one node, spanning its GPUs in one {self.request.engine} server, is "
                f"{format_gib(sum(s.gpu.memory for s in slots))} ({node}: {group_text(slots)}), "
                f"which needs {format_gib(est.need_on(len(slots)))} with per-GPU overhead"
            )
        if est.need_on(1) <= biggest.gpu.memory:
            fitting = [s for s in eligible if s.gpu.memory >= est.need_on(1)]
            if self.replicas > len(fitting):
                return Refusal(
                    reasons.TOO_FEW_GPUS,
                    f"replicas {self.replicas} needs {est.model} ({est.explain()}) on {self.replicas} "
                    f"distinct GPUs; {len(fitting)} eligible GPU(s) are that big ({product_summary(fitting)})",
                )
            placed_here = "; ".join(
                f"{', '.join(p.models)} on {group_text(p.slots)}" for p in self.pods if p.models
            )
            text = (
                f"{est.model} needs {est.explain()} and no eligible GPU has that much left after the "
                f"deployment's larger models ({placed_here})"
            )
        options = list(self.request.smaller_options)
        if est.source == "spec":
            options = ["a smaller vram if the figure is too high", *options]
        return Refusal(reasons.INSUFFICIENT_VRAM, f"{text}. Options: {'; '.join(options)}")

    def _namespace_refusal(self, est: Estimate, closed: list[Slot]) -> Refusal:
        """GPUs with room that only the namespace rule keeps this deployment from."""
        first = closed[0]
        more = (
            f" (and {len(closed) - 1} more GPU(s) with room hold other namespaces' pods)"
            if len(closed) > 1
            else ""
        )
        return Refusal(
            reasons.INSUFFICIENT_GPUS,
            f"{est.model} needs {est.explain()} on {self.replicas} GPU(s); {first.describe()} has room but "
            f"holds pods of namespace {', '.join(self._other_namespaces(first))}{more}; GPUs are not shared "
            "across namespaces (operator flag --allow-cross-namespace-sharing). It is placed when a GPU is free",
        )


def _split(total: int, slots: Sequence[Slot]) -> list[int] | None:
    """The server splits a model's layers over its GPUs by free memory (as Ollama does); ``None`` if it cannot fit."""
    free = sum(max(s.free, 0) for s in slots)
    if free < total:
        return None
    shares = [math.ceil(total * max(s.free, 0) / free) for s in slots]
    if any(share > s.free for share, s in zip(shares, slots, strict=True)):
        shares = [min(share, s.free) for share, s in zip(shares, slots, strict=True)]
        if sum(shares) < total:
            return None
    return shares
