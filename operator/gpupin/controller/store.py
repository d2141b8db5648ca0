"""The cache's stores: one kind of object by (namespace, name), newest resourceVersion first,
with an index of each object's owners by uid (a reconcile finds a deployment's Services, claim
templates and NetworkPolicies without scanning every one of them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from gpupin.controller.podstate import is_terminating

Key = tuple[str, str]  # (namespace, name)


def key_of(obj: dict[str, Any]) -> Key:
    meta = obj["metadata"]
    return meta.get("namespace") or "", meta["name"]


def _rv(obj: dict[str, Any]) -> int:
    try:
        return int(obj["metadata"].get("resourceVersion") or 0)
    except ValueError:
        return 0


class Store:
    """Objects of one kind by (namespace, name), newest resourceVersion wins. ``on_change`` hears
    of every object stored, removed or marked deleting."""

    def __init__(self, on_change: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.objects: dict[Key, dict[str, Any]] = {}
        self._deleted_uids: set[str] = set()
        self._on_change = on_change or (lambda _obj: None)
        self._by_owner_uid: dict[str, set[Key]] = {}

    def _set(self, key: Key, obj: dict[str, Any] | None) -> None:
        """Store ``obj`` under ``key`` (None: remove it), keeping the owner index in step."""
        old = self.objects.pop(key, None) if obj is None else self.objects.get(key)
        for uid in _owner_uids(old):
            keys = self._by_owner_uid.get(uid)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_owner_uid[uid]
        if obj is not None:
            self.objects[key] = obj
            for uid in _owner_uids(obj):
                self._by_owner_uid.setdefault(uid, set()).add(key)

    def owned_by(self, owner: dict[str, Any]) -> list[dict[str, Any]]:
        """The objects one of whose ownerReferences names ``owner`` by uid (from the index)."""
        uid = owner["metadata"].get("uid")
        keys = self._by_owner_uid.get(uid) if isinstance(uid, str) else None
        return [self.objects[key] for key in sorted(keys or ())]

    def upsert(self, obj: dict[str, Any]) -> bool:
        """Store an object; False when it is older than what we have or was deleted."""
        uid = obj["metadata"].get("uid")
        if uid and uid in self._deleted_uids:
            return False
        key = key_of(obj)
        old = self.objects.get(key)
        if old is not None and old["metadata"].get("uid") == uid and _rv(old) > _rv(obj):
            return False
        self._set(key, obj)
        self._on_change(obj)
        return True

    def remove(self, obj: dict[str, Any]) -> None:
        key = key_of(obj)
        uid = obj["metadata"].get("uid")
        if uid:
            self._deleted_uids.add(uid)
            if len(self._deleted_uids) > 100_000:
                self._deleted_uids.clear()
        old = self.objects.get(key)
        if old is not None and (not uid or old["metadata"].get("uid") == uid):
            self._set(key, None)
            self._on_change(old)

    def mark_deleting(self, obj: dict[str, Any]) -> None:
        """Our delete call succeeded: it is terminating until the watch says it is gone."""
        old = self.objects.get(key_of(obj))
        if old is not None and not is_terminating(old):
            copy = {
                **old,
                "metadata": {**old["metadata"], "deletionTimestamp": datetime.now(UTC).isoformat()},
            }
            self._set(key_of(obj), copy)
            self._on_change(copy)

    def sweep(
        self,
        listed: Iterable[dict[str, Any]],
        list_rv: str | int | None,
        remove: Callable[[dict[str, Any]], None] | None = None,
        namespace: str | None = None,
    ) -> list[dict[str, Any]]:
        """Mark and sweep against a full LIST taken at resourceVersion ``list_rv`` (``listed`` already
        upserted): what is stored but not listed is gone, its DELETED event missed (after a watch
        gap past the resourceVersion window kopf re-lists without DELETED events). A LIST of one
        ``namespace`` sweeps only that namespace's objects. Kept: our
        reservations (resourceVersion "0": the create is not answered yet) and what is newer than
        the list (a watch delivered it after the list was taken). Each stale object goes through
        ``remove`` (the watch's DELETED path; default :meth:`remove`). Returns the stale objects."""
        seen = {key_of(obj) for obj in listed}
        limit = _rv({"metadata": {"resourceVersion": list_rv}})
        stale = [
            obj
            for key, obj in self.objects.items()
            if key not in seen
            and (namespace is None or key[0] == namespace)
            and obj["metadata"].get("resourceVersion") != "0"
            and _rv(obj) <= limit
        ]
        for obj in stale:
            (remove or self.remove)(obj)
        return stale

    def get(self, key: Key) -> dict[str, Any] | None:
        return self.objects.get(key)

    def values(self) -> Iterable[dict[str, Any]]:
        return self.objects.values()


def _owner_uids(obj: dict[str, Any] | None) -> set[str]:
    if obj is None:
        return set()
    refs = obj["metadata"].get("ownerReferences") or []
    return {ref["uid"] for ref in refs if isinstance(ref, dict) and isinstance(ref.get("uid"), str)}
