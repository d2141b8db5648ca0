"""The placement planner: which GPUs each LLMDeployment's pods get.

Pure: no kopf, no kubernetes, no I/O. Input: the deployment, the GPU inventory, the
GPU memory other deployments' pods already hold, and this deployment's existing
pods (so a re-plan keeps them where they are). Output: a :class:`Plan` — placements,
or a refusal with a reason from :mod:`gpupin.reasons` and a message a person can act on.

Rules (see the README for the why):

- a vLLM pod owns its GPUs exclusively; Ollama pods share a GPU by memory budget
  (in the ``dra`` and ``device-plugin`` pinning modes every pod owns its GPUs, since
  neither can hand one GPU to two pods); a GPU is never oversubscribed;
- a tensor-parallel group is ``tensorParallelSize`` GPUs of one product, memory and
  compute capability on one node; a mixed group only with ``allowMixedGPUs``, sized
  to its smallest GPU;
- Ollama puts a model on one GPU when it fits one; a model larger than every GPU may
  span GPUs of one node in one Ollama server; one Ollama pod per GPU (or GPU set);
- choices are best-fit (the smallest GPU that fits, keeping big GPUs for big models)
  and deterministic: the same inputs give the same plan.

:class:`Planner` plans deployments one after another against one cluster state, each
seeing the GPUs the earlier ones took; it keeps indexes so that planning one
deployment does not scan every GPU of a large cluster. :func:`plan` plans one.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from gpupin import naming, reasons
from gpupin.api.v1alpha1 import LLMDeployment, LLMDeploymentSpec, ResolvedEngine
from gpupin.inventory import GPU, Inventory, short_name
from gpupin.quantity import format_gib, parse_bytes
from gpupin.sizing import Estimate, SizingError, estimate

PinningMode = Literal["visible-devices", "dra", "device-plugin"]
PINNING_MODES: tuple[PinningMode, ...] = ("visible-devices", "dra", "device-plugin")
VLLM_MIN_CC = (7, 5)
BF16_MIN_CC = (8, 0)

Outcome = Literal["Placed", "Refused"]


@dataclass(frozen=True)
class Hold:
    """GPU memory that another deployment's pod holds."""

    uuid: str
    vram_bytes: int
    exclusive: bool
    owner: str
    """namespace/name of the holding deployment, for messages."""


@dataclass(frozen=True)
class CurrentPod:
    """A pod of the deployment being planned that already exists."""

    gpu_uuids: tuple[str, ...]
    models: tuple[str, ...]


@dataclass(frozen=True)
class GPUAssignment:
    index: int
    uuid: str
    name: str
    vram_bytes: int
    """Memory this placement reserves on the GPU."""


@dataclass(frozen=True)
class Placement:
    """One pod: the node, the GPUs it holds and the models it serves."""

    pod: str
    node: str
    models: tuple[str, ...]
    gpus: tuple[GPUAssignment, ...]
    dtype: str | None = None
    """vLLM --dtype to render: "half" where a bf16 model lands on compute capability < 8.0."""
    max_model_len: int | None = None
    """vLLM --max-model-len to render, when the spec gave none and gpupin assumed one."""

    @property
    def gpu_uuids(self) -> tuple[str, ...]:
        return tuple(gpu.uuid for gpu in self.gpus)

    def as_json(self) -> dict[str, Any]:
        """The public shape: `gpupin plan -o json` placements and LLMDeployment status.placements."""
        return {
            "pod": self.pod,
            "node": self.node,
            "models": list(self.models),
            "gpus": [
                {"index": g.index, "uuid": g.uuid, "name": g.name, "vramBytes": g.vram_bytes}
                for g in self.gpus
            ],
        }


@dataclass(frozen=True)
class Plan:
    namespace: str
    name: str
    engine: ResolvedEngine
    outcome: Outcome
    reason: str
    message: str
    placements: tuple[Placement, ...] = ()

    @property
    def placed(self) -> bool:
        return self.outcome == "Placed"

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class _Refusal(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


ProductKey = tuple[str, int, str]


class _Slot:
    """One GPU's state during planning."""

    __slots__ = ("exclusive", "exclusive_holders", "free", "gpu", "holders", "key", "node", "order")

    def __init__(self, gpu: GPU, node: str, order: int) -> None:
        self.gpu = gpu
        self.node = node
        self.order = order
        self.key: ProductKey = gpu.product_key
        self.free = gpu.memory
        self.holders: dict[str, int] = {}
        self.exclusive_holders: set[str] = set()
        self.exclusive = False

    @property
    def fully_free(self) -> bool:
        return not self.holders

    @property
    def cc(self) -> tuple[int, int]:
        return self.gpu.cc

    def describe(self) -> str:
        return (
            f"{short_name(self.gpu.name)} {format_gib(self.gpu.memory)} (GPU {self.gpu.index} on {self.node})"
        )


class _ClusterState:
    """Slots plus the indexes that keep a plan from scanning every GPU."""

    def __init__(self, inventory: Inventory, exclusive_mode: bool) -> None:
        self.exclusive_mode = exclusive_mode
        self.slots: dict[str, _Slot] = {}
        self.by_order: list[_Slot] = []
        self.nodes: dict[str, list[_Slot]] = {}
        self.node_mixed: dict[str, bool] = {}
        self.node_pinnable: dict[str, bool] = {}
        self.mig_gpus: list[tuple[str, GPU]] = []
        for node in sorted(inventory.nodes, key=lambda n: n.name):
            self.node_mixed[node.name] = node.mixed
            self.node_pinnable[node.name] = all(gpu.pinnable_by_uuid for gpu in node.gpus)
            slots = []
            for gpu in sorted(node.gpus, key=lambda g: g.index):
                if gpu.mig_enabled:
                    self.mig_gpus.append((node.name, gpu))
                    continue
                slot = _Slot(gpu, node.name, len(self.by_order))
                self.by_order.append(slot)
                self.slots[gpu.uuid] = slot
                slots.append(slot)
            self.nodes[node.name] = slots
        # Slots that can still take shared (Ollama) memory, ordered by free bytes.
        self.shareable: list[tuple[int, int]] = sorted((s.free, s.order) for s in self.by_order)
        # Fully free slots per product key and node, and per key the nodes by free count.
        self.free_by_key: dict[ProductKey, dict[str, list[_Slot]]] = {}
        # count → node positions (sorted), so a choice depends on the state alone, not on its history
        self.count_buckets: dict[ProductKey, dict[int, list[int]]] = {}
        self.node_names = sorted(self.nodes)
        self.node_position = {name: i for i, name in enumerate(self.node_names)}
        self.key_nodes: dict[ProductKey, dict[str, None]] = {}
        for slot in self.by_order:
            self.free_by_key.setdefault(slot.key, {}).setdefault(slot.node, []).append(slot)
            self.key_nodes.setdefault(slot.key, {})[slot.node] = None
        for key, per_node in self.free_by_key.items():
            buckets = self.count_buckets.setdefault(key, {})
            for node_name, slots in per_node.items():
                bisect.insort(buckets.setdefault(len(slots), []), self.node_position[node_name])
        # Keys ordered for best fit: smallest memory first.
        self.keys_by_memory: list[ProductKey] = sorted(self.free_by_key, key=lambda k: (k[1], k[0], k[2]))
        self.undo: list[tuple[_Slot, int, dict[str, int], set[str]]] = []
        self.owner_slots: dict[str, set[str]] = {}
        self.eligible_cache: dict[tuple[object, ...], list[_Slot]] = {}

    # -- index maintenance -------------------------------------------------------------

    def _unindex(self, slot: _Slot) -> None:
        if not slot.exclusive:
            entry = (slot.free, slot.order)
            i = bisect.bisect_left(self.shareable, entry)
            if i < len(self.shareable) and self.shareable[i] == entry:
                del self.shareable[i]
        if slot.fully_free:
            per_node = self.free_by_key[slot.key]
            slots = per_node[slot.node]
            buckets = self.count_buckets[slot.key]
            position = self.node_position[slot.node]
            _discard(buckets[len(slots)], position)
            slots.remove(slot)
            if slots:
                bisect.insort(buckets.setdefault(len(slots), []), position)

    def _index(self, slot: _Slot) -> None:
        if not slot.exclusive:
            bisect.insort(self.shareable, (slot.free, slot.order))
        if slot.fully_free:
            slots = self.free_by_key[slot.key].setdefault(slot.node, [])
            buckets = self.count_buckets[slot.key]
            position = self.node_position[slot.node]
            if slots:
                _discard(buckets[len(slots)], position)
            bisect.insort(slots, slot, key=lambda s: s.gpu.index)
            bisect.insort(buckets.setdefault(len(slots), []), position)

    def reserve(self, slot: _Slot, num_bytes: int, owner: str, exclusive: bool) -> None:
        """Take memory on a slot, remembering how to undo it."""
        self.undo.append((slot, slot.free, dict(slot.holders), set(slot.exclusive_holders)))
        self._unindex(slot)
        slot.free -= num_bytes
        slot.holders[owner] = slot.holders.get(owner, 0) + num_bytes
        if exclusive or self.exclusive_mode:
            slot.exclusive_holders.add(owner)
        slot.exclusive = bool(slot.exclusive_holders)
        self._index(slot)
        self.owner_slots.setdefault(owner, set()).add(slot.gpu.uuid)

    def release(self, owner: str) -> None:
        """Give back everything ``owner`` holds (outside a plan: not undoable)."""
        for uuid in self.owner_slots.pop(owner, set()):
            slot = self.slots[uuid]
            if owner not in slot.holders:
                continue
            self._unindex(slot)
            slot.free += slot.holders.pop(owner)
            slot.exclusive_holders.discard(owner)
            slot.exclusive = bool(slot.exclusive_holders)
            self._index(slot)

    def mark(self) -> int:
        return len(self.undo)

    def rollback(self, mark: int) -> None:
        while len(self.undo) > mark:
            slot, free, holders, exclusive_holders = self.undo.pop()
            self._unindex(slot)
            for owner in set(slot.holders) - set(holders):
                self.owner_slots.get(owner, set()).discard(slot.gpu.uuid)
            slot.free, slot.holders, slot.exclusive_holders = free, holders, exclusive_holders
            slot.exclusive = bool(exclusive_holders)
            self._index(slot)

    # -- queries -------------------------------------------------------------------------

    def best_fit_shared(self, need: int, accept: Callable[[_Slot], bool]) -> _Slot | None:
        """The slot with the least free memory that still fits ``need`` and is accepted."""
        i = bisect.bisect_left(self.shareable, (need, -1))
        while i < len(self.shareable):
            slot = self.by_order[self.shareable[i][1]]
            if accept(slot):
                return slot
            i += 1
        return None

    def free_group(self, key: ProductKey, size: int, node_ok: Callable[[str], bool]) -> list[_Slot] | None:
        """``size`` fully free slots of one key on one node, preferring the node with the fewest
        such slots that suffice (keeps whole nodes free for larger groups)."""
        buckets = self.count_buckets.get(key, {})
        for count in sorted(c for c in buckets if c >= size):
            for position in buckets[count]:
                node = self.node_names[position]
                if node_ok(node):
                    return self.free_by_key[key][node][:size]
        return None


class _Filter:
    """Which GPUs a deployment may use, in the stages a refusal is explained by."""

    def __init__(
        self, spec: LLMDeploymentSpec, engine: ResolvedEngine, pinning: PinningMode, state: _ClusterState
    ) -> None:
        self.pinning = pinning
        self.state = state
        self._key_cache: dict[ProductKey, bool] = {}
        selector = spec.gpu_selector
        self.products = {_norm(p) for p in selector.products} if selector and selector.products else None
        self.min_memory = (
            parse_bytes(selector.min_memory) if selector and selector.min_memory is not None else 0
        )
        self.min_cc = (
            _cc_tuple(selector.min_compute_capability)
            if selector and selector.min_compute_capability
            else None
        )
        self.nodes = set(selector.nodes) if selector and selector.nodes else None
        self.engine_min_cc: tuple[int, int] | None = None
        if engine == "vllm":
            self.engine_min_cc = BF16_MIN_CC if spec.vllm_options.dtype == "bfloat16" else VLLM_MIN_CC

    def selector_ok(self, slot: _Slot) -> bool:
        gpu = slot.gpu
        if self.nodes is not None and slot.node not in self.nodes:
            return False
        if self.products is not None and not (
            _norm(gpu.name) in self.products or _norm(short_name(gpu.name)) in self.products
        ):
            return False
        if gpu.memory < self.min_memory:
            return False
        return self.min_cc is None or gpu.cc >= self.min_cc

    def engine_ok(self, slot: _Slot) -> bool:
        return self.engine_min_cc is None or slot.cc >= self.engine_min_cc

    def pinning_ok(self, node: str) -> bool:
        if self.pinning == "dra":
            return self.state.node_pinnable[node]
        if self.pinning == "device-plugin":
            return not self.state.node_mixed[node]
        return True

    def key_ok(self, key: ProductKey) -> bool:
        """Product-level checks (no node selector), cached per key."""
        ok = self._key_cache.get(key)
        if ok is None:
            name, memory, cc = key
            ok = (
                (
                    self.products is None
                    or _norm(name) in self.products
                    or _norm(short_name(name)) in self.products
                )
                and memory >= self.min_memory
                and (self.min_cc is None or _cc_tuple(cc) >= self.min_cc)
                and (self.engine_min_cc is None or _cc_tuple(cc) >= self.engine_min_cc)
            )
            self._key_cache[key] = ok
        return ok

    def node_ok(self, node: str) -> bool:
        return (self.nodes is None or node in self.nodes) and self.pinning_ok(node)

    def ok(self, slot: _Slot) -> bool:
        return self.key_ok(slot.key) and self.node_ok(slot.node)

    def explain_none(self) -> _Refusal:
        """Why no GPU at all is eligible (called only when that is so)."""
        slots = self.state.by_order
        if not slots:
            if self.state.mig_gpus:
                return _Refusal(
                    reasons.NO_MATCHING_GPU,
                    f"every GPU known has MIG enabled ({len(self.state.mig_gpus)}); gpupin places on whole GPUs only",
                )
            return _Refusal(
                reasons.NO_MATCHING_GPU,
                "no GPU is known in the cluster: no node carries the gpupin inventory annotation or GFD labels "
                "that describe its cards; is the gpupin agent running on the GPU nodes?",
            )
        selected = [s for s in slots if self.selector_ok(s)]
        if not selected:
            return _Refusal(
                reasons.NO_MATCHING_GPU,
                f"gpuSelector matches none of the {len(slots)} GPUs known "
                f"({_product_summary(slots)}); relax spec.gpuSelector",
            )
        capable = [s for s in selected if self.engine_ok(s)]
        if not capable:
            need = ".".join(map(str, self.engine_min_cc or VLLM_MIN_CC))
            why = (
                "vllm.dtype bfloat16 needs compute capability 8.0 or newer"
                if self.engine_min_cc == BF16_MIN_CC
                else "vLLM needs compute capability 7.5 or newer"
            )
            return _Refusal(
                reasons.UNSUPPORTED_COMPUTE_CAPABILITY,
                f"{why}; the eligible GPUs are {_product_summary(selected, with_cc=True)} (need ≥ {need}). "
                + (
                    "Use vllm.dtype auto (float16 on older GPUs) or "
                    if self.engine_min_cc == BF16_MIN_CC
                    else "Use "
                )
                + "engine: ollama, which runs on older GPUs, or select newer GPUs",
            )
        pinnable = [s for s in capable if self.pinning_ok(s.node)]
        if not pinnable:
            if self.pinning == "device-plugin":
                nodes = sorted({s.node for s in capable})
                return _Refusal(
                    reasons.PINNING_UNSUPPORTED,
                    f"pinning mode device-plugin cannot choose a card on nodes with mismatched GPUs "
                    f"({', '.join(nodes)}): nvidia.com/gpu lets the kubelet pick any of them. Use pinning mode "
                    "visible-devices or dra on such nodes",
                )
            return _Refusal(
                reasons.PINNING_UNSUPPORTED,
                "pinning mode dra selects GPUs by UUID, and the eligible GPUs are known only from GFD labels, "
                "which carry none; run the gpupin agent on those nodes",
            )
        return _Refusal(reasons.NO_MATCHING_GPU, "no eligible GPU")  # pragma: no cover - callers check first

    def signature(self) -> tuple[object, ...]:
        """Deployments with the same signature may use the same GPUs."""
        return (
            frozenset(self.products) if self.products is not None else None,
            self.min_memory,
            self.min_cc,
            frozenset(self.nodes) if self.nodes is not None else None,
            self.engine_min_cc,
            self.pinning,
        )

    def eligible(self) -> list[_Slot]:
        """Every GPU the deployment may use, held or not. Scans the cluster once per signature
        (eligibility does not change as GPUs are taken); only refusal paths need it."""
        cache = self.state.eligible_cache
        key = self.signature()
        if key not in cache:
            cache[key] = [s for s in self.state.by_order if self.ok(s)]
        return cache[key]


def _count(n: int, noun: str) -> str:
    return f"a {noun}" if n == 1 else f"{n} {noun}s"


def _discard(sorted_list: list[int], value: int) -> None:
    i = bisect.bisect_left(sorted_list, value)
    if i < len(sorted_list) and sorted_list[i] == value:
        del sorted_list[i]


def _norm(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def _cc_tuple(text: str) -> tuple[int, int]:
    major, minor = text.split(".")
    return int(major), int(minor)


def _product_summary(slots: Sequence[_Slot], with_cc: bool = False) -> str:
    counts: dict[str, int] = {}
    for slot in slots:
        label = f"{short_name(slot.gpu.name)} {format_gib(slot.gpu.memory)}"
        if with_cc:
            label += f" CC {slot.gpu.compute_capability}"
        counts[label] = counts.get(label, 0) + 1
    return ", ".join(f"{n} × {label}" for label, n in sorted(counts.items()))


def _group_text(slots: Sequence[_Slot]) -> str:
    return " + ".join(f"{short_name(s.gpu.name)} {format_gib(s.gpu.memory)}" for s in slots)


def _holders_text(slots: Iterable[_Slot], limit: int = 3) -> str:
    """Who holds memory on these GPUs; only what is shown is formatted (refusals on big clusters)."""
    owners: dict[str, list[_Slot]] = {}
    for slot in slots:
        for owner in slot.holders:
            owners.setdefault(owner, []).append(slot)
    parts = []
    for owner in sorted(owners)[:limit]:
        items = [f"{format_gib(s.holders[owner])} of {s.describe()}" for s in owners[owner][:2]]
        more = len(owners[owner]) - len(items)
        parts.append(f"{owner} holds {', '.join(items)}" + (f" and {more} more GPU(s)" if more else ""))
    if len(owners) > limit:
        parts.append(f"{len(owners) - limit} more deployment(s)")
    return "; ".join(parts)


class Planner:
    """Plans deployments one after another against one cluster state.

    Each placed plan's GPUs are taken before the next deployment is planned, which is
    how ``gpupin plan`` treats a file of deployments and how the operator serializes
    allocations.
    """

    def __init__(
        self,
        inventory: Inventory,
        holds: Iterable[Hold] = (),
        pinning: PinningMode = "visible-devices",
    ) -> None:
        if pinning not in PINNING_MODES:
            raise ValueError(f"pinning mode {pinning!r} is not one of {', '.join(PINNING_MODES)}")
        self.inventory = inventory
        self.pinning = pinning
        self.state = _ClusterState(inventory, exclusive_mode=pinning != "visible-devices")
        self._empty: Planner | None = None
        self._is_capacity_view = False
        self.hold(holds)

    def hold(self, holds: Iterable[Hold]) -> None:
        """Record GPU memory that pods hold (holds on GPUs the inventory lacks are ignored)."""
        for hold in holds:
            slot = self.state.slots.get(hold.uuid)
            if slot is not None:
                self.state.reserve(slot, hold.vram_bytes, hold.owner, hold.exclusive)
        self.state.undo.clear()

    def release(self, owner: str) -> None:
        """Forget everything ``owner`` ("namespace/name") holds, before re-planning it or once it is gone.

        With :meth:`hold`, this lets one Planner follow a changing cluster instead of being rebuilt
        from the whole inventory for every plan (what the operator does)."""
        self.state.release(owner)

    def _capacity_planner(self) -> Planner:
        """The same cluster with nothing held: tells 'too small' from 'taken'."""
        if self._empty is None:
            self._empty = Planner(self.inventory, (), self.pinning)
            self._empty._is_capacity_view = True
        return self._empty

    def plan(
        self, deployment: LLMDeployment, current: Sequence[CurrentPod] = (), commit: bool = True
    ) -> Plan:
        """Plan one deployment; when placed (and ``commit``), its GPUs are taken for the ones planned after it."""
        spec = deployment.spec
        engine = spec.resolved_engine
        mark = self.state.mark()
        try:
            if engine == "vllm":
                placements, reason, message = _VLLMPlan(self, deployment, current).run()
            else:
                placements, reason, message = _OllamaPlan(self, deployment, current).run()
        except _Refusal as refusal:
            self.state.rollback(mark)
            return Plan(
                namespace=deployment.metadata.namespace,
                name=deployment.metadata.name,
                engine=engine,
                outcome="Refused",
                reason=refusal.reason,
                message=refusal.message,
            )
        if commit:
            self.state.undo.clear()
        else:
            self.state.rollback(mark)
        return Plan(
            namespace=deployment.metadata.namespace,
            name=deployment.metadata.name,
            engine=engine,
            outcome="Placed",
            reason=reason,
            message=message,
            placements=tuple(sorted(placements, key=lambda p: p.pod)),
        )

    def fits_when_empty(self, deployment: LLMDeployment) -> bool:
        """Would the deployment be placed if no other deployment held anything?"""
        if self._is_capacity_view:
            return False  # this planner already is the empty cluster, and the plan failed on it
        return self._capacity_planner().plan(deployment, commit=False).placed


def plan(
    deployment: LLMDeployment,
    inventory: Inventory,
    holds: Iterable[Hold] = (),
    pinning: PinningMode = "visible-devices",
    current: Sequence[CurrentPod] = (),
) -> Plan:
    """Plan one deployment: the pure function the operator's reconcile calls."""
    return Planner(inventory, holds, pinning).plan(deployment, current)


def _sized(spec: LLMDeploymentSpec) -> list[Estimate]:
    try:
        return [estimate(model, spec) for model in spec.models]
    except SizingError as exc:
        raise _Refusal(reasons.UNKNOWN_MODEL_SIZE, str(exc)) from exc


class _EnginePlan:
    def __init__(self, planner: Planner, deployment: LLMDeployment, current: Sequence[CurrentPod]) -> None:
        self.planner = planner
        self.state = planner.state
        self.deployment = deployment
        self.spec = deployment.spec
        self.owner = deployment.key
        self.current = current
        self.filter = _Filter(self.spec, self.spec.resolved_engine, planner.pinning, planner.state)

    def ensure_eligible(self) -> None:
        """Refuse early, with the stage that excluded everything, when no GPU is eligible."""
        state, filt = self.state, self.filter
        if not any(
            filt.key_ok(key) and any(filt.node_ok(node) for node in state.key_nodes[key])
            for key in state.keys_by_memory
        ):
            raise filt.explain_none()

    def capacity_exists(self) -> bool:
        return self.planner.fits_when_empty(self.deployment)


class _VLLMPlan(_EnginePlan):
    def run(self) -> tuple[list[Placement], str, str]:
        spec = self.spec
        est = _sized(spec)[0]
        tp = spec.tensor_parallel_size
        heads = est.facts.attention_heads if est.facts else None
        if heads is not None and heads % tp:
            divisors = [d for d in range(1, heads + 1) if heads % d == 0 and d <= 16]
            raise _Refusal(
                reasons.INVALID_SPEC,
                f"tensorParallelSize {tp} does not divide the {heads} attention heads of {est.model}; "
                f"use one of {', '.join(map(str, divisors))}",
            )
        self.est = est
        self.tp = tp
        self.util = spec.vllm_options.gpu_memory_utilization
        self.per_rank = est.per_gpu(tp)
        self.ensure_eligible()
        placements: list[Placement] = []
        warnings: list[tuple[str, str]] = []
        kept = 0
        for pod in sorted(self.current, key=lambda p: p.gpu_uuids):
            if kept >= spec.replicas:
                break
            group = self._still_valid(pod)
            if group is not None:
                placements.append(self._take(group, warnings))
                kept += 1
        for _ in range(spec.replicas - kept):
            group = self._choose_group()
            placements.append(self._take(group, warnings))
        reason = warnings[0][0] if warnings else reasons.PLACED_OK
        summary = f"{est.model} on {len(placements)} pod(s), {tp} GPU(s) each; needs {est.explain(tp)}"
        if tp > 1:
            summary += f", {format_gib(self.per_rank)} per rank"
        message = "; ".join([summary, *dict.fromkeys(text for _, text in warnings)])
        return placements, reason, message

    def _fits(self, slot: _Slot) -> bool:
        return self.per_rank <= self.util * slot.gpu.memory

    def _still_valid(self, pod: CurrentPod) -> list[_Slot] | None:
        slots = [self.state.slots.get(uuid) for uuid in pod.gpu_uuids]
        if len(slots) != self.tp or any(s is None for s in slots):
            return None
        group = [s for s in slots if s is not None]
        if len({s.node for s in group}) != 1 or not all(s.fully_free and self.filter.ok(s) for s in group):
            return None
        if len({s.key for s in group}) > 1 and not self.spec.allow_mixed_gpus:
            return None
        if not self._fits(min(group, key=lambda s: s.gpu.memory)):
            return None
        return sorted(group, key=lambda s: s.gpu.index)

    def _prefers_bf16(self) -> bool:
        dtype = self.spec.vllm_options.dtype
        return dtype == "auto" and (self.est.facts is None or self.est.facts.dtype == "bfloat16")

    def _choose_group(self) -> list[_Slot]:
        keys = [
            k
            for k in self.state.keys_by_memory
            if self.filter.key_ok(k) and self.util * k[1] >= self.per_rank
        ]
        if self._prefers_bf16():  # a GPU that runs bf16 natively beats a float16 fallback
            keys.sort(key=lambda k: _cc_tuple(k[2]) < BF16_MIN_CC)
        for key in keys:
            group = self.state.free_group(key, self.tp, self.filter.node_ok)
            if group is not None:
                return group
        if self.tp > 1 and self.spec.allow_mixed_gpus:
            group = self._mixed_group(lambda s: s.fully_free)
            if group is not None:
                return group
        raise self._refusal()

    def _mixed_group(self, usable: Callable[[_Slot], bool]) -> list[_Slot] | None:
        """The smallest-memory set of ``tp`` usable GPUs on one node that each fit a rank."""
        best: tuple[tuple[int, int], list[_Slot]] | None = None
        for node, slots in self.state.nodes.items():
            if not self.filter.node_ok(node):
                continue
            fitting = sorted(
                (s for s in slots if usable(s) and self.filter.key_ok(s.key) and self._fits(s)),
                key=lambda s: (s.gpu.memory, s.gpu.index),
            )
            if len(fitting) >= self.tp:
                group = fitting[: self.tp]
                score = (sum(s.gpu.memory for s in group), group[0].order)
                if best is None or score < best[0]:
                    best = (score, group)
        return sorted(best[1], key=lambda s: s.gpu.index) if best else None

    def _take(self, group: list[_Slot], warnings: list[tuple[str, str]]) -> Placement:
        gpus = []
        for slot in group:
            reserved = math.floor(self.util * slot.gpu.memory)
            self.state.reserve(slot, reserved, self.owner, exclusive=True)
            gpus.append(GPUAssignment(slot.gpu.index, slot.gpu.uuid, slot.gpu.name, reserved))
        if len({s.key for s in group}) > 1:
            smallest = min(s.gpu.memory for s in group)
            stranded = sum(s.gpu.memory - smallest for s in group)
            warnings.append(
                (
                    reasons.MIXED_GPUS_ALLOWED,
                    f"tensor parallel over mismatched GPUs ({_group_text(group)}) as allowMixedGPUs permits: "
                    f"every rank is sized to the smallest, {self.tp} × {format_gib(smallest)} usable, "
                    f"{format_gib(stranded)} stranded",
                )
            )
        dtype = None
        if self._prefers_bf16() and any(s.cc < BF16_MIN_CC for s in group):
            dtype = "half"
            old = sorted({short_name(s.gpu.name) for s in group if s.cc < BF16_MIN_CC})
            warnings.append(
                (
                    reasons.DTYPE_FALLBACK,
                    f"{self.est.model} is bfloat16 but {', '.join(old)} (compute capability below 8.0) has no "
                    "bfloat16: it is served as float16 (--dtype half)",
                )
            )
        return Placement(
            pod=naming.pod_name(self.deployment.metadata.name, (s.gpu.uuid for s in group)),
            node=group[0].node,
            models=(self.est.model,),
            gpus=tuple(gpus),
            dtype=dtype,
            max_model_len=self.est.context_tokens if self.est.assumed_context else None,
        )

    # -- why not -------------------------------------------------------------------------

    def _refusal(self) -> _Refusal:
        eligible = self.filter.eligible()
        if self.capacity_exists():
            return self._taken(eligible)
        by_node: dict[str, list[_Slot]] = {}
        for slot in eligible:
            by_node.setdefault(slot.node, []).append(slot)
        most = max(by_node.items(), key=lambda kv: (len(kv[1]), -kv[1][0].order))
        if len(most[1]) < self.tp:
            return _Refusal(
                reasons.TOO_FEW_GPUS,
                f"tensorParallelSize {self.tp} needs {self.tp} GPUs on one node; the most eligible GPUs on one "
                f"node is {len(most[1])} ({most[0]}: {_group_text(most[1])})",
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
            and not self.spec.allow_mixed_gpus
            and not matching_groups
            and (mixed_groups or not matching_exists)
        ):
            return self._heterogeneous(by_node, mixed_groups > 0)
        groups = mixed_groups if self.spec.allow_mixed_gpus else matching_groups
        if groups:
            return _Refusal(
                reasons.TOO_FEW_GPUS,
                f"replicas {self.spec.replicas} need {self.spec.replicas} groups of {self.tp} GPU(s) with ≥ "
                f"{format_gib(self.per_rank / self.util)} each; the eligible GPUs form {groups}",
            )
        return self._too_small(eligible)

    def _taken(self, eligible: list[_Slot]) -> _Refusal:
        # the GPUs that could form a group if nobody held them
        groups: dict[tuple[str, ProductKey | None], list[_Slot]] = {}
        for slot in eligible:
            if self._fits(slot):
                key = None if self.spec.allow_mixed_gpus else slot.key
                groups.setdefault((slot.node, key), []).append(slot)
        fitting = [s for members in groups.values() if len(members) >= self.tp for s in members]
        return _Refusal(
            reasons.INSUFFICIENT_GPUS,
            f"{self.est.model} needs {_count(self.spec.replicas * self.tp, 'free GPU')} with ≥ "
            f"{format_gib(self.per_rank / self.util)} each (vLLM owns its GPUs){self._grouping()}; GPUs that big exist but "
            f"others hold them: {_holders_text(fitting)}. It is placed when they are freed",
        )

    def _grouping(self) -> str:
        if self.tp == 1:
            return ""
        return f", in {_count(self.spec.replicas, 'group')} of {self.tp} matching GPUs on one node"

    def _heterogeneous(self, by_node: dict[str, list[_Slot]], mixed_fit: bool) -> _Refusal:
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
            f"tensorParallelSize {self.tp} over {_group_text(group)} gives {self.tp} × {format_gib(smallest)} usable "
            f"— {compare}, with {format_gib(stranded)} stranded (vLLM sizes every rank to the smallest GPU)"
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
        options.append("engine: ollama, which uses each card's full memory (one server per GPU)")
        if mixed_fit:
            options.append(f"allowMixedGPUs: true to accept {self.tp} × {format_gib(smallest)}")
        return _Refusal(reasons.HETEROGENEOUS_TENSOR_PARALLEL, f"{text}. Instead: {'; or '.join(options)}")

    def _too_small(self, eligible: list[_Slot]) -> _Refusal:
        biggest = max(eligible, key=lambda s: (s.gpu.memory, -s.order))
        text = (
            f"{self.est.model} needs {self.est.explain(self.tp)}"
            + (f", {format_gib(self.per_rank)} per rank over {self.tp} GPUs" if self.tp > 1 else "")
            + f"; the largest eligible GPU gives vLLM {format_gib(self.util * biggest.gpu.memory)} "
            f"({biggest.describe()} × gpuMemoryUtilization {self.util})"
        )
        options = []
        heads = self.est.facts.attention_heads if self.est.facts else None
        for size in range(self.tp + 1, 17):
            if heads is not None and heads % size:
                continue
            if self.est.per_gpu(size) <= self.util * biggest.gpu.memory:
                options.append(
                    f"tensorParallelSize {size} over matching GPUs of ≥ {format_gib(self.est.per_gpu(size) / self.util)}"
                )
                break
        options.append("a quantized variant (AWQ, GPTQ, FP8)")
        if self.est.facts is not None:
            ollama_name = self.est.facts.ollama_names[0] if self.est.facts.ollama_names else None
            if ollama_name:
                options.append(
                    f"engine: ollama with {ollama_name} ({self.est.facts.ollama_quantization}, "
                    f"{format_gib(self.est.facts.ollama_weights_bytes)} of weights)"
                )
        if self.est.kv_bytes > self.est.weights_bytes / 4:
            options.append("a smaller vllm.maxModelLen (the KV cache grows with it)")
        return _Refusal(reasons.INSUFFICIENT_VRAM, f"{text}. Options: {'; '.join(options)}")


@dataclass
class _PodSet:
    slots: list[_Slot]
    models: list[str] = field(default_factory=list)


class _OllamaPlan(_EnginePlan):
    def run(self) -> tuple[list[Placement], str, str]:
        estimates = sorted(_sized(self.spec), key=lambda e: (-e.need_on(1), e.model))
        self.ensure_eligible()
        self.pods: list[_PodSet] = []
        self.pod_of: dict[str, _PodSet] = {}  # uuid -> pod set
        self.reserved: dict[str, int] = {}  # uuid -> bytes this deployment reserved
        self.on_gpus: dict[str, set[str]] = {e.model: set() for e in estimates}  # model -> uuids
        by_name = {e.model: e for e in estimates}
        replicas = self.spec.replicas
        for pod in sorted(self.current, key=lambda p: p.gpu_uuids):
            slots = self._valid_current(pod)
            if slots is None:
                continue
            podset = self._pod_for(slots)
            for model in sorted(
                pod.models, key=lambda m: (-by_name[m].need_on(1), m) if m in by_name else (0, m)
            ):
                est = by_name.get(model)
                if est is None or len(self.on_gpus[model]) >= replicas:
                    continue
                self._put_in_pod(est, podset)
        for est in estimates:
            while sum(1 for p in self.pods if est.model in p.models) < replicas:
                if not self._place_replica(est):
                    raise self._refusal(est)
        placements = [self._placement(pod) for pod in self.pods if pod.models]
        options = self.spec.ollama_options
        sizes = ", ".join(f"{e.model} {e.explain().split(' (', 1)[0]}" for e in estimates)
        message = (
            f"{len(placements)} Ollama pod(s) on {sum(len(p.gpus) for p in placements)} GPU(s); {sizes} "
            f"(context {options.context_length} × {options.num_parallel} parallel, kept loaded)"
        )
        return placements, reasons.PLACED_OK, message

    # -- pods of this deployment -------------------------------------------------------

    def _valid_current(self, pod: CurrentPod) -> list[_Slot] | None:
        slots = [self.state.slots.get(uuid) for uuid in pod.gpu_uuids]
        if not slots or any(s is None for s in slots):
            return None
        found = [s for s in slots if s is not None]
        if len({s.node for s in found}) != 1 or any(s.exclusive or not self.filter.ok(s) for s in found):
            return None
        if any(s.gpu.uuid in self.pod_of for s in found):
            return None
        return sorted(found, key=lambda s: s.gpu.index)

    def _pod_for(self, slots: list[_Slot]) -> _PodSet:
        podset = _PodSet(slots)
        self.pods.append(podset)
        for slot in slots:
            self.pod_of[slot.gpu.uuid] = podset
        return podset

    def _reserve(self, slot: _Slot, num_bytes: int, model: str) -> None:
        self.state.reserve(slot, num_bytes, self.owner, exclusive=False)
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
        # 1. a GPU this deployment already uses: fewer pods, and Ollama shares the server
        for podset in sorted(self.pods, key=lambda p: (min(s.free for s in p.slots), p.slots[0].order)):
            if len(podset.slots) == 1 and podset.slots[0].free >= single and self._put_in_pod(est, podset):
                return True
        for podset in self.pods:
            if len(podset.slots) > 1 and self._put_in_pod(est, podset):
                return True
        # 2. the best-fitting GPU anywhere
        slot = self.state.best_fit_shared(
            single, lambda s: s.gpu.uuid not in self.pod_of and self.filter.ok(s)
        )
        if slot is not None:
            podset = self._pod_for([slot])
            self._reserve(slot, single, est.model)
            podset.models.append(est.model)
            return True
        # 3. larger than every single eligible GPU: span GPUs of one node in one Ollama server
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

    def _largest_eligible(self) -> int:
        if not hasattr(self, "_largest"):
            self._largest = max((s.gpu.memory for s in self.filter.eligible()), default=0)
        return self._largest

    def _span_group(self, est: Estimate) -> list[_Slot] | None:
        best: tuple[tuple[int, int, int], list[_Slot]] | None = None
        for node, slots in self.state.nodes.items():
            if not self.filter.node_ok(node):
                continue
            usable = sorted(
                (
                    s
                    for s in slots
                    if not s.exclusive and s.gpu.uuid not in self.pod_of and self.filter.key_ok(s.key)
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
        return Placement(
            pod=naming.pod_name(self.deployment.metadata.name, (s.gpu.uuid for s in podset.slots)),
            node=podset.slots[0].node,
            models=tuple(podset.models),
            gpus=tuple(
                GPUAssignment(s.gpu.index, s.gpu.uuid, s.gpu.name, self.reserved.get(s.gpu.uuid, 0))
                for s in podset.slots
            ),
        )

    # -- why not -------------------------------------------------------------------------

    def _refusal(self, est: Estimate) -> _Refusal:
        if self.capacity_exists():
            eligible = [
                s for s in self.filter.eligible() if s.gpu.memory >= est.need_on(1)
            ] or self.filter.eligible()
            return _Refusal(
                reasons.INSUFFICIENT_GPUS,
                f"{est.model} needs {est.explain()} on {self.spec.replicas} GPU(s); GPUs with that much memory exist "
                f"but others hold it: {_holders_text(eligible) or 'no room left'}. It is placed when memory is freed",
            )
        eligible = self.filter.eligible()
        biggest = max(eligible, key=lambda s: (s.gpu.memory, -s.order))
        per_node: dict[str, list[_Slot]] = {}
        for slot in eligible:
            per_node.setdefault(slot.node, []).append(slot)
        node, slots = max(
            per_node.items(), key=lambda kv: (sum(s.gpu.memory for s in kv[1]), -kv[1][0].order)
        )
        text = f"{est.model} needs {est.explain()}; the largest eligible GPU is {biggest.describe()}"
        if len(slots) > 1:
            text += (
                f" and the most on one node, spanning its GPUs in one Ollama server, is "
                f"{format_gib(sum(s.gpu.memory for s in slots))} ({node}: {_group_text(slots)}), "
                f"which needs {format_gib(est.need_on(len(slots)))} with per-GPU overhead"
            )
        if est.need_on(1) <= biggest.gpu.memory:
            fitting = [s for s in eligible if s.gpu.memory >= est.need_on(1)]
            if self.spec.replicas > len(fitting):
                return _Refusal(
                    reasons.TOO_FEW_GPUS,
                    f"replicas {self.spec.replicas} needs {est.model} ({est.explain()}) on {self.spec.replicas} "
                    f"distinct GPUs; {len(fitting)} eligible GPU(s) are that big ({_product_summary(fitting)})",
                )
            own = "; ".join(f"{', '.join(p.models)} on {_group_text(p.slots)}" for p in self.pods if p.models)
            text = (
                f"{est.model} needs {est.explain()} and no eligible GPU has that much left after the "
                f"deployment's larger models ({own})"
            )
        options = [
            "a smaller model or quantization",
            "a lower ollama.contextLength or numParallel (smaller KV cache)",
        ]
        if est.source == "spec":
            options = ["a smaller vram if the figure is too high", *options]
        return _Refusal(reasons.INSUFFICIENT_VRAM, f"{text}. Options: {'; '.join(options)}")


def _split(total: int, slots: Sequence[_Slot]) -> list[int] | None:
    """Ollama splits a model's layers over its GPUs by free memory; ``None`` if it cannot fit."""
    free = sum(max(s.free, 0) for s in slots)
    if free < total:
        return None
    shares = [math.ceil(total * max(s.free, 0) / free) for s in slots]
    if any(share > s.free for share, s in zip(shares, slots, strict=True)):
        shares = [min(share, s.free) for share, s in zip(shares, slots, strict=True)]
        if sum(shares) < total:
            return None
    return shares
