"""kopf settings for an operator that only listens: gpupin registers ``on.event`` handlers alone.

kopf prepares every watch event for change-detecting handlers (``on.create``, ``on.update``,
daemons) whether any are registered or not: it deep-copies the whole object twice (the
"essence" its diff is computed from, then a copy without its own progress annotations). gpupin
has no such handler — its reconcile compares against its own cache — so those copies are pure
cost: they were a third of the operator's CPU in a burst of 1,000 deployments (pods, nodes and
LLMDeployments with their statuses copied on every event). The storages below make that
preparation free and store nothing on the objects (kopf writes no annotations for gpupin either
way: on.event handlers leave no progress behind).
"""

from __future__ import annotations

from typing import Any

import kopf


class NoDiffBase(kopf.DiffBaseStorage):
    """No essence: every event's diff is empty (only change-detecting handlers read it)."""

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:
        return {}

    def fetch(self, *, body: Any) -> Any:
        return None

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        return None


class NoProgress(kopf.ProgressStorage):
    """No handler progress (on.event handlers keep none); ``clear`` copies nothing."""

    def fetch(self, *, key: Any, body: Any) -> Any:
        return None

    def store(self, *, key: Any, record: Any, body: Any, patch: Any) -> None:
        return None

    def purge(self, *, key: Any, body: Any, patch: Any) -> None:
        return None

    def touch(self, *, body: Any, patch: Any, value: str | None) -> None:
        return None

    def clear(self, *, essence: Any) -> Any:
        return essence


def listen_only(settings: kopf.OperatorSettings) -> None:
    """Configure kopf for handlers that only listen (see the module docstring)."""
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.persistence.progress_storage = NoProgress()
