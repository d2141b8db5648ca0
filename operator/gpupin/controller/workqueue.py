"""The reconciler's work queue, and what it remembers of readiness probes between reconciles."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

from gpupin.controller import metrics
from gpupin.controller.store import Key


@dataclass
class WorkQueue:
    """Deduplicating queue of deployment keys with delayed re-adds (level-based: a key queued
    twice is reconciled once, from the latest cached state)."""

    queue: asyncio.Queue[Key] = field(default_factory=asyncio.Queue)
    pending: set[Key] = field(default_factory=set)
    failures: dict[Key, int] = field(default_factory=dict)

    def add(self, key: Key) -> None:
        if key not in self.pending:
            self.pending.add(key)
            self.queue.put_nowait(key)
            metrics.QUEUE_DEPTH.set(len(self.pending))

    def add_after(self, key: Key, delay: float) -> None:
        asyncio.get_running_loop().call_later(delay, self.add, key)

    def backoff(self, key: Key) -> float:
        count = self.failures.get(key, 0) + 1
        self.failures[key] = count
        return float(min(60.0, 0.2 * 2 ** min(count, 9)) * (0.8 + 0.4 * random.random()))

    async def get(self) -> Key:
        key = await self.queue.get()
        self.pending.discard(key)
        metrics.QUEUE_DEPTH.set(len(self.pending))
        return key


@dataclass
class ProbeReading:
    """What the operator last read of one pod's readiness-probe Events."""

    message: str | None = None
    read_at: float = -1e9
    """time.monotonic() of the last read."""


def running_since(pod: dict[str, Any]) -> str:
    """When the pod's containers last started (RFC 3339): older probe Events are about an
    earlier run. Empty when unknown."""
    started = [
        str(((c.get("state") or {}).get("running") or {}).get("startedAt") or "")
        for c in (pod.get("status") or {}).get("containerStatuses") or []
    ]
    return max(started, default="")
