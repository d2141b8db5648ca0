"""Pure: the LLMDeployment status a reconcile writes, built from the status model.

Three conditions — Placed (the plan), Ready (the pods), Degraded (pods lost or unverifiable) —
a fourth, EndpointReady, where a router serves the deployment, and the printer columns beside them. A condition keeps its ``lastTransitionTime`` while its status
stays the same, whatever its reason and message do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from gpupin import reasons
from gpupin.api.v1alpha1 import (
    CONDITION_MESSAGE_MAX,
    Condition,
    GPUStatus,
    LLMDeployment,
    LLMDeploymentStatus,
    ModelSizingStatus,
    PlacementStatus,
)
from gpupin.controller.diagnose import PodProblem
from gpupin.controller.podstate import is_ready, placement_of
from gpupin.controller.rollout import Step
from gpupin.placement import Placement, Plan
from gpupin.quantity import GiB
from gpupin.render import selector

DEGRADED_NO = "AsExpected"
DEGRADED_LOST = "PlacementLost"
DEGRADED_GPU_GONE = "GPULost"
DEGRADED_UNVERIFIED = "PodsUnverified"
"""Its pods run where gpupin cannot currently verify their GPUs (a node's inventory is unreadable,
a pod's placement record is invalid); they are kept, and nothing is placed beside them."""


def condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The condition of that type in a status as written (None when absent)."""
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), None)


def _condition(
    previous: dict[str, Any],
    kind: str,
    value: bool,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime,
) -> Condition:
    status = "True" if value else "False"
    old = condition(previous, kind)
    since = (
        old["lastTransitionTime"]
        if old and old.get("status") == status and old.get("lastTransitionTime")
        else now.strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    if len(message) > CONDITION_MESSAGE_MAX:
        message = message[: CONDITION_MESSAGE_MAX - 1] + "…"
    return Condition(
        type=kind,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )


def _placement_status(placement: Placement, state: str) -> PlacementStatus:
    return PlacementStatus(
        pod=placement.pod,
        node=placement.node,
        models=list(placement.models),
        gpus=[
            GPUStatus(index=g.index, uuid=g.uuid, name=g.name, vram_bytes=g.vram_bytes)
            for g in placement.gpus
        ],
        state=state,
    )


def _live_status(pod: dict[str, Any], state: str) -> PlacementStatus:
    found = placement_of(pod) or Placement(pod="", node="", models=(), gpus=())
    return _placement_status(replace(found, pod=pod["metadata"]["name"]), state)


def build_status(
    body: dict[str, Any],
    deployment: LLMDeployment | None,
    invalid: str | None,
    plan: Plan | None,
    live: list[dict[str, Any]],
    lost: list[str],
    now: datetime,
    problem: PodProblem | None = None,
    *,
    step: Step | None = None,
    rejected: str | None = None,
    notes: Sequence[str] = (),
    endpoint: Endpoint | None = None,
) -> dict[str, Any]:
    """The whole status, as the JSON the API server stores (camelCase, no nulls).

    It says what serves now and what is pending, and why: Placed is the plan for the current spec;
    Ready counts the pods that serve it (and, during a rollout, the Ready pods of the earlier spec
    that serve the same models); Degraded is True only when something was lost or cannot be read
    (``lost``: pods deleted for a lost GPU; ``notes``: other problems of its pods, e.g. a node whose
    inventory is stale); ``endpoint``: the router in front of its pods, when it has one (only a
    placed deployment's is reported)."""
    previous = body.get("status") or {}
    generation = body["metadata"].get("generation")
    placed = plan is not None and plan.placed and rejected is None
    if plan is None:
        reason, message = reasons.INVALID_SPEC, invalid or "the spec could not be read"
    elif rejected is not None:
        reason, message = reasons.POD_REJECTED, rejected
    else:
        reason, message = plan.reason, plan.message
    spec_models = [m.name for m in deployment.spec.models] if deployment else []
    going = {o["metadata"]["name"] for o, _ in step.delete if o["kind"] == "Pod"} if step else set()
    serving = _serving([p for p in live if p["metadata"]["name"] not in going], spec_models)
    if not placed and live:
        message += f" ({_pods(len(live))} placed earlier {'keeps' if len(live) == 1 else 'keep'} running)"
    placed_condition = _condition(previous, reasons.PLACED, placed, reason, message, generation, now)
    paused = plan is not None and plan.reason == reasons.PAUSED
    if placed and step is not None:
        target = step.target
        ready = min(target, serving.ready_same)
        ready_condition = _ready_when_placed(previous, step, ready, serving, paused, problem, generation, now)
    else:
        target = max(len(live), deployment.spec.replicas if deployment else 0)
        ready = serving.ready_same
        ready_condition = _ready_when_not_placed(
            previous, live, ready, target, serving, reason, message, generation, now
        )
    degraded = _degraded(previous, placed, lost, notes, message, generation, now)
    conditions = [placed_condition, ready_condition, degraded]
    endpoint = endpoint if placed else None
    if endpoint is not None:
        conditions.append(_endpoint_ready(previous, endpoint, generation, now))

    placements: list[PlacementStatus] = []
    if placed and plan is not None and step is not None:
        up_to_date = {p["metadata"]["name"]: p for p in step.up_to_date}
        for placement in plan.placements:
            pod = up_to_date.get(placement.pod)
            state = "Pending" if pod is None else "Ready" if is_ready(pod) else "Starting"
            placements.append(_placement_status(placement, state))
        for pod in step.outdated:
            placements.append(_live_status(pod, "Outdated"))
    else:  # what the pods of an earlier placement hold
        placements = [
            _live_status(pod, "Outdated") for pod in sorted(live, key=lambda p: p["metadata"]["name"])
        ]
    engine = plan.engine if plan else (deployment.spec.resolved_engine if deployment else None)
    model_list = ", ".join(spec_models) if deployment else None
    if model_list is not None and serving.other_models:
        model_list += f" (serving {', '.join(serving.other_models)})"
    status = LLMDeploymentStatus(
        observed_generation=generation,
        conditions=conditions,
        placements=placements,
        sizing=[
            ModelSizingStatus(
                name=m.name,
                vram=f"{m.vram_bytes / GiB:.1f}Gi",
                source=m.source,
                origin=m.origin,
                read_at=m.read_at,
            )
            for m in (plan.models if plan else ())
        ],
        engine=engine,
        model_list=model_list,
        gpus=sum(len(p.gpus) for p in placements if p.state != "Pending"),
        ready=f"{ready}/{target}",
        reason=reason,
        message=message,
        endpoint=endpoint.address if endpoint else None,
        replicas=deployment.spec.replicas if placed and deployment else 0,
        selector=",".join(f"{k}={v}" for k, v in selector(deployment).items()) if deployment else None,
    )
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


@dataclass(frozen=True)
class Endpoint:
    """A deployment's router: the address its clients call (``assistant.apps.svc:11434``), its
    Deployment's name and that Deployment as last seen (None: not created yet)."""

    address: str
    name: str
    workload: dict[str, Any] | None


def _endpoint_ready(
    previous: dict[str, Any], endpoint: Endpoint, generation: int | None, now: datetime
) -> Condition:
    """True once the router's Deployment has a ready pod; False says why not, from the
    Deployment's own conditions."""
    workload = endpoint.workload or {}
    status = workload.get("status") or {}
    if int(status.get("readyReplicas") or 0) >= 1:
        return _condition(
            previous, reasons.ENDPOINT_READY, True, reasons.ROUTER_READY,
            f"{endpoint.address} routes each request to the server of the model it names", generation, now,
        )  # fmt: skip
    if not workload:
        why = f"router Deployment {endpoint.name} is being created"
    else:
        said = [  # ReplicaFailure is True when pods cannot even be made (quota, a PriorityClass)
            c.get("message")
            for c in status.get("conditions") or []
            if (c.get("type"), c.get("status"))
            in (("ReplicaFailure", "True"), ("Progressing", "False"), ("Available", "False"))
        ]
        why = f"router Deployment {endpoint.name} has no ready pod" + (
            f" ({'; '.join(m for m in said if m)})" if any(said) else ""
        )
        namespace = workload["metadata"].get("namespace", "")
        why += f"; see kubectl -n {namespace} describe deployment {endpoint.name}, and its pods"
    return _condition(
        previous, reasons.ENDPOINT_READY, False, reasons.ROUTER_NOT_READY,
        f"{endpoint.address} does not answer yet: {why}", generation, now,
    )  # fmt: skip


def _pods(count: int) -> str:
    return f"{count} pod" if count == 1 else f"{count} pods"


@dataclass(frozen=True)
class _Serving:
    ready_same: int
    """Ready pods that serve only models of the current spec."""
    other_models: tuple[str, ...]
    """Models that live pods serve and the current spec does not list."""


def _serving(live: list[dict[str, Any]], spec_models: list[str]) -> _Serving:
    wanted = set(spec_models)
    ready_same = 0
    others: dict[str, None] = {}
    for pod in live:
        placement = placement_of(pod)
        models = set(placement.models) if placement else set()
        extra = models - wanted
        others.update(dict.fromkeys(sorted(extra)))
        if is_ready(pod) and models and not extra:
            ready_same += 1
    return _Serving(ready_same, tuple(others))


def _ready_when_placed(
    previous: dict[str, Any],
    step: Step,
    ready: int,
    serving: _Serving,
    paused: bool,
    problem: PodProblem | None,
    generation: int | None,
    now: datetime,
) -> Condition:
    target = step.target
    if paused:
        left = f"; {_pods(len(step.outdated))} still being deleted" if step.outdated else ""
        return _condition(
            previous, reasons.READY, False, reasons.PAUSED, "paused (replicas: 0)" + left, generation, now
        )
    current_ready = sum(1 for p in step.up_to_date if is_ready(p))
    if step.outdated:
        old = ", ".join(sorted(p["metadata"]["name"] for p in step.outdated))
        text = (
            f"{ready}/{target} pods ready; rolling out: {current_ready}/{target} with the current spec, "
            f"{_pods(len(step.outdated))} of an earlier spec still serving ({old})"
        )
        if serving.other_models:
            text += f" {', '.join(serving.other_models)}"
        if step.held_back:
            text += f"; next replacement waits: {step.held_back}"
        if problem:
            text += f"; {problem.message}"
        return _condition(
            previous, reasons.READY, ready >= target, reasons.ROLLING_OUT, text, generation, now
        )
    if current_ready == target:
        return _condition(
            previous, reasons.READY, True, reasons.PODS_READY, f"{ready}/{target} pods ready", generation, now
        )
    return _condition(
        previous,
        reasons.READY,
        False,
        problem.reason if problem else reasons.PODS_NOT_READY,
        f"{current_ready}/{target} pods ready" + (f"; {problem.message}" if problem else ""),
        generation,
        now,
    )


def _ready_when_not_placed(
    previous: dict[str, Any],
    live: list[dict[str, Any]],
    ready: int,
    target: int,
    serving: _Serving,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime,
) -> Condition:
    if reason == reasons.POD_REJECTED:
        text = f"{ready}/{target} pods ready; {message}"
        return _condition(previous, reasons.READY, False, reasons.POD_REJECTED, text, generation, now)
    if not live:
        return _condition(
            previous, reasons.READY, False, reasons.NOT_PLACED, "no pods: not placed", generation, now
        )
    if serving.other_models or not ready:
        text = (
            f"{ready}/{target} pods serve the current spec; {_pods(len(live))} of an earlier spec "
            f"{'keeps' if len(live) == 1 else 'keep'} serving "
            f"{', '.join(serving.other_models) or 'it'} until the current one can be placed"
        )
        return _condition(previous, reasons.READY, False, reasons.EARLIER_SPEC_SERVING, text, generation, now)
    text = f"{ready}/{target} replicas ready; the rest cannot be placed ({reason})"
    return _condition(previous, reasons.READY, False, reasons.PARTLY_SERVING, text, generation, now)


def _degraded(
    previous: dict[str, Any],
    placed: bool,
    lost: list[str],
    notes: Sequence[str],
    message: str,
    generation: int | None,
    now: datetime,
) -> Condition:
    """True while pods were lost and are not re-placed, or something about its pods cannot be read."""
    old = condition(previous, reasons.DEGRADED) or {}
    if lost:
        text = "; ".join(lost) + ("; re-planned" if placed else f"; cannot re-place: {message}")
        return _condition(previous, reasons.DEGRADED, True, DEGRADED_GPU_GONE, text, generation, now)
    if not placed and old.get("status") == "True" and old.get("reason") in (DEGRADED_GPU_GONE, DEGRADED_LOST):
        text = f"pods lost with their GPUs are not re-placed: {message}"
        return _condition(previous, reasons.DEGRADED, True, DEGRADED_LOST, text, generation, now)
    if notes:
        return _condition(
            previous, reasons.DEGRADED, True, DEGRADED_UNVERIFIED, "; ".join(notes), generation, now
        )
    return _condition(previous, reasons.DEGRADED, False, DEGRADED_NO, "", generation, now)


def failed_status(body: dict[str, Any], reason: str, message: str, now: datetime) -> dict[str, Any]:
    """The status as it was, with Placed=False for ``reason`` and the message: what the operator
    writes when it cannot reconcile the deployment at all (the other conditions stay as they were)."""
    previous = body.get("status") or {}
    generation = body["metadata"].get("generation")
    placed = _condition(previous, reasons.PLACED, False, reason, message, generation, now)
    conditions = [placed.model_dump(mode="json", by_alias=True, exclude_none=True)]
    conditions += [c for c in previous.get("conditions") or [] if c.get("type") != reasons.PLACED]
    return {**previous, "conditions": conditions, "reason": reason, "message": message}


def same_status(old: dict[str, Any], new: dict[str, Any] | None) -> bool:
    """Would writing ``new`` change nothing? (``kopf``'s own status field is not ours.)"""
    return (
        new is not None
        and all(old.get(k) == v for k, v in new.items())
        and not (set(old) - set(new) - {"kopf"})
    )
