"""The operator's Events on the real API server: each names the process that posted it, and a
repeat updates the Event already posted (count, lastTimestamp) instead of adding one; a new
message is a new Event, and an Event the API server no longer has is posted again."""

from __future__ import annotations

from gpupin import constants
from gpupin.controller.decide import EventSpec
from gpupin.controller.events import FOLD_SECONDS, Recorder

from kwok import Env


def test_repeats_fold_into_one_event_that_names_its_poster(env: Env) -> None:
    clock = [1000.0]
    recorder = Recorder("gpupin-operator-7d9f-abcde", clock=lambda: clock[0])
    kube = env.cluster.kube
    involved = {"apiVersion": constants.API_VERSION, "kind": constants.KIND, "namespace": env.namespace,
                "name": "chat", "uid": "uid-chat"}  # fmt: skip
    refused = EventSpec("Warning", "InsufficientVRAM", "qwen2.5:72b needs 47.1Gi; the largest GPU has 24Gi")
    for _ in range(3):
        recorder.post(kube, involved, refused)
        clock[0] += 60
    (event,) = env.cluster.events(env.namespace, "chat")
    assert event["count"] == 3 and event["reason"] == "InsufficientVRAM"
    assert event["reportingInstance"] == "gpupin-operator-7d9f-abcde"
    assert event["reportingComponent"] == "gpupin.dev/operator"
    assert event["lastTimestamp"] >= event["firstTimestamp"]

    recorder.post(kube, involved, EventSpec("Normal", "Placed", "placed on workstation"))
    assert sorted(e["reason"] for e in env.cluster.events(env.namespace, "chat")) == [
        "InsufficientVRAM",
        "Placed",
    ]

    clock[0] += FOLD_SECONDS  # long after: news again, a new Event
    recorder.post(kube, involved, refused)
    counts = sorted(
        e["count"] for e in env.cluster.events(env.namespace, "chat") if e["reason"] == "InsufficientVRAM"
    )
    assert counts == [1, 3]

    for found in env.cluster.events(env.namespace, "chat"):  # the API server expired them
        kube.request("DELETE", f"/api/v1/namespaces/{env.namespace}/events/{found['metadata']['name']}")
    clock[0] += 1
    recorder.post(kube, involved, refused)
    (again,) = env.cluster.events(env.namespace, "chat")
    assert again["count"] == 1 and again["reason"] == "InsufficientVRAM"
