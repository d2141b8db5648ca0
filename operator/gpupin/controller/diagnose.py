"""Pure: why a pod of an LLMDeployment is not serving, in words that name the pod and the cause.

No kopf, no kubernetes imports. Reads what the kubelet writes into a pod's status (waiting and
terminated container states, termination messages, the PodScheduled condition) and, for a
running pod that is not Ready, the output of its last failed readiness probe (the kubelet's
``Unhealthy`` Event), which for Ollama pods is :func:`gpupin.engines.ollama_scripts.readiness_script`'s
per-model report. The operator puts the most severe problem into the Ready condition and an
Event, instead of a bare "0/1 pods ready".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gpupin import reasons
from gpupin.engines import ollama_scripts
from gpupin.engines.ollama import MODEL_PULL_CONTAINER
from gpupin.quantity import format_memory

_IMAGE_PULL = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}


@dataclass(frozen=True)
class PodProblem:
    reason: str
    """A Ready condition reason from :mod:`gpupin.reasons`."""
    message: str
    severity: int
    """Higher is worse: the worst problem of a deployment becomes its Ready reason."""


def _tail(text: str, limit: int = 300) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    text = " / ".join(lines[-3:])
    return text if len(text) <= limit else "…" + text[-limit:]


def _last_terminated(status: dict[str, Any]) -> dict[str, Any] | None:
    state = status.get("state") or {}
    last = status.get("lastState") or {}
    return state.get("terminated") or last.get("terminated")


def _exit_text(terminated: dict[str, Any]) -> str:
    code = terminated.get("exitCode")
    reason = terminated.get("reason")
    text = f"exit code {code}" + (f" ({reason})" if reason and reason != "Error" else "")
    message = _tail(str(terminated.get("message") or ""))
    return f"{text}: {message}" if message else text


def needs_probe_output(pod: dict[str, Any]) -> bool:
    """A pod whose server runs but is not Ready: its readiness probe says why."""
    status = pod.get("status") or {}
    if status.get("phase") != "Running":
        return False
    containers = status.get("containerStatuses") or []
    return bool(containers) and any(
        "running" in (c.get("state") or {}) and not c.get("ready") for c in containers
    )


def diagnose(
    pod: dict[str, Any], probe_output: str | None, estimates: Mapping[str, int] | None = None
) -> PodProblem | None:
    """The most telling problem of one pod, or None when nothing is known to be wrong.

    ``probe_output``: the message of the pod's latest failed readiness probe (the kubelet's
    Unhealthy Event), if any; ``estimates``: gpupin's memory estimate per model in bytes, shown
    next to Ollama's own figure when a model spilled to the CPU."""
    name = pod["metadata"]["name"]
    status = pod.get("status") or {}
    for container in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in _IMAGE_PULL:
            return PodProblem(
                reasons.IMAGE_PULL_FAILED,
                f"pod {name}: cannot pull image {container.get('image')}: "
                f"{_tail(str(waiting.get('message') or waiting.get('reason')))}",
                50,
            )
    for container in status.get("initContainerStatuses") or []:
        terminated = _last_terminated(container)
        if container.get("name") == MODEL_PULL_CONTAINER and terminated and terminated.get("exitCode") != 0:
            lines = str(terminated.get("message") or "").strip().splitlines()
            last = lines[-1].strip().removeprefix("gpupin: ") if lines else _exit_text(terminated)
            return PodProblem(
                reasons.MODEL_PULL_FAILED,
                f"pod {name}: pulling the models failed: {last if len(last) <= 400 else last[:400] + '…'}",
                40,
            )
    for container in status.get("containerStatuses") or []:
        # Only while it is down: a container that restarted once and runs again is judged by what
        # it does now (its probe), not by a restart that stays in its status for good.
        state = container.get("state") or {}
        terminated = state.get("terminated") or (container.get("lastState") or {}).get("terminated")
        if "running" not in state and container.get("restartCount", 0) > 0 and terminated:
            return PodProblem(
                reasons.SERVER_CRASHED,
                f"pod {name}: container {container.get('name')} keeps exiting; last {_exit_text(terminated)}",
                30,
            )
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return PodProblem(
                reasons.UNSCHEDULABLE,
                f"pod {name}: not scheduled: {_tail(str(condition.get('message') or condition.get('reason')))}",
                20,
            )
    if probe_output and needs_probe_output(pod):
        return _probe_problem(name, probe_output, estimates or {})
    return None


def _probe_problem(name: str, output: str, estimates: Mapping[str, int]) -> PodProblem:
    reports = ollama_scripts.parse_readiness(output)
    if not reports:
        text = ollama_scripts.probe_text(output)
        if text.startswith('command "') and text.endswith("timed out"):
            text = "it timed out"  # the kubelet quotes the whole command: not worth repeating
        return PodProblem(reasons.PODS_NOT_READY, f"pod {name}: readiness probe failed: {_tail(text)}", 5)
    on_cpu = [r for r in reports if r.state == "on-cpu"]
    if on_cpu:
        parts = []
        for r in on_cpu:
            estimate = estimates.get(r.model) or estimates.get(r.model.removesuffix(":latest"))
            planned = f"; gpupin estimated {format_memory(estimate)}" if estimate else ""
            parts.append(
                f"{r.model} runs partly on the CPU: Ollama holds {format_memory(r.gpu_bytes or 0)} of "
                f"{format_memory(r.total_bytes or 0)} in GPU memory{planned}"
            )
        return PodProblem(reasons.MODEL_ON_CPU, f"pod {name}: " + "; ".join(parts), 35)
    failed = [r for r in reports if r.state in ("failed", "unloaded", "pod")]
    if failed:
        detail = "; ".join(
            f"{r.model}: failed to load: {r.detail}"
            if r.state == "failed"
            else f"{r.model}: {r.detail}"
            if r.model
            else r.detail
            for r in failed
        )
        return PodProblem(reasons.MODEL_NOT_LOADED, f"pod {name}: {detail}", 35)
    loading = ", ".join(r.model for r in reports)
    return PodProblem(reasons.PODS_NOT_READY, f"pod {name}: loading {loading}", 5)
