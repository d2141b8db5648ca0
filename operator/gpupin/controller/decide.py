"""Pure: from a deployment, its existing children, the inventory and a plan, to the writes.

No kopf, no kubernetes imports, no I/O. :func:`decide` returns what to create, what to
delete, the status to write and the Events to post; the runtime applies them. The rules:

- a pod whose GPUs (or node) left the inventory is deleted, whatever the plan says — with grace 0
  only when its Node object is gone; never a pod on a node whose inventory is frozen
  (``node_notes``: its facts cannot be read now, the last good inventory serves its pods);
- placed: the children move towards the plan one rollout step at a time
  (:mod:`gpupin.controller.rollout`): new pods on free GPUs first, old pods deleted only within
  ``maxUnavailable`` or once their replacement is Ready; a planned pod waits while a pod of the
  deployment still holds its GPUs;
- refused: nothing is created and the deployment's remaining pods keep running (a
  refusal is a state, not a teardown), so a spec change that cannot be placed does not
  take down what serves now;
- rejected: the API server refused an object of the plan; nothing more is written until the
  spec changes (status and an Event say why);
- Services and NetworkPolicies follow the plan; claim templates and NetworkPolicies are created
  before their pods.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gpupin import constants, reasons
from gpupin.api.v1alpha1 import LLMDeployment
from gpupin.controller.diagnose import PodProblem, diagnose, needs_probe_output
from gpupin.controller.podstate import is_ready, is_terminating, placement_of, placement_problem
from gpupin.controller.rollout import DEFAULT_POLICY, RolloutPolicy, Step, converge
from gpupin.controller.status import (
    DEGRADED_GPU_GONE,
    DEGRADED_UNVERIFIED,
    Endpoint,
    build_status,
    condition,
    same_status,
)
from gpupin.engines import ENGINES, EngineRegistry, UnknownEngine
from gpupin.inventory import Inventory, short_name
from gpupin.placement import Placement, Plan
from gpupin.render import RenderConfig, render, routed
from gpupin.routerobjects import endpoint_address, router_name
from gpupin.sizing import SizingError


@dataclass(frozen=True)
class EventSpec:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Actions:
    create: list[dict[str, Any]] = field(default_factory=list)
    delete: list[tuple[dict[str, Any], int | None]] = field(default_factory=list)
    replace: list[dict[str, Any]] = field(default_factory=list)
    """Children written over in place (with the resourceVersion they replace)."""
    """(object, grace period): 0 for pods whose node is gone (no kubelet will ever confirm)."""
    status: dict[str, Any] | None = None
    """The full status to write, or None when it is unchanged."""
    events: list[EventSpec] = field(default_factory=list)
    waiting: bool = False
    """A planned object waits for one on its way out (on its GPUs, or of its name): reconcile
    again when that is gone."""
    pods_complete: bool = False
    """Every planned pod exists with the current spec (for the spec-to-pods metric)."""
    step: Step | None = None
    """Where the deployment's rollout stands (None when not placed)."""
    surge: bool = False
    """The creates are surge pods of a plan beside the outgoing pods (set by the runtime)."""
    stale_nodes: list[str] = field(default_factory=list)
    """One line per node with pods of this deployment whose inventory is frozen:
    ``node X: …; its pods keep running on the last good inventory`` (for the status)."""


def owner_reference(body: dict[str, Any]) -> dict[str, Any]:
    meta = body["metadata"]
    return {
        "apiVersion": constants.API_VERSION,
        "kind": constants.KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _gpu_text(placement: Placement) -> str:
    return " + ".join(f"GPU {g.index} {short_name(g.name)}" for g in placement.gpus)


def lost_gpus(
    pod: dict[str, Any],
    inventory: Inventory,
    node_notes: Mapping[str, str] | None = None,
    gpu_aliases: Mapping[str, str] | None = None,
) -> str | None:
    """Why a pod's GPUs are gone (None when they are all still there, on its node). A pod on a node
    in ``node_notes`` (frozen: its facts cannot be read now) has lost nothing; a UUID in
    ``gpu_aliases`` (a GFD stand-in) is the GPU it maps to."""
    placement = placement_of(pod)
    if placement is None:
        return None
    aliases = gpu_aliases or {}
    held = [aliases.get(g.uuid, g.uuid) for g in placement.gpus]
    node_name = placement.node
    if not node_name:  # the annotation names no node: look the GPUs up anywhere
        present = {g.uuid for n in inventory.nodes for g in n.gpus}
        missing = [u for u in held if u not in present]
        return f"GPU {', '.join(missing)} has left the GPU inventory" if missing else None
    if node_name in (node_notes or {}):
        return None
    node = next((n for n in inventory.nodes if n.name == node_name), None)
    if node is None:
        return f"node {node_name} has left the GPU inventory"
    present = {g.uuid for g in node.gpus}
    missing = [u for u in held if u not in present]
    if missing:
        return f"GPU {', '.join(missing)} has left node {node_name}'s inventory"
    return None


def decide(
    body: dict[str, Any],
    deployment: LLMDeployment | None,
    invalid: str | None,
    plan: Plan | None,
    pods: list[dict[str, Any]],
    services: list[dict[str, Any]],
    claim_templates: list[dict[str, Any]],
    inventory: Inventory,
    render_config: RenderConfig,
    now: datetime,
    probe_output: Mapping[str, str] | None = None,
    engines: EngineRegistry = ENGINES,
    policy: RolloutPolicy = DEFAULT_POLICY,
    rejected: str | None = None,
    node_notes: Mapping[str, str] | None = None,
    gpu_aliases: Mapping[str, str] | None = None,
    frozen_gpus: Collection[str] = (),
    network_policies: Sequence[dict[str, Any]] = (),
    routers: Sequence[dict[str, Any]] = (),
) -> Actions:
    """Everything one reconcile writes. ``invalid`` (with no plan) reports a spec that did not parse;
    ``now`` stamps the conditions that change; ``probe_output`` maps a pod's name to its latest
    failed readiness probe's message (the kubelet's Unhealthy Event), which says why a running pod
    is not Ready. ``policy`` bounds how many pods a rollout replaces at once
    (:mod:`gpupin.controller.rollout`); ``rejected`` is why the API server refused an object of
    this plan (then nothing is written but the status, until the spec changes). ``node_notes``:
    node → why its GPU inventory is frozen (its pods stay, on the last good inventory;
    ``actions.stale_nodes`` and Degraded say so); ``gpu_aliases``: a UUID pods were placed with →
    the UUID the node reports for that GPU now; ``frozen_gpus``: GPUs a healthy report left out,
    within their grace period (their pods are neither replaced nor joined); ``network_policies``:
    the deployment's NetworkPolicies (like ``services`` and ``claim_templates``); ``routers``: its
    router's ConfigMap and Deployment."""
    actions = Actions()
    notes = node_notes or {}
    node_names = {n.name for n in inventory.nodes}
    live: list[dict[str, Any]] = []
    lost: list[str] = []
    for pod in pods:
        if is_terminating(pod):
            continue
        placement = placement_of(pod)
        if placement is not None and placement.node in notes:
            line = f"node {placement.node}: {notes[placement.node]}; its pods keep running on the last good inventory"
            if line not in actions.stale_nodes:
                actions.stale_nodes.append(line)
        why = lost_gpus(pod, inventory, notes, gpu_aliases)
        if why is not None:
            # grace 0 only for a pod whose Node object is gone: no kubelet will ever confirm
            gone_node = placement is not None and bool(placement.node) and placement.node not in node_names
            actions.delete.append((pod, 0 if gone_node else None))
            lost.append(f"{pod['metadata']['name']}: {why}")
            actions.events.append(
                EventSpec(
                    "Warning", DEGRADED_GPU_GONE, f"Deleted pod {pod['metadata']['name']}: {why}; re-planning"
                )
            )
            continue
        live.append(pod)

    placed = plan is not None and plan.placed
    desired: list[dict[str, Any]] = []
    step: Step | None = None
    if placed and deployment is not None and plan is not None:
        owner = owner_reference(body)
        for obj in render(deployment, plan, render_config, engines):
            obj["metadata"]["ownerReferences"] = [owner]
            desired.append(obj)
        step = actions.step = converge(
            desired,
            live,
            pods,
            services,
            claim_templates,
            policy,
            frozen={*notes, *frozen_gpus},
            aliases=gpu_aliases,
            network_policies=network_policies,
            routers=routers,
        )
        if rejected is None:
            actions.create, actions.waiting = step.create, step.waiting
            actions.replace = step.replace
            actions.delete.extend(step.delete)
            _child_events(actions, plan, step)
        else:  # the API server refused what this plan makes: write nothing more, try nothing
            step.trial = []
        created = sum(1 for o in actions.create if o["kind"] == "Pod")
        actions.pods_complete = not step.outdated and len(step.up_to_date) + created == step.target
    unverified = [*actions.stale_nodes, *(found for pod in live if (found := placement_problem(pod)))]
    problem = _worst_problem(deployment, live, probe_output or {}, engines) or _last_probe_problem(
        body.get("status") or {}, live, probe_output or {}
    )
    actions.status = build_status(
        body,
        deployment,
        invalid,
        plan,
        live,
        lost,
        now,
        problem,
        step=step,
        rejected=rejected,
        notes=unverified,
        endpoint=_endpoint(deployment, plan, render_config, routers, engines),
    )
    previous = body.get("status") or {}
    old_placed = condition(previous, reasons.PLACED)
    new_placed = condition(actions.status, reasons.PLACED)
    if new_placed and (
        not old_placed
        or (old_placed["status"], old_placed["reason"]) != (new_placed["status"], new_placed["reason"])
    ):
        kind = "Normal" if new_placed["status"] == "True" else "Warning"
        # placed as planned and its pods made now: their CreatedPod Events say where, one Event
        # per pod instead of one more per deployment (a burst of new deployments posts half as many)
        said = new_placed["reason"] == reasons.PLACED_OK and any(
            e.reason == "CreatedPod" for e in actions.events
        )
        if not said:
            actions.events.append(EventSpec(kind, new_placed["reason"], new_placed["message"]))
    old_ready = condition(previous, reasons.READY) or {}
    new_ready = condition(actions.status, reasons.READY) or {}
    # one Warning per new reason: messages carry volatile details (image pull back-off texts)
    if new_ready.get("reason") in reasons.POD_PROBLEMS and old_ready.get("reason") != new_ready["reason"]:
        actions.events.append(EventSpec("Warning", new_ready["reason"], problem.message if problem else ""))
    old_degraded = condition(previous, reasons.DEGRADED) or {}
    new_degraded = condition(actions.status, reasons.DEGRADED) or {}
    if (
        new_degraded.get("reason") == DEGRADED_UNVERIFIED
        and old_degraded.get("reason") != DEGRADED_UNVERIFIED
    ):
        actions.events.append(EventSpec("Warning", DEGRADED_UNVERIFIED, new_degraded.get("message", "")))
    if same_status(previous, actions.status):
        actions.status = None
    return actions


def _endpoint(
    deployment: LLMDeployment | None,
    plan: Plan | None,
    config: RenderConfig,
    routers: Sequence[dict[str, Any]],
    engines: EngineRegistry,
) -> Endpoint | None:
    """The router of a placed deployment that has one, and its Deployment as last seen."""
    if deployment is None or plan is None or not plan.placed or not routed(config, plan.engine):
        return None
    name = router_name(deployment.metadata.name)
    workload = next(
        (o for o in routers if o.get("kind") == "Deployment" and o["metadata"]["name"] == name), None
    )
    return Endpoint(endpoint_address(deployment, engines.get(plan.engine).port), name, workload)


def _estimates(deployment: LLMDeployment | None, engines: EngineRegistry) -> dict[str, int]:
    """gpupin's estimate per model (bytes on one GPU), to show beside the engine's own figure."""
    if deployment is None:
        return {}
    result = {}
    for model in deployment.spec.models:
        try:
            result[model.name] = engines.estimate(model, deployment.spec).need_on(1)
        except (SizingError, UnknownEngine):
            continue
    return result


def _worst_problem(
    deployment: LLMDeployment | None,
    pods: list[dict[str, Any]],
    probe_output: Mapping[str, str],
    engines: EngineRegistry,
) -> PodProblem | None:
    """The most severe problem among the pods that are not Ready (ties: the first pod by name)."""
    worst: PodProblem | None = None
    estimates: dict[str, int] | None = None
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        if is_ready(pod):
            continue
        output = probe_output.get(pod["metadata"]["name"])
        if output and estimates is None:
            estimates = _estimates(deployment, engines)
        found = diagnose(pod, output, estimates)
        if found and (worst is None or found.severity > worst.severity):
            worst = found
    return worst


_PROBE_REASONS = frozenset({reasons.MODEL_ON_CPU, reasons.MODEL_NOT_LOADED})


def _last_probe_problem(
    previous: dict[str, Any], pods: list[dict[str, Any]], probe_output: Mapping[str, str]
) -> PodProblem | None:
    """The previous probe-based Ready reason, kept while a running, not-Ready pod's probe has not
    been read yet (after an operator restart): unknown is not news, and flipping to PodsNotReady
    and back would write status twice and post the Warning again."""
    old = condition(previous, reasons.READY) or {}
    if old.get("status") != "False" or old.get("reason") not in _PROBE_REASONS:
        return None
    unread = [p for p in pods if needs_probe_output(p) and p["metadata"]["name"] not in probe_output]
    if not unread:
        return None
    detail = str(old.get("message") or "").partition("; ")[2]
    return PodProblem(str(old["reason"]), detail, 0) if detail else None


def _child_events(actions: Actions, plan: Plan, step: Step) -> None:
    planned = {p.pod: p for p in plan.placements}
    for obj, _ in step.delete:
        if obj["kind"] != "Pod":
            continue
        name = obj["metadata"]["name"]
        if plan.reason == reasons.PAUSED:
            why = "the deployment is paused (replicas: 0)"
        elif name in planned:
            why = "its spec changed; its replacement takes its GPUs"
        else:
            why = "no longer in the plan (scaled down, or replaced on other GPUs)"
        actions.events.append(EventSpec("Normal", "DeletingPod", f"Deleting pod {name}: {why}"))
    for obj in actions.create:
        if obj["kind"] == "Pod":
            placement = planned[obj["metadata"]["name"]]
            actions.events.append(
                EventSpec(
                    "Normal",
                    "CreatedPod",
                    f"Created pod {placement.pod} on {placement.node} "
                    f"({_gpu_text(placement)}) for {', '.join(placement.models)}",
                )
            )
