"""The order of one reconcile's writes (gpupin.controller.writes.ApiWrites.apply), against a
recording stand-in for the blocking client (each call takes a few milliseconds in its thread).

Aspects: claim templates and the NetworkPolicy exist before a pod is created, Services only after
every pod; the status patch goes out beside the creates, not after them; a create that fails stops
the later groups, and the status patch is still awaited and the first failure raised; deletes come
before every create, and a failed delete stops the creates.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
import structlog

from gpupin.controller.cache import ClusterCache
from gpupin.controller.decide import Actions
from gpupin.controller.rollout import create_stages
from gpupin.controller.writes import ApiWrites
from gpupin.kube import ApiError


class _Kube:
    """Records (what, start, end) of every call; ``fail``: kinds whose create answers 500."""

    def __init__(self, fail: set[str] | None = None) -> None:
        self.calls: list[tuple[str, float, float]] = []
        self.fail = fail or set()
        self.lock = threading.Lock()

    def _record(self, what: str, started: float) -> None:
        with self.lock:
            self.calls.append((what, started, time.monotonic()))

    def create(self, obj: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        started = time.monotonic()
        time.sleep(0.02)
        self._record(f"create {obj['kind']}", started)
        if obj["kind"] in self.fail:
            raise ApiError(500, "Internal Server Error", "range is full")
        return {**obj, "metadata": {**obj["metadata"], "uid": "u", "resourceVersion": "7"}}

    def delete(self, obj: dict[str, Any], grace_period_seconds: int | None = None) -> None:
        started = time.monotonic()
        time.sleep(0.02)
        self._record(f"delete {obj['kind']}", started)

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        started = time.monotonic()
        time.sleep(0.05)
        self._record("status", started)
        return {"metadata": {"name": name, "namespace": namespace, "resourceVersion": "8"}, "status": status}

    def span(self, what: str) -> tuple[float, float]:
        found = [(s, e) for w, s, e in self.calls if w == what]
        assert found, f"no {what} in {[c[0] for c in self.calls]}"
        return min(s for s, _ in found), max(e for _, e in found)


def _obj(kind: str, name: str) -> dict[str, Any]:
    return {"kind": kind, "apiVersion": "v1", "metadata": {"name": name, "namespace": "ns"}}


def _actions(*objects: dict[str, Any]) -> Actions:
    # as rollout.converge leaves them: sorted by CREATE_ORDER
    return Actions(
        create=[o for stage in create_stages(list(objects)) for o in stage], status={"ready": "0/1"}
    )


def _apply(kube: _Kube, actions: Actions) -> None:
    writes = ApiWrites(kube, ClusterCache())  # type: ignore[arg-type]
    body = {"metadata": {"name": "d", "namespace": "ns", "generation": 1}}
    try:
        asyncio.run(writes.apply(("ns", "d"), body, actions, structlog.get_logger("test")))
    finally:
        writes.close()


def test_creates_go_in_their_order_with_the_status_beside_them() -> None:
    kube = _Kube()
    actions = _actions(
        _obj("Service", "d"), _obj("Pod", "d-a"), _obj("NetworkPolicy", "d-np"), _obj("Pod", "d-b")
    )
    assert [o["kind"] for o in actions.create] == ["NetworkPolicy", "Pod", "Pod", "Service"]
    _apply(kube, actions)
    policy, pods, service, status = (
        kube.span(w) for w in ("create NetworkPolicy", "create Pod", "create Service", "status")
    )
    assert policy[1] <= pods[0], "no pod before its NetworkPolicy exists"
    assert pods[1] <= service[0], "the Service after every pod"
    assert status[0] < pods[0], "the status patch does not wait for the creates"
    assert len([c for c in kube.calls if c[0] == "create Pod"]) == 2


def test_a_failed_create_stops_the_later_groups_and_the_status_is_still_awaited() -> None:
    kube = _Kube(fail={"Pod"})
    with pytest.raises(ApiError) as raised:
        _apply(kube, _actions(_obj("Pod", "d-a"), _obj("Service", "d")))
    assert raised.value.status == 500
    assert "create Service" not in [c[0] for c in kube.calls], "nothing after the group that failed"
    assert "status" in [c[0] for c in kube.calls], "the status patch ran to its end"


def test_deletes_come_first_and_a_failed_one_stops_the_creates() -> None:
    kube = _Kube()
    actions = _actions(_obj("Pod", "d-new"))
    actions.delete = [(_obj("Pod", "d-old"), None)]
    _apply(kube, actions)
    assert kube.span("delete Pod")[1] <= kube.span("create Pod")[0]

    class _Refusing(_Kube):
        def delete(self, obj: dict[str, Any], grace_period_seconds: int | None = None) -> None:
            raise ApiError(409, "Conflict", "the object has been modified")

    refusing = _Refusing()
    actions = _actions(_obj("Pod", "d-new"))
    actions.delete = [(_obj("Pod", "d-old"), None)]
    with pytest.raises(ApiError):
        _apply(refusing, actions)
    assert refusing.calls == [], "no create (and no status) after a failed delete"
    assert [o["metadata"]["name"] for o, _ in actions.delete] == ["d-old"], "the failed delete is kept"
