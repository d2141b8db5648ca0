"""Pure: each node's GPUs as the planner may use them, from what the node's sources have said.

A Node's GPU facts (the agent's annotation, the DRA driver's ResourceSlices, GFD labels — see
:func:`gpupin.inventory.read_node`) are read on every Node event. Reading them is not believing
them. Pods are deleted for a lost GPU only when a healthy source said so for a while, or when the
Node object itself is gone; anything else keeps the node's *last good inventory*:

- ``unreadable`` (not JSON, a field of the wrong type, GFD labels that cannot describe the node),
  ``mig`` (GFD labels of MIG devices): the node keeps its last good inventory — its pods keep
  running — and takes no new pods (it is *frozen*);
- ``missing``: no GPU facts any more (annotation removed, no other source) after it had GPUs: the same;
- ``duplicate-uuid``: a GPU UUID another node reports too: the node that had it in its last good
  inventory keeps it and stays as it was; the newcomer takes no new pods (so a node that copies
  the others' UUIDs freezes only itself); where no claimant had it (both new, or read in one batch
  at start-up) neither takes new pods. Nothing is evicted; a newcomer without a past keeps its
  GPUs less the shared ones;
- ``gfd-changed``: GFD labels that describe the node otherwise than before (another count or
  product): GFD gives no UUIDs and no indices, so it cannot say which card changed: frozen;
- ``gpu-gone``: a healthy source (annotation, ResourceSlices; an explicit empty list too) without a
  GPU the node had: the GPU stays for ``grace_seconds``, taking no new pods, then leaves the
  inventory (the operator then deletes the pods on it, with their normal grace). Back in time, it
  is kept;
- a switch from GFD to the agent (or DRA): GFD's stand-in ``GFD-<node>-<i>`` is the reported GPU at
  index ``i`` when the products match — renamed (a :class:`~gpupin.kernel.state.GPUAlias`), not lost;
  agent → GFD labels that agree with the agent's GPUs keep the agent's UUIDs;
- the Node object deleted (:meth:`NodeBook.remove`): its GPUs go at once.

Times: ``clock`` is monotonic seconds (the grace period), ``wall`` the UTC time messages show.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from gpupin import constants
from gpupin.inventory import (
    GPU,
    Inventory,
    NodeInventory,
    NodeReadError,
    Source,
    gfd_uuid,
    read_node,
    same_product,
)
from gpupin.kernel.state import Frozen, GPUAlias

FREEZING = frozenset({"unreadable", "missing", "duplicate-uuid", "mig", "gfd-changed"})
"""Problems that freeze a node: it keeps its last good inventory and takes no new pods."""
PROBLEMS = (*sorted(FREEZING), "gpu-gone")
EVENT_REASONS = {
    "unreadable": "GPUInventoryUnreadable",
    "missing": "GPUInventoryMissing",
    "duplicate-uuid": "DuplicateGPUUUID",
    "mig": "MIGNotUsed",
    "gfd-changed": "GFDLabelsChanged",
    "gpu-gone": "GPUGone",
}
"""The Node Event's reason per problem (Warning); :data:`RESTORED` when none is left (Normal)."""
RESTORED = "GPUInventoryRestored"
_SOURCE_WORDS = {
    "annotation": f"annotation {constants.INVENTORY_ANNOTATION}",
    "slices": "DRA ResourceSlices",
    "gfd": "GFD labels",
}


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class NodeProblem:
    """Why a node's current GPU facts are not used as they are."""

    node: str
    kind: str
    """One of :data:`PROBLEMS`."""
    detail: str
    """What is wrong, without the node's name."""
    since: str
    """When it began (RFC 3339, UTC)."""

    @property
    def freezes(self) -> bool:
        return self.kind in FREEZING

    @property
    def why(self) -> str:
        return f"{self.detail} (since {self.since})"

    @property
    def message(self) -> str:
        return f"node {self.node}: {self.why}"


@dataclass
class _Node:
    reported: NodeInventory | None = None
    """What the node's sources say now (None: nothing usable)."""
    source: Source = ""
    error: NodeReadError | None = None
    good: NodeInventory | None = None
    """The inventory plans use: the last good one, with GPUs gone within the grace period."""
    good_source: Source = ""
    problem: NodeProblem | None = None
    gone: dict[str, tuple[GPU, float, datetime]] = field(default_factory=dict)
    """UUID → (the GPU, when a healthy source first left it out: monotonic and wall)."""
    renamed: dict[str, GPUAlias] = field(default_factory=dict)
    facts: tuple[Any, ...] = ()  # what read_node last read: a heartbeat changes none of it


def _uuids(inventory: NodeInventory | None) -> set[str]:
    return {gpu.uuid for gpu in inventory.gpus} if inventory is not None else set()


def _with_gpus(node: NodeInventory, gpus: list[GPU]) -> NodeInventory:
    """The node with these GPUs; not re-validated: a GPU kept through its grace period may share
    its index with the card that replaced it."""
    return NodeInventory.model_construct(
        name=node.name,
        gpus=sorted(gpus, key=lambda g: (g.index, g.uuid)),
        driver_version=node.driver_version,
        cuda_driver_version=node.cuda_driver_version,
    )


def _summary(inventory: NodeInventory) -> str:
    counts: dict[str, int] = {}
    for gpu in inventory.gpus:
        counts[gpu.describe()] = counts.get(gpu.describe(), 0) + 1
    return " + ".join(f"{n} × {label}" for label, n in counts.items()) or "no GPUs"


def _describes(gfd: NodeInventory, good: NodeInventory) -> bool:
    """Do GFD labels describe the same cards as the node's last good inventory, in the same order?"""
    ours = sorted(good.gpus, key=lambda g: g.index)
    theirs = sorted(gfd.gpus, key=lambda g: g.index)
    return len(ours) == len(theirs) and all(same_product(a, b) for a, b in zip(ours, theirs, strict=True))


class NodeBook:
    """Every node's GPU facts over time, and the planning inventory they make."""

    def __init__(
        self,
        grace_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.grace_seconds = grace_seconds
        """How long a GPU a healthy source stopped reporting keeps its pods (seconds)."""
        self._clock = clock
        self._wall = wall
        self._nodes: dict[str, _Node] = {}
        self._owners: dict[str, set[str]] = {}
        """GPU UUID → the nodes whose current report has it."""
        self._told: dict[str, str] = {}
        """Node → the problem kind last handed out by :meth:`changes`."""
        self._batch: set[str] | None = None  # nodes read since begin_batch, judged at end_batch
        self._judging = False

    # -- input ---------------------------------------------------------------------------

    def begin_batch(self) -> None:
        """Reads until :meth:`end_batch` are judged together (the operator's start-up list): no node
        becomes the incumbent of a UUID another node of the batch reports too."""
        self._batch = set()

    def end_batch(self) -> bool:
        """Judge the batch's nodes; True when the planning inventory changed."""
        names, self._batch = self._batch or set(), None
        self._judging = True
        try:
            return self._apply_all(names)
        finally:
            self._judging = False

    def read(self, name: str, node: Mapping[str, Any], from_slices: NodeInventory | None = None) -> bool:
        """Read a Node object's GPU facts; True when the planning inventory changed."""
        rec = self._nodes.setdefault(name, _Node())
        meta, status = node.get("metadata") or {}, node.get("status") or {}
        facts = (meta.get("annotations"), meta.get("labels"), status.get("capacity"),
                 status.get("allocatable"), from_slices)  # fmt: skip
        if facts == rec.facts and not rec.gone and self._batch is None:
            return False  # the same facts again: nothing to judge (grace periods end in expire)
        rec.facts = facts
        try:
            reported, source = read_node(node, from_slices)
            error = None
        except NodeReadError as exc:
            reported, source, error = None, "", exc
        old = rec.reported
        rec.reported, rec.source, rec.error = reported, source, error
        affected = {name}
        if _uuids(old) != _uuids(reported):
            for uuid in _uuids(old) - _uuids(reported):
                self._owners.get(uuid, set()).discard(name)
            for uuid in _uuids(reported):
                self._owners.setdefault(uuid, set()).add(name)
            affected |= {n for u in _uuids(old) | _uuids(reported) for n in self._owners.get(u, ())}
        if self._batch is not None:
            self._batch |= affected
            return False
        return self._apply_all(affected)

    def remove(self, name: str) -> bool:
        """The Node object is gone: its GPUs leave at once. True when the inventory changed."""
        rec = self._nodes.pop(name, None)
        self._told.pop(name, None)
        if rec is None:
            return False
        affected: set[str] = set()
        for uuid in _uuids(rec.reported):
            owners = self._owners.get(uuid, set())
            owners.discard(name)
            affected |= owners
        self._apply_all(affected)
        return rec.good is not None or rec.problem is not None

    def expire(self) -> bool:
        """Let GPUs whose grace period has passed leave; True when the inventory changed."""
        return self._apply_all(n for n, rec in self._nodes.items() if rec.gone)

    def next_expiry(self) -> float | None:
        """When (monotonic seconds) the next grace period ends; None when none runs."""
        ends = [
            since + self.grace_seconds
            for rec in self._nodes.values()
            if rec.problem is None or not rec.problem.freezes
            for _, since, _ in rec.gone.values()
        ]
        return min(ends, default=None)

    # -- output ----------------------------------------------------------------------------

    def problems(self) -> dict[str, NodeProblem]:
        return {name: rec.problem for name, rec in sorted(self._nodes.items()) if rec.problem}

    def changes(self) -> list[tuple[str, NodeProblem | None, int]]:
        """Nodes whose problem kind changed since the last call: (node, problem or None when
        resolved, GPUs in its planning inventory) — each news once, for Events."""
        result = []
        for name, rec in sorted(self._nodes.items()):
            kind = rec.problem.kind if rec.problem else ""
            if self._told.get(name, "") != kind:
                self._told[name] = kind
                result.append((name, rec.problem, len(rec.good.gpus) if rec.good else 0))
        return result

    def inventory(self) -> tuple[Inventory, Frozen]:
        """The planning inventory (every node's good inventory; a node reporting no GPUs included)
        and what of it is frozen."""
        names = sorted(n for n, rec in self._nodes.items() if rec.good is not None)
        claims: dict[str, str] = {}
        for name in names:  # a card moved: the node that reports it has it, not the one keeping it
            rec = self._nodes[name]
            assert rec.good is not None
            for gpu in rec.good.gpus:
                if gpu.uuid not in rec.gone:
                    claims.setdefault(gpu.uuid, name)
        nodes, gpus_why, aliases = [], {}, {}
        for name in names:
            rec = self._nodes[name]
            assert rec.good is not None
            kept = [g for g in rec.good.gpus if claims.setdefault(g.uuid, name) == name]
            nodes.append(rec.good if len(kept) == len(rec.good.gpus) else _with_gpus(rec.good, kept))
            for uuid, (gpu, _, since) in rec.gone.items():
                deadline = _stamp(since + timedelta(seconds=self.grace_seconds))
                gpus_why[uuid] = (
                    f"GPU {gpu.index} ({uuid}) is no longer reported by its {_SOURCE_WORDS.get(rec.source, 'source')} "
                    f"since {_stamp(since)}; its pods are deleted at {deadline} unless it returns"
                )
            aliases.update(rec.renamed)
        frozen_nodes = {
            n: rec.problem.why for n, rec in self._nodes.items() if rec.problem and rec.problem.freezes
        }
        # UUIDs are unique across nodes by the claims above; indices may repeat (see _with_gpus)
        return Inventory.model_construct(nodes=nodes), Frozen(
            nodes=frozen_nodes, gpus=gpus_why, aliases=aliases
        )

    # -- rules -------------------------------------------------------------------------------

    def _apply_all(self, names: Iterable[str]) -> bool:
        changed = False
        for name in sorted(set(names)):
            if name in self._nodes:
                changed = self._apply(name) or changed
        return changed

    def _apply(self, name: str) -> bool:
        rec = self._nodes[name]
        before = (rec.good, rec.problem, dict(rec.renamed), set(rec.gone))
        shared = {u: sorted(self._owners[u] - {name}) for u in self._contested(name, rec)}
        had_gpus = rec.good is not None and bool(rec.good.gpus)
        if rec.error is not None:
            self._set(rec, name, rec.error.kind, str(rec.error).removeprefix(f"node {name}: "))
        elif rec.reported is None:
            if had_gpus:
                assert rec.good is not None
                self._set(
                    rec,
                    name,
                    "missing",
                    f"has no GPU facts any more (no {constants.INVENTORY_ANNOTATION} annotation, no DRA "
                    f"ResourceSlices, no GFD labels) after it had {len(rec.good.gpus)} GPU(s)",
                )
            else:  # a CPU node
                rec.good, rec.good_source, rec.problem = None, "", None
        elif shared:
            pairs = "; ".join(
                f"GPU {u} is reported by node {', '.join(o)} too" for u, o in sorted(shared.items())
            )
            self._set(
                rec, name, "duplicate-uuid", f"{pairs} (a copied inventory?); no node with it takes new pods"
            )
            if rec.good is None:  # a newcomer keeps what is its alone; in a batch, all (it is frozen)
                kept = [g for g in rec.reported.gpus if self._judging or g.uuid not in shared]
                rec.good, rec.good_source = _with_gpus(rec.reported, kept), rec.source
        elif (
            rec.source == "gfd"
            and had_gpus
            and rec.good is not None
            and not _describes(rec.reported, rec.good)
        ):
            self._set(
                rec,
                name,
                "gfd-changed",
                f"GFD labels now describe {_summary(rec.reported)} where it had {_summary(rec.good)}; GFD gives "
                "no UUIDs or indices, so it cannot say which card changed — run the gpupin agent on the node "
                "(pods placed from GFD labels stay on the agent's GPUs at the same index)",
            )
        elif rec.source == "gfd" and had_gpus and rec.good_source not in ("gfd", ""):
            rec.problem = None  # GFD agrees with what the agent or DRA said: keep their UUIDs
            rec.gone.clear()  # …and says every card of it is there
        else:
            self._accept(rec, name)
        return before != (rec.good, rec.problem, dict(rec.renamed), set(rec.gone))

    def _contested(self, name: str, rec: _Node) -> list[str]:
        """The UUIDs ``name`` reports that another node reports too, but for those in its last good
        inventory and in no claimant's: the incumbent keeps them, only the newcomer is frozen."""
        mine, contested = _uuids(rec.good), []
        for uuid in _uuids(rec.reported):
            others = [self._nodes[o] for o in self._owners[uuid] - {name} if o in self._nodes]
            if others and (uuid not in mine or any(uuid in _uuids(o.good) for o in others)):
                contested.append(uuid)
        return contested

    def _set(self, rec: _Node, name: str, kind: str, detail: str) -> None:
        since = rec.problem.since if rec.problem and rec.problem.kind == kind else _stamp(self._wall())
        rec.problem = NodeProblem(name, kind, detail, since)

    def _accept(self, rec: _Node, name: str) -> None:
        """A healthy report: new GPUs join, missing ones start (or finish) their grace period."""
        assert rec.reported is not None
        reported = rec.reported
        now = self._clock()
        new = _uuids(reported)
        by_index = {gpu.index: gpu for gpu in reported.gpus}
        for gpu in rec.good.gpus if rec.good is not None else []:
            if gpu.uuid in new:
                continue
            target = by_index.get(gpu.index)
            if (
                rec.source != "gfd"
                and gpu.uuid == gfd_uuid(name, gpu.index)
                and target is not None
                and same_product(gpu, target)
            ):
                rec.renamed[gpu.uuid] = GPUAlias(target.uuid, gpu)
                rec.gone.pop(gpu.uuid, None)
                continue
            rec.gone.setdefault(gpu.uuid, (gpu, now, self._wall()))
        for uuid, (_, since, _) in list(rec.gone.items()):
            if uuid in new or now - since >= self.grace_seconds:
                del rec.gone[uuid]
        rec.renamed = {u: alias for u, alias in rec.renamed.items() if alias.uuid in new}
        kept = [gpu for gpu, _, _ in rec.gone.values()]
        rec.good = _with_gpus(reported, [*reported.gpus, *kept]) if kept else reported
        rec.good_source = rec.source
        if rec.gone:
            listed = ", ".join(
                f"GPU {gpu.index} {gpu.describe()} ({uuid})" for uuid, (gpu, _, _) in sorted(rec.gone.items())
            )
            self._set(
                rec,
                name,
                "gpu-gone",
                f"its {_SOURCE_WORDS.get(rec.source, 'source')} no longer reports {listed}; the pods on it are "
                f"deleted after {self.grace_seconds:g} s unless it returns",
            )
        else:
            rec.problem = None
