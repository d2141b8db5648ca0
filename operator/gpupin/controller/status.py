"""Pure: the LLMDeployment status a reconcile writes, built from the status model.

Three conditions — Placed (the plan), Ready (the pods), Degraded (a placement that was lost) —
and the printer columns beside them. A condition keeps its ``lastTransitionTime`` while its status
stays the same, whatever its reason and message do.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from gpupin import reasons
from gpupin.api.v1alpha1 import (
    Condition,
    GPUStatus,
    LLMDeployment,
    LLMDeploymentStatus,
    ModelSizingStatus,
    PlacementStatus,
)
from gpupin.controller.diagnose import PodProblem
from gpupin.controller.podstate import is_ready, placement_of, spec_hash_of
from gpupin.placement import Placement, Plan
from gpupin.quantity import GiB
from gpupin.render import selector

DEGRADED_NO = "AsExpected"
DEGRADED_LOST = "PlacementLost"
DEGRADED_GPU_GONE = "GPULost"


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
    return Condition(
        type=kind,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )


def _placement_status(placement: Placement) -> PlacementStatus:
    return PlacementStatus(
        pod=placement.pod,
        node=placement.node,
        models=list(placement.models),
        gpus=[
            GPUStatus(index=g.index, uuid=g.uuid, name=g.name, vram_bytes=g.vram_bytes)
            for g in placement.gpus
        ],
    )


def build_status(
    body: dict[str, Any],
    deployment: LLMDeployment | None,
    invalid: str | None,
    plan: Plan | None,
    live: list[dict[str, Any]],
    desired: list[dict[str, Any]],
    lost: list[str],
    now: datetime,
    problem: PodProblem | None = None,
) -> dict[str, Any]:
    """The whole status, as the JSON the API server stores (camelCase, no nulls)."""
    previous = body.get("status") or {}
    generation = body["metadata"].get("generation")
    placed = plan is not None and plan.placed
    if plan is None:
        reason, message = reasons.INVALID_SPEC, invalid or "the spec could not be read"
    else:
        reason, message = plan.reason, plan.message
    placed_condition = _condition(previous, reasons.PLACED, placed, reason, message, generation, now)

    desired_pods = {o["metadata"]["name"]: o for o in desired if o["kind"] == "Pod"}
    by_name = {p["metadata"]["name"]: p for p in live}
    if placed:
        total = len(desired_pods)
        ready = sum(
            1
            for name, obj in desired_pods.items()
            if name in by_name
            and spec_hash_of(by_name[name]) == spec_hash_of(obj)
            and is_ready(by_name[name])
        )
    else:
        total = len(live)
        ready = sum(1 for p in live if is_ready(p))
    if not placed and not live:
        ready_condition = _condition(
            previous, reasons.READY, False, reasons.NOT_PLACED, "no pods: not placed", generation, now
        )
    elif ready == total and placed:
        ready_condition = _condition(
            previous, reasons.READY, True, reasons.PODS_READY, f"{ready}/{total} pods ready", generation, now
        )
    else:
        ready_condition = _condition(
            previous,
            reasons.READY,
            False,
            problem.reason if problem else reasons.PODS_NOT_READY,
            f"{ready}/{total} pods ready" + (f"; {problem.message}" if problem else ""),
            generation,
            now,
        )

    was_placed = (condition(previous, reasons.PLACED) or {}).get("status") == "True"
    was_degraded = (condition(previous, reasons.DEGRADED) or {}).get("status") == "True"
    if lost:
        degraded = _condition(
            previous,
            reasons.DEGRADED,
            True,
            DEGRADED_GPU_GONE,
            "; ".join(lost) + ("; re-planned" if placed else f"; cannot re-place: {message}"),
            generation,
            now,
        )
    elif not placed and (was_placed or was_degraded):
        degraded = _condition(
            previous,
            reasons.DEGRADED,
            True,
            DEGRADED_LOST,
            f"was placed, cannot be placed now: {message}",
            generation,
            now,
        )
    else:
        degraded = _condition(previous, reasons.DEGRADED, False, DEGRADED_NO, "", generation, now)

    if placed and plan is not None:
        placements = [_placement_status(p) for p in plan.placements]
    else:  # what the pods of an earlier placement hold
        placements = []
        for pod in sorted(live, key=lambda p: p["metadata"]["name"]):
            found = placement_of(pod) or Placement(pod="", node="", models=(), gpus=())
            placements.append(_placement_status(replace(found, pod=pod["metadata"]["name"])))
    if not placed and live:
        message += f" ({len(live)} pod(s) of an earlier placement keep running)"
    engine = plan.engine if plan else (deployment.spec.resolved_engine if deployment else None)
    status = LLMDeploymentStatus(
        observed_generation=generation,
        conditions=[placed_condition, ready_condition, degraded],
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
        model_list=", ".join(m.name for m in deployment.spec.models) if deployment else None,
        gpus=sum(len(p.gpus) for p in placements),
        ready=f"{ready}/{total}",
        reason=reason,
        message=message,
        replicas=deployment.spec.replicas if placed and deployment else 0,
        selector=",".join(f"{k}={v}" for k, v in selector(deployment).items()) if deployment else None,
    )
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


def same_status(old: dict[str, Any], new: dict[str, Any] | None) -> bool:
    """Would writing ``new`` change nothing? (``kopf``'s own status field is not ours.)"""
    return (
        new is not None
        and all(old.get(k) == v for k, v in new.items())
        and not (set(old) - set(new) - {"kopf"})
    )
