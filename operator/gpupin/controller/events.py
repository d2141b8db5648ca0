"""The operator's Events (core/v1): who posted them, and repeats folded into one.

Each Event names the operator process that posted it (``reportingInstance``: the pod's name, as
``reportingComponent`` names gpupin), so with a standby beside the writer one can tell which
wrote. An Event that repeats one already posted — the same object, type, reason and message
within :data:`FOLD_SECONDS` — updates that Event (``count`` + 1, ``lastTimestamp``) instead of
adding another, as client-go's event recorder does: a deployment refused on every resync shows
one Event with a count, not one per resync. Distinct news stays distinct (a burst of 1,000 new
deployments still posts a ``Placed`` and a ``CreatedPod`` for each: that is what happened).

An Event that cannot be posted is logged, not retried: it is news for people, not state.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import structlog

from gpupin.controller.config import operator_identity
from gpupin.controller.decide import EventSpec
from gpupin.kube import ApiError, Kube

log = structlog.get_logger("gpupin.operator")

FOLD_SECONDS = 600.0
"""A repeat within this many seconds of the last one updates the Event already posted."""
REMEMBERED = 4096
"""Events remembered for folding (the oldest forgotten first)."""
COMPONENT = "gpupin.dev/operator"


class Recorder:
    """Posts and folds (see the module docstring); safe to call from several threads."""

    def __init__(self, instance: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.instance = instance
        self.clock = clock
        self._posted: OrderedDict[tuple[Any, ...], tuple[str, str, int, float]] = OrderedDict()
        """(namespace, uid or name, type, reason, message) → (namespace, Event name, count, when)."""
        self._lock = threading.Lock()
        self._posting = [threading.Lock() for _ in range(16)]
        """One of these per Event key while it is posted or updated: two threads posting the same
        Event take turns (no lost count, no second Event), different Events go at once."""

    def post(
        self, kube: Kube, involved: dict[str, Any], event: EventSpec, namespace: str | None = None
    ) -> None:
        """Post an Event about ``involved`` (apiVersion, kind, name, uid, namespace when it has one)
        in its namespace, or ``namespace`` for a cluster-scoped object; a repeat updates the last."""
        where = involved.get("namespace") or namespace or "default"
        message = event.message[:1024]
        key = (where, involved.get("uid") or involved.get("name"), event.type, event.reason, message)
        with self._posting[hash(key) % len(self._posting)]:
            self._post(kube, involved, event, key, where, message)

    def _post(
        self,
        kube: Kube,
        involved: dict[str, Any],
        event: EventSpec,
        key: tuple[Any, ...],
        where: str,
        message: str,
    ) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with self._lock:
            earlier = self._posted.get(key)
        if earlier is not None and self.clock() - earlier[3] < FOLD_SECONDS:
            _, name, count, _ = earlier
            try:
                kube.request(
                    "PATCH", f"/api/v1/namespaces/{where}/events/{name}",
                    {"count": count + 1, "lastTimestamp": now}, content_type="application/merge-patch+json",
                )  # fmt: skip
                self._remember(key, (where, name, count + 1, self.clock()))
                return
            except ApiError as exc:
                if exc.status != 404:  # gone (the API server expires Events): post a new one
                    return self._failed(involved, event, exc)
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{involved.get('name')}.", "namespace": where},
            "involvedObject": involved,
            "type": event.type,
            "reason": event.reason,
            "message": message,
            "source": {"component": "gpupin-operator"},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.instance[:128],
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            made = kube.create(body)
        except ApiError as exc:
            return self._failed(involved, event, exc)
        self._remember(key, (where, made["metadata"]["name"], 1, self.clock()))

    def _remember(self, key: tuple[Any, ...], value: tuple[str, str, int, float]) -> None:
        with self._lock:
            self._posted[key] = value
            self._posted.move_to_end(key)
            while len(self._posted) > REMEMBERED:
                self._posted.popitem(last=False)

    @staticmethod
    def _failed(involved: dict[str, Any], event: EventSpec, exc: ApiError) -> None:
        log.warning("Could not post Event", kind=involved.get("kind"), name=involved.get("name"),
                    reason=event.reason, status=exc.status)  # fmt: skip


_recorder: list[Recorder] = []


def post_event(kube: Kube, involved: dict[str, Any], event: EventSpec, namespace: str | None = None) -> None:
    """:meth:`Recorder.post` with this process's recorder (its instance: the operator's identity)."""
    if not _recorder:
        _recorder.append(Recorder(operator_identity()))
    _recorder[0].post(kube, involved, event, namespace)
