"""The relist in namespaced mode, against scripted API answers (the real handlers, cache and sweep;
a recording stand-in for the reconciler, whose queue is not under test here).

Aspects: each served namespace is listed on its own path; one that cannot be listed (deleted, its
RoleBinding gone: 403) is logged and skipped, and every other namespace is still listed and swept —
a stale pod there is dropped from the cache; nothing of the unlisted namespace is swept.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gpupin.controller import handlers
from gpupin.controller.config import OperatorConfig
from gpupin.kube import ApiError


class _Reconciler:
    def __init__(self) -> None:
        self.enqueued: list[Any] = []

    def enqueue(self, key: Any) -> None:
        self.enqueued.append(key)

    def enqueue_all(self, only_unplaced: bool = False) -> None:
        self.enqueued.append(("all", only_unplaced))

    def saw_generation(self, key: Any, generation: Any) -> None:
        pass


class _Kube:
    """Answers LISTs: namespace ``gone`` is forbidden, every other list is empty at resourceVersion 100."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def request(self, method: str, path: str, body: Any = None, params: Any = None, **_: Any) -> Any:
        self.paths.append(path)
        if "/namespaces/gone/" in path:
            raise ApiError(
                403, "Forbidden", 'pods is forbidden: User "system:serviceaccount:x:y" cannot list'
            )
        return {"metadata": {"resourceVersion": "100"}, "items": []}


def _pod(namespace: str, name: str) -> dict[str, Any]:
    return {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": f"u-{name}", "resourceVersion": "50"},
    }


def test_a_namespace_that_cannot_be_listed_does_not_stop_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    state = handlers._State()
    state.config = OperatorConfig(namespaces=("a", "gone", "b"))
    state.reconciler = _Reconciler()  # type: ignore[assignment]
    monkeypatch.setattr(handlers, "STATE", state)
    for namespace in ("a", "gone", "b"):
        state.cache.pods.upsert(_pod(namespace, f"stale-{namespace}"))
    kube = _Kube()
    asyncio.run(handlers.relist(kube))  # type: ignore[arg-type]
    assert sorted(state.cache.pods.objects) == [("gone", "stale-gone")], "a and b swept; gone left as it was"
    assert "/api/v1/namespaces/b/pods" in kube.paths and "/api/v1/pods" not in kube.paths
