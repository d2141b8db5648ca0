"""The cluster as the planner sees it: one slot per whole GPU, and the indexes over them.

Pure and generic: it knows GPUs, nodes, memory and who holds what — no engine, no pinning mode.
A slot's memory is taken with :meth:`ClusterState.reserve` (undoable within one plan through
:meth:`ClusterState.mark` and :meth:`ClusterState.rollback`). The indexes keep a plan from
scanning every GPU of a large cluster: GPUs already shared by free bytes, and fully free GPUs
per product key and node, bucketed by how many each node has. A frozen slot (:class:`Frozen`) is in
neither index: it keeps the pods already on it and takes no new ones.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from gpupin.inventory import GPU, Inventory, short_name
from gpupin.quantity import format_gib

ProductKey = tuple[str, int, str]
"""(product name, memory bytes, compute capability): GPUs with one key are interchangeable."""


@dataclass(frozen=True)
class GPUAlias:
    """A GPU that pods were placed on under another UUID: GFD's stand-in ``GFD-<node>-<i>`` for the
    card the agent (or DRA) now reports at index ``i`` with the same product."""

    uuid: str
    """The UUID the node reports now."""
    was: GPU
    """The GPU as those pods name it (index, stand-in UUID, GFD's product name)."""


@dataclass(frozen=True)
class Frozen:
    """What of the planning inventory takes no new pods, and why. Existing pods stay where they are.

    The operator keeps a node's last good inventory while its current GPU facts cannot be used
    (unreadable, missing, a UUID another node reports too, GFD labels that changed) and keeps a
    GPU a healthy source stopped reporting for a grace period; both serve the pods already there
    and nothing new."""

    nodes: Mapping[str, str] = field(default_factory=dict)
    """Node name → why it takes no new pods."""
    gpus: Mapping[str, str] = field(default_factory=dict)
    """GPU UUID → why it takes no new pods."""
    aliases: Mapping[str, GPUAlias] = field(default_factory=dict)
    """UUID pods were placed with → the GPU it is now (GFD stand-ins of a node the agent now reports)."""

    def why(self, node: str, uuid: str) -> str | None:
        """Why a GPU takes no new pods (its node's reason first); None when it does."""
        return self.nodes.get(node) or self.gpus.get(uuid)


NOT_FROZEN = Frozen()


@dataclass(frozen=True)
class NodeFacts:
    """What a pinning mode may ask of a node."""

    name: str
    mixed: bool
    """The node has GPUs of more than one product key."""
    pinnable_by_uuid: bool
    """Every GPU of the node has a UUID (known from the agent or DRA, not only GFD labels)."""


class Slot:
    """One GPU's state during planning."""

    __slots__ = ("exclusive", "exclusive_holders", "free", "frozen", "gpu", "holders", "key", "node", "order")

    def __init__(self, gpu: GPU, node: str, order: int, frozen: str | None = None) -> None:
        self.gpu = gpu
        self.node = node
        self.order = order
        self.frozen = frozen
        """Why the GPU takes no new pods (None: it does)."""
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


class ClusterState:
    """Slots plus the indexes that keep a plan from scanning every GPU.

    ``exclusive_only``: every hold owns its GPUs (pinning modes that cannot hand one GPU to two
    pods), whatever the pod's own placement says. ``frozen``: nodes and GPUs that keep their pods
    and take no new ones, and the UUIDs pods know some GPUs by."""

    def __init__(
        self,
        inventory: Inventory,
        exclusive_only: bool,
        frozen: Frozen = NOT_FROZEN,
        shared_first_below: tuple[int, int] | None = None,
    ) -> None:
        self.exclusive_only = exclusive_only
        self.frozen = frozen
        self.slots: dict[str, Slot] = {}
        self.by_order: list[Slot] = []
        self.nodes: dict[str, list[Slot]] = {}
        self.node_facts: dict[str, NodeFacts] = {}
        self.mig_gpus: list[tuple[str, GPU]] = []
        for node in sorted(inventory.nodes, key=lambda n: n.name):
            self.node_facts[node.name] = NodeFacts(
                node.name, node.mixed, all(gpu.pinnable_by_uuid for gpu in node.gpus)
            )
            slots = []
            for gpu in sorted(node.gpus, key=lambda g: g.index):
                if gpu.mig_enabled:
                    self.mig_gpus.append((node.name, gpu))
                    continue
                slot = Slot(gpu, node.name, len(self.by_order), frozen.why(node.name, gpu.uuid))
                self.by_order.append(slot)
                self.slots[gpu.uuid] = slot
                slots.append(slot)
            self.nodes[node.name] = slots
        # Slots some pod shares already (held, no exclusive holder), ordered by free bytes.
        self.partly_used: list[tuple[int, int]] = []
        # Fully free slots per product key and node, and per key the nodes by free count.
        self.free_by_key: dict[ProductKey, dict[str, list[Slot]]] = {}
        # count → node positions (sorted), so a choice depends on the state alone, not on its history
        self.count_buckets: dict[ProductKey, dict[int, list[int]]] = {}
        self.node_names = sorted(self.nodes)
        self.node_position = {name: i for i, name in enumerate(self.node_names)}
        self.key_nodes: dict[ProductKey, dict[str, None]] = {}
        for slot in self.by_order:
            per_key = self.free_by_key.setdefault(slot.key, {})
            if not slot.frozen:
                per_key.setdefault(slot.node, []).append(slot)
            self.key_nodes.setdefault(slot.key, {})[slot.node] = None
        for key, per_node in self.free_by_key.items():
            buckets = self.count_buckets.setdefault(key, {})
            for node_name, slots in per_node.items():
                bisect.insort(buckets.setdefault(len(slots), []), self.node_position[node_name])
        # Keys ordered for best fit: smallest memory first.
        self.keys_by_memory: list[ProductKey] = sorted(self.free_by_key, key=lambda k: (k[1], k[0], k[2]))
        # Keys in the order a shared server opens a free GPU: those below ``shared_first_below``
        # (the oldest compute capability a GPU-owning engine runs on: only shared servers can use
        # them) first, then by memory, smallest first.
        floor = shared_first_below or (0, 0)
        self.keys_for_sharing: list[ProductKey] = sorted(
            self.free_by_key, key=lambda k: (_cc(k[2]) >= floor, k[1], _cc(k[2]), k[0])
        )
        self.undo: list[tuple[Slot, int, dict[str, int], set[str]]] = []
        self.owner_slots: dict[str, set[str]] = {}
        self.eligible_cache: dict[tuple[object, ...], list[Slot]] = {}
        self.largest_cache: dict[tuple[object, ...], int] = {}

    # -- index maintenance -------------------------------------------------------------

    def _unindex(self, slot: Slot) -> None:
        if slot.frozen:
            return
        if not slot.exclusive and not slot.fully_free:
            entry = (slot.free, slot.order)
            i = bisect.bisect_left(self.partly_used, entry)
            if i < len(self.partly_used) and self.partly_used[i] == entry:
                del self.partly_used[i]
        if slot.fully_free:
            per_node = self.free_by_key[slot.key]
            slots = per_node[slot.node]
            buckets = self.count_buckets[slot.key]
            position = self.node_position[slot.node]
            _discard(buckets[len(slots)], position)
            slots.remove(slot)
            if slots:
                bisect.insort(buckets.setdefault(len(slots), []), position)

    def _index(self, slot: Slot) -> None:
        if slot.frozen:
            return
        if not slot.exclusive and not slot.fully_free:
            bisect.insort(self.partly_used, (slot.free, slot.order))
        if slot.fully_free:
            slots = self.free_by_key[slot.key].setdefault(slot.node, [])
            buckets = self.count_buckets[slot.key]
            position = self.node_position[slot.node]
            if slots:
                _discard(buckets[len(slots)], position)
            bisect.insort(slots, slot, key=lambda s: s.gpu.index)
            bisect.insort(buckets.setdefault(len(slots), []), position)

    def reserve(self, slot: Slot, num_bytes: int, owner: str, exclusive: bool) -> None:
        """Take memory on a slot, remembering how to undo it."""
        self.undo.append((slot, slot.free, dict(slot.holders), set(slot.exclusive_holders)))
        self._unindex(slot)
        slot.free -= num_bytes
        slot.holders[owner] = slot.holders.get(owner, 0) + num_bytes
        if exclusive or self.exclusive_only:
            slot.exclusive_holders.add(owner)
        slot.exclusive = bool(slot.exclusive_holders)
        self._index(slot)
        self.owner_slots.setdefault(owner, set()).add(slot.gpu.uuid)

    def release(self, owner: str, undoable: bool = False) -> None:
        """Give back everything ``owner`` holds; ``undoable``: recorded like a reservation, so a
        :meth:`rollback` to an earlier :meth:`mark` gives it back (a search trying another layout)."""
        for uuid in sorted(self.owner_slots.pop(owner, set())):
            slot = self.slots[uuid]
            if owner not in slot.holders:
                continue
            if undoable:
                self.undo.append((slot, slot.free, dict(slot.holders), set(slot.exclusive_holders)))
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
            for owner in holders:  # an undone release
                self.owner_slots.setdefault(owner, set()).add(slot.gpu.uuid)
            slot.free, slot.holders, slot.exclusive_holders = free, holders, exclusive_holders
            slot.exclusive = bool(exclusive_holders)
            self._index(slot)

    # -- queries -------------------------------------------------------------------------

    def slot_of(self, uuid: str) -> Slot | None:
        """The slot of a GPU by the UUID a pod names it with (an alias included)."""
        slot = self.slots.get(uuid)
        if slot is None and (alias := self.frozen.aliases.get(uuid)) is not None:
            slot = self.slots.get(alias.uuid)
        return slot

    def as_named(self, slot: Slot, uuids: Iterable[str]) -> GPU:
        """The GPU of ``slot`` as a pod naming ``uuids`` knows it: under its alias where the pod
        uses one (so a kept pod is rendered exactly as before), else as the inventory has it."""
        for uuid in uuids:
            alias = self.frozen.aliases.get(uuid)
            if alias is not None and alias.uuid == slot.gpu.uuid:
                return alias.was
        return slot.gpu

    def best_fit_shared(
        self, need: int, key_ok: Callable[[ProductKey], bool], accept: Callable[[Slot], bool]
    ) -> Slot | None:
        """Where a shared server puts ``need`` bytes: the GPU already shared with the least free
        memory that still fits and is accepted; else a free GPU, opened in :attr:`keys_for_sharing`
        order (an old GPU before one that exclusive engines could use), on the node with the
        fewest free GPUs of its kind (whole nodes stay free for tensor-parallel groups)."""
        i = bisect.bisect_left(self.partly_used, (need, -1))
        while i < len(self.partly_used):
            slot = self.by_order[self.partly_used[i][1]]
            if accept(slot):
                return slot
            i += 1
        for key in self.keys_for_sharing:
            if key[1] < need or not key_ok(key):
                continue
            buckets = self.count_buckets.get(key, {})
            for count in sorted(buckets):
                for position in buckets[count]:
                    for slot in self.free_by_key[key][self.node_names[position]]:
                        if slot.free >= need and accept(slot):
                            return slot
        return None

    def free_group(self, key: ProductKey, size: int, node_ok: Callable[[str], bool]) -> list[Slot] | None:
        """``size`` fully free slots of one key on one node, preferring the node with the fewest
        such slots that suffice (keeps whole nodes free for larger groups)."""
        buckets = self.count_buckets.get(key, {})
        for count in sorted(c for c in buckets if c >= size):
            for position in buckets[count]:
                node = self.node_names[position]
                if node_ok(node):
                    return self.free_by_key[key][node][:size]
        return None


def _cc(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def _discard(sorted_list: list[int], value: int) -> None:
    i = bisect.bisect_left(sorted_list, value)
    if i < len(sorted_list) and sorted_list[i] == value:
        del sorted_list[i]
