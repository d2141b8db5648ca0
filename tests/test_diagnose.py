"""What goes wrong in a pod reaches the LLMDeployment.

Aspects: each failure the kubelet reports (image pull, model pull in the init container, a
crash-looping server, an unschedulable pod) and each readiness report of the Ollama probe
(model on the CPU with Ollama's figure beside gpupin's estimate, load failure, still loading)
becomes a Ready condition reason and a message naming the pod and the cause, plus a Warning
Event when it first appears; Ready pods and plain start-up say nothing alarming. The pod
statuses are shaped as the kubelet writes them; the probe outputs in test_ollama_pods.py come
from the real probe against the real server and go through the same parser.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gpupin import reasons
from gpupin.controller.decide import decide
from gpupin.controller.diagnose import diagnose, needs_probe_output
from gpupin.engines.ollama_scripts import parse_readiness
from gpupin.planner import plan
from gpupin.render import RenderConfig, render

from helpers import deployment, models, workstation

GIB = 1024**3


def _pod(status: dict[str, Any], name: str = "p") -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": status}


def _running_not_ready() -> dict[str, Any]:
    return {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [
            {"name": "ollama", "ready": False, "restartCount": 0, "state": {"running": {}}}
        ],
    }


def test_image_that_cannot_be_pulled() -> None:
    pod = _pod(
        {
            "phase": "Pending",
            "initContainerStatuses": [
                {
                    "name": "pull-models",
                    "image": "ollama/ollama:0.99.0",
                    "state": {
                        "waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "x"'}
                    },
                }
            ],
        }
    )
    problem = diagnose(pod, None)
    assert problem is not None and problem.reason == reasons.IMAGE_PULL_FAILED
    assert problem.message == 'pod p: cannot pull image ollama/ollama:0.99.0: Back-off pulling image "x"'


def test_model_pull_failure_names_the_model_from_the_termination_message() -> None:
    pod = _pod(
        {
            "phase": "Pending",
            "initContainerStatuses": [
                {
                    "name": "pull-models",
                    "restartCount": 2,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {
                        "terminated": {
                            "exitCode": 1,
                            "reason": "Error",
                            "message": "gpupin: pulling llama3.1:8b\ngpupin: cannot pull model llama3.1:8b: "
                            "Error: pull model manifest: file does not exist\ngpupin: pulling a\n"
                            "gpupin: pulling b\ngpupin: pulling c\ngpupin: cannot pull model(s) "
                            "llama3.1:8b: Error: pull model manifest: file does not exist\n",
                        }
                    },
                }
            ],
        }
    )
    problem = diagnose(pod, None)
    assert problem is not None and problem.reason == reasons.MODEL_PULL_FAILED
    assert problem.message == (
        "pod p: pulling the models failed: cannot pull model(s) llama3.1:8b: "
        "Error: pull model manifest: file does not exist"
    )


def test_crash_looping_server() -> None:
    pod = _pod(
        {
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": "vllm",
                    "ready": False,
                    "restartCount": 4,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {
                        "terminated": {"exitCode": 1, "message": "ValueError: invalid literal for int()"}
                    },
                }
            ],
        }
    )
    problem = diagnose(pod, None)
    assert problem is not None and problem.reason == reasons.SERVER_CRASHED
    assert problem.message == (
        "pod p: container vllm keeps exiting; last exit code 1: ValueError: invalid literal for int()"
    )


def test_a_past_restart_does_not_hide_what_the_probe_says_now() -> None:
    status = _running_not_ready()
    status["containerStatuses"][0] |= {
        "restartCount": 1,
        "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
    }
    output = (
        "Readiness probe failed: gpupin: not serving: m:latest: on CPU: 0 of 1048576 bytes in GPU memory;"
    )
    problem = diagnose(_pod(status), output)
    assert problem is not None and problem.reason == reasons.MODEL_ON_CPU


def test_odd_probe_outputs() -> None:
    """What the kubelet makes of the probe: a timeout quotes the whole script (which must not be
    read as a report), stderr is appended after the report, similar events are combined."""
    timed_out = (
        'Readiness probe failed: command "/bin/bash -c PORT=11434\nPREFIX="gpupin: not"" serving:"" timed out'
    )
    problem = diagnose(_pod(_running_not_ready()), timed_out)
    assert problem is not None and problem.reason == reasons.PODS_NOT_READY
    assert problem.message == "pod p: readiness probe failed: it timed out"
    down = "Readiness probe failed: gpupin: not serving: the Ollama server does not answer\nbash: connect: refused\n"
    problem = diagnose(_pod(_running_not_ready()), down)
    assert problem is not None and problem.reason == reasons.MODEL_NOT_LOADED
    assert problem.message == "pod p: the Ollama server does not answer"
    combined = "(combined from similar events): Readiness probe failed: gpupin: not serving: m:latest: failed to load: boom;"
    problem = diagnose(_pod(_running_not_ready()), combined)
    assert problem is not None and problem.message == "pod p: m:latest: failed to load: boom"


def test_unschedulable_pod() -> None:
    pod = _pod(
        {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "message": "0/3 nodes are available: 3 Insufficient cpu.",
                }
            ],
        }
    )
    problem = diagnose(pod, None)
    assert problem is not None and problem.reason == reasons.UNSCHEDULABLE
    assert "3 Insufficient cpu" in problem.message


def test_model_on_cpu_shows_the_engines_figure_beside_the_estimate() -> None:
    output = (
        "Readiness probe failed: gpupin: not serving: llama3.1:8b: on CPU: "
        f"{3 * GIB} of {6 * GIB} bytes in GPU memory;\n"
    )
    problem = diagnose(_pod(_running_not_ready()), output, {"llama3.1:8b": 5 * GIB})
    assert problem is not None and problem.reason == reasons.MODEL_ON_CPU
    assert problem.message == (
        "pod p: llama3.1:8b runs partly on the CPU: Ollama holds 3.0 GiB of 6.0 GiB in GPU memory; "
        "gpupin estimated 5.0 GiB"
    )


def test_failed_and_loading_models() -> None:
    failed = "gpupin: not serving: a:latest: failed to load: model 'a' not found; b:latest: not loaded yet;"
    problem = diagnose(_pod(_running_not_ready()), failed)
    assert problem is not None and problem.reason == reasons.MODEL_NOT_LOADED
    assert problem.message == "pod p: a:latest: failed to load: model 'a' not found"
    loading = diagnose(_pod(_running_not_ready()), "gpupin: not serving: b:latest: not loaded yet;")
    assert loading is not None and loading.reason == reasons.PODS_NOT_READY
    assert loading.message == "pod p: loading b:latest"


def test_probe_output_of_another_program_is_quoted_not_parsed() -> None:
    problem = diagnose(
        _pod(_running_not_ready()), "Readiness probe failed: HTTP probe failed with statuscode: 503"
    )
    assert problem is not None and problem.reason == reasons.PODS_NOT_READY
    assert "statuscode: 503" in problem.message
    assert parse_readiness("HTTP probe failed") is None


def test_ready_or_starting_pods_have_no_problem() -> None:
    ready = _running_not_ready()
    ready["containerStatuses"][0]["ready"] = True
    assert diagnose(_pod(ready), None) is None
    assert not needs_probe_output(_pod(ready))
    assert needs_probe_output(_pod(_running_not_ready()))
    assert diagnose(_pod({"phase": "Pending"}), None) is None


CHAT = deployment("assistant", engine="ollama", models=models("llama3.1:8b"))
ON_CPU = (
    f"Readiness probe failed: gpupin: not serving: llama3.1:8b: on CPU: 0 of {6 * GIB} bytes in GPU memory;"
)


def _chat_pod() -> dict[str, Any]:
    """The one pod CHAT gets on the workstation, running but not Ready."""
    (pod,) = [o for o in render(CHAT, plan(CHAT, workstation()), RenderConfig()) if o["kind"] == "Pod"]
    pod["metadata"]["uid"] = "u1"
    pod["status"] = _running_not_ready()
    return pod


def _reconcile(pod: dict[str, Any], status: dict[str, Any] | None, output: str | None) -> Any:
    """decide() for CHAT with this pod, the status it last wrote and the pod's probe output."""
    cluster = workstation()
    body = CHAT.model_dump(by_alias=True, exclude_none=True) | {
        "metadata": {"name": "assistant", "namespace": "default", "uid": "d1", "generation": 1}
    }
    if status is not None:
        body["status"] = status
    probe_output = {pod["metadata"]["name"]: output} if output else None
    return decide(
        body,
        CHAT,
        None,
        plan(CHAT, cluster),
        [pod],
        [],
        [],
        cluster,
        RenderConfig(),
        now=datetime(2026, 11, 30, 12, 0, tzinfo=UTC),
        probe_output=probe_output,
    )


def _ready(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == reasons.READY)


def test_the_deployment_says_which_pod_and_why_and_posts_a_warning_once() -> None:
    pod = _chat_pod()
    actions = _reconcile(pod, None, ON_CPU)
    assert actions.status is not None
    ready = _ready(actions.status)
    assert ready["status"] == "False" and ready["reason"] == reasons.MODEL_ON_CPU
    name = pod["metadata"]["name"]
    assert ready["message"].startswith(f"0/1 pods ready; pod {name}: llama3.1:8b runs partly on the CPU")
    assert "gpupin estimated" in ready["message"]
    warnings = [e for e in actions.events if e.reason == reasons.MODEL_ON_CPU]
    assert len(warnings) == 1 and warnings[0].type == "Warning"

    again = _reconcile(pod, actions.status, ON_CPU)
    assert not [e for e in again.events if e.reason == reasons.MODEL_ON_CPU], (
        "posted once, not every reconcile"
    )


def test_an_unread_probe_keeps_the_last_known_reason() -> None:
    """After an operator restart the probe Events are not read yet: the Ready reason stays what it
    was (no flip to PodsNotReady and back, no second Warning) until they are."""
    pod = _chat_pod()
    first = _reconcile(pod, None, ON_CPU)
    assert first.status is not None
    restarted = _reconcile(pod, first.status, None)
    assert restarted.status is None, "nothing to write: the reason and message stay"
    assert not restarted.events
    pod["status"]["containerStatuses"][0]["ready"] = True
    pod["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    ready = _reconcile(pod, first.status, None)
    assert ready.status is not None
    assert _ready(ready.status)["reason"] == reasons.PODS_READY
