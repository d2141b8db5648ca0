"""One writer at a time (the operator Lease), against the real API server: two operators started
against one cluster — one writes, the other waits without watching or writing — and the standby
takes over when the holder stops (at once: the Lease is released), dies (once the Lease has gone
unrenewed for its duration) or is cut off from the API server (the holder stops writing at its
renew deadline, before the standby may start). The cut is made by the fault proxy (the one
stand-in: it stands for the network)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from gpupin.controller.podstate import placement_of

from helpers import RTX_2060, RTX_4070, free_port
from kwok import Env, Operator, wait_for

pytestmark = pytest.mark.timeout(240)
DURATION = 6.0
"""--lease-duration for these tests: renew deadline 4 s, retry 0.8 s."""
RETRY = DURATION * 2 / 15


def _lease(env: Env) -> dict[str, Any]:
    return env.cluster.get(f"/apis/coordination.k8s.io/v1/namespaces/{env.namespace}/leases/gpupin-operator")


def _holder(env: Env) -> str | None:
    from gpupin.kube import ApiError

    try:
        return (_lease(env).get("spec") or {}).get("holderIdentity")
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


def _operator(env: Env, name: str, extra: tuple[str, ...] = (), **kwargs: Any) -> Operator:
    return env.operator(
        "--lease-namespace", env.namespace, "--lease-duration", str(DURATION), *extra,
        environment={"POD_NAME": name}, **kwargs,
    )  # fmt: skip


def _started(operator: Operator) -> bool:
    return '"event": "gpupin operator started"' in operator.log.read_text()


def _took_over(env: Env, name: str, since: float) -> float:
    wait_for(
        lambda: _holder(env) == name, timeout=3 * DURATION, interval=0.05, what=f"{name} holding the Lease"
    )
    return time.monotonic() - since


def test_one_operator_writes_and_a_standby_takes_over(env: Env) -> None:
    env.node("workstation", RTX_4070, RTX_2060)
    first = _operator(env, "gpupin-a")
    wait_for(lambda: _holder(env) == "gpupin-a" and _started(first), what="gpupin-a holding the Lease")
    second = _operator(env, "gpupin-b")
    wait_for(
        lambda: '"event": "Waiting for the operator Lease"' in second.log.read_text(), what="gpupin-b waiting"
    )

    env.apply("one", engine="ollama", models=[{"name": "qwen2.5:14b"}])
    wait_for(env.placed("one"), what="one placed")
    (pod,) = env.pods()
    time.sleep(2 * RETRY)  # the standby had every chance to act
    log = second.log.read_text()
    assert not _started(second) and "Created pod" not in log, "the standby neither watches nor writes"
    assert second.alive()
    lease = _lease(env)
    assert lease["spec"]["leaseDurationSeconds"] == round(DURATION)

    # the holder stops (a rollout, a drain): it gives the Lease up and the standby takes it at its
    # next try, far within the Lease's duration
    stopping = time.monotonic()
    first.stop()
    handover = _took_over(env, "gpupin-b", stopping)
    assert handover < DURATION, f"released: taken over in {handover:.1f} s"
    print(f"lease: released by its holder, taken over in {handover:.2f} s (duration {DURATION} s)")
    wait_for(lambda: _started(second), what="gpupin-b started")
    assert '"event": "Released the operator Lease"' in first.log.read_text(), first.tail()
    third = _operator(env, "gpupin-c")
    wait_for(
        lambda: '"event": "Waiting for the operator Lease"' in third.log.read_text(), what="gpupin-c waiting"
    )

    # the holder dies (kill -9, a node lost): nothing is released; the standby waits out the Lease
    dying = time.monotonic()
    second.kill()
    handover = _took_over(env, "gpupin-c", dying)
    assert DURATION - 2 * RETRY <= handover < DURATION + 3 * RETRY + 1, f"unreleased: {handover:.1f} s"
    print(f"lease: holder killed, taken over in {handover:.2f} s (duration {DURATION} s)")
    wait_for(lambda: _started(third), what="gpupin-c started")
    env.apply("two", engine="ollama", models=[{"name": "llama3.1:8b"}])
    wait_for(env.placed("two"), what="two placed by the new holder")
    pods = {p["metadata"]["labels"]["gpupin.dev/deployment"]: p for p in env.pods()}
    assert pods["one"]["metadata"]["uid"] == pod["metadata"]["uid"], "the serving pod survived both handovers"
    held = [placement_of(pods[n]) for n in ("one", "two")]
    assert held[0] and held[1] and not set(held[0].gpu_uuids) & set(held[1].gpu_uuids), (
        "the new holder saw the old holder's allocation"
    )
    assert int(_lease(env)["spec"]["leaseTransitions"]) == 2


def test_a_holder_cut_off_from_the_api_server_stops_writing_before_the_standby_starts(env: Env) -> None:
    env.node("workstation", RTX_4070, RTX_2060)
    proxy = env.proxy()
    first = _operator(env, "gpupin-a", kubeconfig=proxy.kubeconfig(env.tmp / "proxy.kubeconfig"))
    wait_for(lambda: _holder(env) == "gpupin-a" and _started(first), what="gpupin-a holding the Lease")
    second = _operator(env, "gpupin-b")
    wait_for(
        lambda: '"event": "Waiting for the operator Lease"' in second.log.read_text(), what="gpupin-b waiting"
    )

    cut = time.monotonic()
    for method in ("GET", "PUT"):
        proxy.inject(method, r"/leases/gpupin-operator", status=503, times=10_000)
    wait_for(lambda: not first.alive(), timeout=3 * DURATION, what="gpupin-a stopping")
    stopped = time.monotonic() - cut
    log = first.log.read_text()
    assert '"event": "Lost the operator Lease' in log, first.tail()
    assert first.process is not None and first.process.returncode == 4
    handover = _took_over(env, "gpupin-b", cut)
    assert stopped < handover, (
        f"the holder stopped after {stopped:.1f} s, the standby took over at {handover:.1f} s"
    )
    print(
        f"lease: holder cut off; it stopped after {stopped:.2f} s, the standby took over at {handover:.2f} s"
    )
    env.apply("one", engine="ollama", models=[{"name": "qwen2.5:14b"}])
    wait_for(env.placed("one"), what="one placed by the new holder")
    assert "Created pod" not in first.log.read_text()


def test_healthz_answers_for_a_standby_and_for_the_writer(env: Env) -> None:
    """gpupin's own /healthz: a standby is alive while it waits (kopf's endpoint would not be up),
    and the writer says it runs once its event loop beats."""
    import json as jsonlib
    import urllib.request

    def health(port: int) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            assert answer.status == 200
            return dict(jsonlib.loads(answer.read()))

    env.node("workstation", RTX_4070, RTX_2060)
    first_port, second_port = free_port(), free_port()
    first = _operator(env, "gpupin-a", extra=("--health-port", str(first_port)))
    wait_for(lambda: _started(first), what="gpupin-a started")
    wait_for(lambda: health(first_port)["phase"] == "running", what="the writer running")
    second = _operator(env, "gpupin-b", extra=("--health-port", str(second_port)))
    wait_for(
        lambda: '"event": "Waiting for the operator Lease"' in second.log.read_text(), what="gpupin-b waiting"
    )
    assert health(second_port)["phase"] == "standby"
    first.stop()
    wait_for(lambda: health(second_port)["phase"] == "running", what="the standby, now the writer, running")
