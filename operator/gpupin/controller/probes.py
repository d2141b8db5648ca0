"""Why a running pod is not Ready: the kubelet says so only in its readiness-probe Events.

The pod itself does not change while its probe keeps failing, so the operator reads those Events
off the allocation path (one GET per pod every :attr:`ProbeFollower.READ_SECONDS`) and looks at the
deployment again until its pods are Ready.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import structlog

from gpupin.controller.diagnose import needs_probe_output
from gpupin.controller.store import Key
from gpupin.controller.workqueue import ProbeReading, WorkQueue, running_since
from gpupin.kube import ApiError, Kube

log = structlog.get_logger("gpupin.operator")


class ProbeFollower:
    READ_SECONDS = 20.0
    """How often the readiness-probe Events of a running, not-Ready pod are read (one GET each)."""

    def __init__(self, kube: Kube, queue: WorkQueue, spawn: Callable[[Any], None]) -> None:
        self.kube = kube
        self.queue = queue
        self.spawn = spawn
        self.readings: dict[Key, dict[str, ProbeReading]] = {}
        """Deployment → pod uid → the latest failed readiness probe of a running, not-Ready pod."""
        self._rechecks: set[Key] = set()

    def messages(self, key: Key, pods: list[dict[str, Any]]) -> dict[str, str]:
        """Pod name → its latest failed readiness probe's message, for the pods that have one."""
        known = self.readings.get(key, {})
        return {
            p["metadata"]["name"]: reading.message
            for p in pods
            if (reading := known.get(str(p["metadata"].get("uid")))) and reading.message
        }

    def forget(self, key: Key) -> None:
        self.readings.pop(key, None)

    def follow(self, key: Key, pods: list[dict[str, Any]]) -> None:
        """Read the probe Events of the deployment's running, not-Ready pods when due, and look at
        the deployment again in :attr:`READ_SECONDS` while it has any."""
        waiting = {str(p["metadata"].get("uid")): p for p in pods if needs_probe_output(p)}
        known = self.readings.setdefault(key, {})
        for uid in set(known) - set(waiting):  # Ready again, not running or gone: old news
            del known[uid]
        if not known and not waiting:
            self.readings.pop(key, None)
            return
        now = time.monotonic()
        for uid, pod in waiting.items():
            reading = known.setdefault(uid, ProbeReading())
            if now - reading.read_at >= self.READ_SECONDS:
                reading.read_at = now
                self.spawn(self._read(key, pod))
        if key not in self._rechecks:
            self._rechecks.add(key)

            def recheck() -> None:
                self._rechecks.discard(key)
                self.queue.add(key)

            asyncio.get_running_loop().call_later(self.READ_SECONDS, recheck)

    async def _read(self, key: Key, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        uid = str(meta.get("uid") or "")
        if not uid:
            return
        try:
            message = await asyncio.to_thread(
                self.kube.last_probe_failure, meta["namespace"], uid, running_since(pod)
            )
        except ApiError as exc:  # status then says less; not worth a retry loop
            log.info("Could not read probe Events", pod=meta["name"], status=exc.status)
            return
        reading = self.readings.get(key, {}).get(uid)
        if reading is not None and message and reading.message != message:
            reading.message = message
            self.queue.add(key)
