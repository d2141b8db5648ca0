"""Watch-fed state: what the operator knows of the cluster without asking the API server.

kopf's watches deliver every LLMDeployment, every gpupin-managed Pod, Service,
ResourceClaimTemplate and NetworkPolicy (server-side label selector) and every Node; handlers put them
here. A reconcile reads only this cache, so it makes no API reads of its own.

The operator also writes into the cache what it has just created or deleted, before
the watch echoes it back. That is what keeps the allocation step honest: the next
deployment planned already sees the GPUs the previous one took, even if the watch
event for the new pod has not arrived yet. The watch stays the truth: a newer
resourceVersion from it replaces ours, and a deleted uid is never resurrected.

A pod is gpupin's only when its controller ownerReference names a live LLMDeployment by uid (or
one deleted a moment ago, whose pods may still be on their GPUs): any pod can carry the
managed-by label and a placement annotation, and such a forgery must neither hold a GPU nor
reach a deployment's pods. The others are stored all the same (at start-up a deployment may be
read after its pods) and start counting when their deployment arrives.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from collections.abc import Iterable
from typing import Any

from gpupin import constants
from gpupin.controller.nodealiases import aliases_from_placements
from gpupin.controller.nodeinventory import NodeBook
from gpupin.controller.podstate import is_finished, is_terminating, placement_of, placement_problem
from gpupin.controller.store import Key, Store, key_of
from gpupin.inventory import Inventory, NodeInventory
from gpupin.kernel.state import Frozen
from gpupin.placement import Hold
from gpupin.resourceslices import inventory_from_resource_slices


class ClusterCache:
    GONE_OWNERS = 10_000
    """Deleted deployments remembered, so that their terminating pods keep holding their GPUs."""

    def __init__(self) -> None:
        self.deployments = Store(on_change=self._deployment_changed)
        # deployments whose pods changed since the reconciler's planner last read their holds
        self.dirty_owners: set[Key] = set()
        self._by_owner: dict[Key, set[Key]] = {}
        self._owner_uids: dict[Key, str] = {}
        """Each live deployment's uid: a pod is its only if its controller reference has that uid."""
        self._gone_owners: OrderedDict[str, Key] = OrderedDict()
        """uid → key of deployments deleted lately (bounded): their pods still hold, until gone."""
        self.pods = Store(on_change=self._pod_changed)
        self.services = Store()
        self.claim_templates = Store()
        self.network_policies = Store()
        self.config_maps = Store()
        """The routers' routes (ConfigMaps gpupin made)."""
        self.workloads = Store()
        """The routers' Deployments (apps/v1)."""
        self.http_routes = Store()
        """The deployments' HTTPRoutes (with ``--gateway``)."""
        self.book = NodeBook()
        """Every node's GPU facts over time (set ``book.grace_seconds`` from the configuration)."""
        self.raw_nodes: dict[str, dict[str, Any]] = {}
        self.slices: dict[str, dict[str, Any]] = {}
        self.slice_inventory: dict[str, NodeInventory] = {}
        self._inventory: Inventory | None = None
        self._frozen = Frozen()

    # -- nodes ----------------------------------------------------------------------------

    def set_node(self, node: dict[str, Any]) -> bool:
        """Update a node's GPUs; True when what gpupin can place on changed."""
        name = node["metadata"]["name"]
        self.raw_nodes[name] = node
        return self._refresh_node(name)

    def begin_node_batch(self) -> None:
        """Nodes and slices set until :meth:`end_node_batch` are judged together (the start-up lists)."""
        self.book.begin_batch()

    def end_node_batch(self) -> bool:
        changed = self.book.end_batch()
        if changed:
            self._inventory = None
        return changed

    def load_nodes(self, nodes: Iterable[dict[str, Any]], slices: Iterable[dict[str, Any]]) -> None:
        """Every Node and ResourceSlice of a LIST, judged together (no node is the incumbent of a
        UUID another reports)."""
        self.begin_node_batch()
        try:
            for node in nodes:
                self.set_node(node)
            for item in slices:
                self.set_slice(item)
        finally:
            self.end_node_batch()

    def _refresh_node(self, name: str) -> bool:
        node = self.raw_nodes.get(name)
        if node is None:
            return False
        changed = self.book.read(name, node, self.slice_inventory.get(name))
        if changed:
            self._inventory = None
        return changed

    def set_slice(self, obj: dict[str, Any], deleted: bool = False) -> bool:
        """Update a DRA ResourceSlice; True when a node's GPUs changed (used where no annotation is)."""
        name = obj["metadata"]["name"]
        if deleted:
            self.slices.pop(name, None)
        else:
            self.slices[name] = obj
        before = self.slice_inventory
        self.slice_inventory, _ = inventory_from_resource_slices(self.slices.values())
        changed = False
        for node_name in set(before) | set(self.slice_inventory):
            if before.get(node_name) != self.slice_inventory.get(node_name):
                changed = self._refresh_node(node_name) or changed
        return changed

    def remove_node(self, name: str) -> bool:
        """The Node object is gone: its GPUs leave the inventory at once (its pods go with grace 0)."""
        self.raw_nodes.pop(name, None)
        changed = self.book.remove(name)
        if changed:
            self._inventory = None
        return changed

    def expire_gpu_losses(self) -> bool:
        """GPUs whose grace period has passed leave the inventory; True when it changed."""
        changed = self.book.expire()
        if changed:
            self._inventory = None
        return changed

    @property
    def node_problems(self) -> dict[str, str]:
        """Node → what is wrong with its GPU facts, in a line."""
        return {name: problem.message for name, problem in self.book.problems().items()}

    def inventory(self) -> Inventory:
        """Every node's GPUs as plans use them (rebuilt only after a node's inventory changed): the
        last good inventory of nodes whose facts cannot be used now (see :mod:`nodeinventory`)."""
        if self._inventory is None:
            inventory, frozen = self.book.inventory()
            placements = [p for pod in self.pods.values() if (p := placement_of(pod)) is not None]
            aliases = aliases_from_placements(inventory, placements, frozen.aliases)
            notes = dict(frozen.nodes)
            known = {n.name for n in inventory.nodes}
            for placement in placements:  # an existing Node that gpupin pods sit on had GPUs
                if placement.node in self.raw_nodes and placement.node not in known | set(notes):
                    notes[placement.node] = (
                        "has no GPU facts, yet gpupin pods sit on it (its facts were lost before this "
                        "operator started)"
                    )
            self._frozen = Frozen(notes, frozen.gpus, aliases)
            self._inventory = inventory
        return self._inventory

    def frozen(self) -> Frozen:
        """What of :meth:`inventory` takes no new pods, and the UUIDs pods know GPUs by."""
        self.inventory()
        return self._frozen

    def node_notes(self) -> dict[str, str]:
        """Node → why its inventory is frozen (the last good one serves its pods)."""
        return dict(self.frozen().nodes)

    def unknown_gpus(self, pods: Iterable[dict[str, Any]]) -> str | None:
        """Why these pods must not be re-planned now: one sits on a frozen node on GPUs its planning
        inventory lacks (its facts have been unreadable since the operator started, or another node
        reports the same UUID). Re-planning would move it; unreadable input moves nothing."""
        inventory, frozen = self.inventory(), self.frozen()
        for pod in pods:
            placement = placement_of(pod)
            if placement is None or is_terminating(pod) or placement.node not in frozen.nodes:
                continue
            node = next((n for n in inventory.nodes if n.name == placement.node), None)
            present = {g.uuid for g in node.gpus} if node is not None else set()
            resolved = {a.uuid if (a := frozen.aliases.get(u)) else u for u in placement.gpu_uuids}
            if not resolved <= present:
                return (
                    f"pod {pod['metadata']['name']} sits on node {placement.node}, whose GPUs are not known: "
                    f"{frozen.nodes[placement.node]}"
                )
        return None

    # -- pods ------------------------------------------------------------------------------

    def _deployment_changed(self, obj: dict[str, Any]) -> None:
        """A deployment arrived, was replaced or went: whether its pods count changed with it."""
        key = key_of(obj)
        live = self.deployments.get(key)
        uid = str(live["metadata"].get("uid") or "") if live is not None else ""
        old = self._owner_uids.get(key, "")
        if uid == old:
            return
        if old:
            self._gone_owners[old] = key
            while len(self._gone_owners) > self.GONE_OWNERS:
                self._gone_owners.popitem(last=False)
        if uid:
            self._owner_uids[key] = uid
        else:
            self._owner_uids.pop(key, None)
        self.dirty_owners.add(key)  # its pods start (or stop) counting: the planner reads them again

    def owner_of(self, pod: dict[str, Any]) -> Key | None:
        """The deployment whose pod this is: its controller reference names a live LLMDeployment
        by uid, or one deleted lately (its pods may still be on their GPUs). None: not gpupin's."""
        ref = _controller_ref(pod)
        if ref is None:
            return None
        key = (pod["metadata"].get("namespace") or "", ref[0])
        if ref[1] and (self._owner_uids.get(key) == ref[1] or self._gone_owners.get(ref[1]) == key):
            return key
        return None

    def _live(self, pod: dict[str, Any], key: Key) -> bool:
        ref = _controller_ref(pod)
        return ref is not None and bool(ref[1]) and ref[1] == self._owner_uids.get(key)

    def foreign(self, pod: dict[str, Any]) -> str | None:
        """Why a pod with gpupin's label is not gpupin's (for a log line); None when it is."""
        if self.owner_of(pod) is not None:
            return None
        ref = _controller_ref(pod)
        if ref is None:
            return f"it has no controller ownerReference to a {constants.KIND}"
        namespace = pod["metadata"].get("namespace") or ""
        if (namespace, ref[0]) not in self._owner_uids:
            return f"its controller ownerReference names {constants.KIND} {namespace}/{ref[0]}, which does not exist"
        return f"its controller ownerReference to {constants.KIND} {namespace}/{ref[0]} has uid {ref[1]!r}, not the live one's"

    def pods_of(self, key: Key) -> list[dict[str, Any]]:
        """A live deployment's pods (its uid in their controller reference), from an index by owner
        name (a reconcile does not scan every pod)."""
        return [
            pod
            for pod_key in self._by_owner.get(key, ())
            if (pod := self.pods.get(pod_key)) is not None and self._live(pod, key)
        ]

    def _pod_changed(self, pod: dict[str, Any]) -> None:
        owner = (pod["metadata"].get("namespace", ""), _owner_name(pod))
        pod_key = key_of(pod)
        if self.pods.get(pod_key) is None:
            self._by_owner.get(owner, set()).discard(pod_key)
        else:
            self._by_owner.setdefault(owner, set()).add(pod_key)
        self.dirty_owners.add(owner)

    @staticmethod
    def hold_owners(key: Key) -> tuple[str, str]:
        """The owners :meth:`holds` names for ``key``'s pods: the live deployment's, and a deleted
        one's (a deployment of the same name made again must not plan onto GPUs its predecessor's
        terminating pods are still on)."""
        return f"{key[0]}/{key[1]}", f"{key[0]}/{key[1]} (deleted)"

    def holds(self, only: Key | None = None) -> list[Hold]:
        """GPU memory gpupin's pods (of ``only``, if given) hold. Terminating pods still hold
        theirs (the process may still be on the GPU); finished pods do not. A pod whose placement
        is not what gpupin writes (:func:`placement_problem`) holds every GPU it names, wholly and
        exclusively: never a GPU given twice."""
        pods = (
            [p for k in self._by_owner.get(only, ()) if (p := self.pods.get(k)) is not None]
            if only is not None
            else self.pods.values()
        )
        result: list[Hold] = []
        for pod in pods:
            key = self.owner_of(pod)
            if key is None or is_finished(pod):
                continue
            placement = placement_of(pod)
            if placement is None:
                continue
            live, deleted = self.hold_owners(key)
            owner = live if self._live(pod, key) else deleted
            if placement_problem(pod) is not None:
                result.extend(Hold(gpu.uuid, None, True, owner) for gpu in placement.gpus)
                continue
            for gpu in placement.gpus:
                result.append(Hold(gpu.uuid, gpu.vram_bytes, placement.exclusive, owner))
        return result

    def gpus_per_node(self) -> dict[str, int]:
        """GPUs gpupin's pods hold, by node (the allocation metric)."""
        counts: dict[str, int] = defaultdict(int)
        for pod in self.pods.values():
            if self.owner_of(pod) is None or is_finished(pod):
                continue
            placement = placement_of(pod)
            if placement is not None and placement.node:
                counts[placement.node] += len(placement.gpus)
        return counts


def _controller_ref(pod: dict[str, Any]) -> tuple[str, str] | None:
    """(name, uid) of the pod's controller ownerReference to an LLMDeployment (API group checked)."""
    for ref in pod["metadata"].get("ownerReferences") or []:
        if (
            ref.get("kind") == constants.KIND
            and ref.get("controller") is True
            and str(ref.get("apiVersion") or "").split("/")[0] == constants.GROUP
            and isinstance(ref.get("name"), str)
        ):
            return ref["name"], str(ref.get("uid") or "")
    return None


def _owner_name(pod: dict[str, Any]) -> str:
    """The name the pod index files a pod under: its controller reference's (the exact name), else
    the deployment label (hashed when the name is longer than 63 characters)."""
    ref = _controller_ref(pod)
    if ref is not None:
        return ref[0]
    return str((pod["metadata"].get("labels") or {}).get(constants.DEPLOYMENT_LABEL, ""))
