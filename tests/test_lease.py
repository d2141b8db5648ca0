"""The Lease's timing rules, on a clock the test moves. The API server is stood in for by a dict
(`FakeLeases`: GET, POST and PUT with resourceVersion checks) because what is tested is the order
of clock reads around slow answers, which the real server cannot be made to produce on cue; the
real API server is in test_lease_operator.py. And the client: a server that does not answer is an
ApiError (status 0), not an exception of the HTTP library."""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest

from gpupin.controller.lease import LeaderLease, LeaseTiming
from gpupin.kube import ApiError, Kube, load_configuration

TIMING = LeaseTiming(duration=15, renew_deadline=10, retry=2)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeLeases:
    """One Lease, as the API server keeps it; ``get_takes`` seconds pass on ``clock`` during a GET,
    and ``during_get`` runs halfway (another process writing meanwhile)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.get_takes = 0.0
        self.during_get: Any = None
        self.fail: Exception | None = None

    def request(self, method: str, path: str, body: Any = None, **_: Any) -> Any:
        if self.fail is not None:
            raise self.fail
        if method == "GET":
            self.clock.now += self.get_takes / 2
            if self.during_get is not None:
                meanwhile, self.during_get = self.during_get, None  # once
                meanwhile()
            self.clock.now += self.get_takes / 2
            if self.lease is None:
                raise ApiError(404, "NotFound", "")
            return {**self.lease, "metadata": {**self.lease["metadata"]}}
        given = body["metadata"].get("resourceVersion")
        if method == "PUT" and given != str(self.version):
            raise ApiError(409, "Conflict", "")
        self.version += 1
        self.lease = {**body, "metadata": {**body["metadata"], "resourceVersion": str(self.version)}}
        return self.lease


def _lease(api: FakeLeases, clock: Clock, identity: str) -> LeaderLease:
    return LeaderLease(api, "ops", "gpupin-operator", identity, TIMING, clock=clock)  # type: ignore[arg-type]


def test_a_standby_counts_a_renewal_from_when_it_saw_it_not_from_before_it_asked() -> None:
    clock = Clock()
    api = FakeLeases(clock)
    holder, standby = _lease(api, clock, "a"), _lease(api, clock, "b")
    assert holder.try_hold() and not standby.try_hold()
    clock.now += 8
    api.get_takes = 4.0  # the standby's GET is slow, and the holder renews while it waits
    api.during_get = lambda: holder.try_hold()
    assert not standby.try_hold()
    api.get_takes = 0.0
    renewed_seen = clock.now  # the standby saw the renewal only now
    clock.now = renewed_seen + TIMING.duration - 0.5
    assert not standby.try_hold(), "taken before the holder's renewal had lasted its duration"
    clock.now = renewed_seen + TIMING.duration + 0.1
    assert standby.try_hold() and api.lease["spec"]["holderIdentity"] == "b"  # type: ignore[index]
    assert api.lease["spec"]["leaseTransitions"] == 1  # type: ignore[index]


def test_the_holder_stops_writing_before_a_standby_may_start() -> None:
    clock = Clock()
    api = FakeLeases(clock)
    holder = _lease(api, clock, "a")
    assert holder.try_hold()
    assert holder.write_budget() == TIMING.duration
    clock.now += TIMING.renew_deadline - 0.1
    assert holder.holding() and 0 < holder.write_budget() <= TIMING.duration - TIMING.renew_deadline + 0.1
    clock.now += 0.2
    assert not holder.holding() and holder.write_budget() == 0, "past the renew deadline: no more writes"


def test_the_renewer_survives_any_failure_and_gives_up_at_the_deadline() -> None:
    clock = Clock()
    api = FakeLeases(clock)
    holder = LeaderLease(api, "ops", "gpupin-operator", "a", LeaseTiming(3, 2, 0.05))  # type: ignore[arg-type]
    assert holder.try_hold()
    lost = threading.Event()
    api.fail = RuntimeError("urllib3 went away")  # not an ApiError: the thread must not die of it
    holder.keep(on_lost=lost.set)
    assert lost.wait(10), "the renewer gave up at its deadline and said so"
    assert holder.lost.is_set() and holder.write_budget() == 0
    holder.release()


def test_a_stop_while_winning_gives_the_lease_straight_back() -> None:
    clock = Clock()
    api = FakeLeases(clock)
    stop = threading.Event()
    standby = _lease(api, clock, "b")
    api.during_get = stop.set  # SIGTERM arrives while the try is on its way
    assert standby.acquire(stop) is False
    assert api.lease is not None and api.lease["spec"]["holderIdentity"] is None


def test_an_api_server_that_does_not_answer_is_an_api_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    configuration = load_configuration.__globals__["client"].Configuration()
    configuration.host = f"http://127.0.0.1:{port}"
    kube = Kube(configuration)
    with pytest.raises(ApiError) as caught:
        kube.request("GET", "/api/v1/nodes", timeout=2)
    assert caught.value.status == 0
