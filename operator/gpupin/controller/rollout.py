"""Pure: how a deployment gets from the pods it has to the pods its plan wants without taking down
more than its rollout allows.

The rules, for pods (Services, claim templates and NetworkPolicies follow the plan at once):

- a pod of the plan that exists with the plan's spec hash is *up to date*; every other live pod of
  the deployment is *outdated* (its spec, image or placement is an earlier one);
- finished pods and outdated pods that are not Ready are deleted at once: no one is served by them;
- a planned pod is created when no pod of the deployment holds its GPUs any more (no outdated or
  terminating one on them, a GPU known under another name — GFD's stand-in — included) and the
  surge allows: live pods + new ones ≤ planned + ``maxSurge``;
- on a node or GPU whose inventory cannot be trusted now (``frozen``) nothing is replaced and
  nothing new is created;
- an outdated Ready pod that stands where a planned pod must go (same GPUs) is deleted only while
  the Ready pods left stay ≥ planned − ``maxUnavailable`` (replacement in place);
- an outdated Ready pod that nothing needs to go (the plan put its replacement on free GPUs — a
  surge —, or the deployment was scaled down) is deleted only while the Ready pods left stay ≥
  planned: the new pod is Ready before the old one goes;
- the operator may hold back the replacement of Ready pods (``replace_ready=False``: an
  operator-wide change rolled across deployments at a bounded rate, see :class:`RolloutGate`).

One replica with no free GPU and the default ``maxUnavailable: 1`` is replaced in place: the
rollout waits for nothing it cannot have.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gpupin.api.v1alpha1 import LLMDeployment
from gpupin.controller.podstate import is_finished, is_ready, is_terminating, placement_of, spec_hash_of
from gpupin.placement import CurrentPod, Hold, Plan
from gpupin.planner import Planner

Obj = dict[str, Any]


@dataclass(frozen=True)
class RolloutPolicy:
    max_unavailable: int = 1
    max_surge: int = 1
    replace_ready: bool = True
    """False while the operator holds this deployment's rollout back (its turn has not come)."""


DEFAULT_POLICY = RolloutPolicy()


@dataclass
class Step:
    """One reconcile's writes for the deployment's children, and where its rollout stands."""

    create: list[Obj] = field(default_factory=list)
    delete: list[tuple[Obj, int | None]] = field(default_factory=list)
    replace: list[Obj] = field(default_factory=list)
    """Objects written over their namesakes in place (:data:`IN_PLACE`), each with the
    resourceVersion of the one it replaces."""
    waiting: bool = False
    """A planned object waits for an old one to go: reconcile again when it is gone."""
    target: int = 0
    """Pods the plan wants."""
    up_to_date: list[Obj] = field(default_factory=list)
    """Live pods of the plan with its spec (after this step)."""
    outdated: list[Obj] = field(default_factory=list)
    """Live pods of an earlier spec or placement that are left after this step (they still serve)."""
    held_back: str = ""
    """Why an outdated Ready pod was not replaced in this step, in words ("" when none was)."""
    in_place: int = 0
    """Outdated Ready pods that stand where a planned pod must go (a surge plan would spare them)."""
    replacing: int = 0
    """Live pods of an earlier spec or placement before this step (0: nothing to roll out)."""
    done: bool = False
    """Every planned pod exists with the current spec and is Ready, and nothing of the deployment
    is on its way out: the rollout is over."""
    trial: list[Obj] = field(default_factory=list)
    """Planned pods that Ready pods deleted in this step make room for: the runtime has the API
    server check them (a dry run) before it deletes anything, so a spec it would refuse never
    takes down a serving pod."""


def hints(pods: Iterable[Obj]) -> list[CurrentPod]:
    """The deployment's live pods as the planner's stability hints, newest first: when there are
    more pods than the plan needs (a surge in progress), the plan keeps the ones just made."""
    live = []
    for pod in pods:
        if is_terminating(pod) or is_finished(pod):
            continue
        placement = placement_of(pod)
        if placement is None:
            continue
        created = str(pod["metadata"].get("creationTimestamp") or "~")  # not created yet: newest
        live.append((created, placement.gpu_uuids, placement.models))
    live.sort(key=lambda item: item[0], reverse=True)
    return [
        CurrentPod(gpu_uuids=uuids, models=models, rank=rank) for rank, (_, uuids, models) in enumerate(live)
    ]


def _name(obj: Obj) -> str:
    return str(obj["metadata"]["name"])


def converge(
    desired: list[Obj],
    live_pods: list[Obj],
    all_pods: list[Obj],
    services: list[Obj],
    claim_templates: list[Obj],
    policy: RolloutPolicy,
    frozen: Collection[str] = (),
    aliases: Mapping[str, str] | None = None,
    network_policies: Sequence[Obj] = (),
    routers: Sequence[Obj] = (),
) -> Step:
    """The creates and deletes that move the children towards ``desired`` (one step).

    ``frozen``: node names and GPU UUIDs whose inventory cannot be trusted now; a pod there is
    neither replaced nor joined (finished pods excepted). ``aliases``: a UUID pods were placed with
    → the UUID the node reports for that GPU now (GPUs first known from GFD labels). ``routers``:
    the router's ConfigMap and Deployment (:mod:`gpupin.routerobjects`)."""
    step = Step()
    _converge_others(step, desired, [*services, *claim_templates, *network_policies, *routers])
    renamed = aliases or {}

    def gpus(obj: Obj) -> set[str]:
        placement = placement_of(obj)
        return {renamed.get(u, u) for u in placement.gpu_uuids} if placement is not None else set()

    def on_frozen(obj: Obj) -> str:
        placement = placement_of(obj)
        if placement is None:
            return ""
        if placement.node in frozen:
            return f"node {placement.node}'s GPU inventory cannot be trusted now"
        lost = sorted(gpus(obj) & set(frozen))
        return f"GPU {', '.join(lost)} may be gone from node {placement.node}" if lost else ""

    planned = {_name(o): o for o in desired if o["kind"] == "Pod"}
    step.target = len(planned)
    live = {_name(p): p for p in live_pods}
    current = {n for n, p in live.items() if n in planned and spec_hash_of(p) == spec_hash_of(planned[n])}
    current -= {n for n in current if is_finished(live[n])}
    outdated = [p for n, p in sorted(live.items()) if n not in current]
    reasons: list[str] = []
    going: list[Obj] = []
    for pod in outdated:  # serving no one: go now (where its node can be trusted)
        if is_finished(pod) or (not is_ready(pod) and not on_frozen(pod)):
            going.append(pod)
    staying = [p for p in outdated if p not in going]
    terminating = [p for p in all_pods if is_terminating(p)]
    available = sum(1 for n in current if is_ready(live[n])) + sum(1 for p in staying if is_ready(p))
    missing = [n for n in sorted(planned) if n not in current]

    def blockers(name: str) -> list[Obj]:
        wanted = gpus(planned[name])
        return [p for p in [*staying, *terminating] if _name(p) == name or wanted & gpus(p)]

    in_place = {_name(p) for n in missing for p in blockers(n) if p in staying}
    step.in_place = len(in_place)
    for pod in [p for p in staying if _name(p) in in_place] + [
        p for p in staying if _name(p) not in in_place
    ]:
        floor = step.target - policy.max_unavailable if _name(pod) in in_place else step.target
        frozen_why = on_frozen(pod)
        if frozen_why:
            reasons.append(f"{frozen_why}: its pods are kept as they are")
            continue
        if not policy.replace_ready:
            reasons.append("its turn in the operator's rollout has not come")
            break
        if is_ready(pod) and available - 1 < floor:
            if _name(pod) in in_place:
                reasons.append(
                    f"maxUnavailable {policy.max_unavailable}: {available} of {step.target} pods are Ready"
                )
            else:
                reasons.append("its replacement is not Ready yet")
            continue
        going.append(pod)
        available -= 1 if is_ready(pod) else 0
    step.delete.extend((pod, None) for pod in going)
    step.replacing = len(outdated)
    ready_going = [p for p in going if is_ready(p) and not is_finished(p)]
    step.trial = [planned[n] for n in missing if any(p in ready_going for p in blockers(n))]
    remaining = [p for p in staying if p not in going]
    alive = len(current) + len(remaining)
    room = step.target + (policy.max_surge if policy.replace_ready else 0)
    for name in missing:
        if any(_name(p) == name or gpus(planned[name]) & gpus(p) for p in [*remaining, *terminating, *going]):
            step.waiting = True  # its GPUs are still held by a pod of this deployment on its way out
            continue
        frozen_why = on_frozen(planned[name])
        if frozen_why:
            reasons.append(f"{frozen_why}: no new pod goes there")
            continue
        if alive >= room:
            reasons.append(f"maxSurge {policy.max_surge}: {alive} pods exist for {step.target} planned")
            break
        step.create.append(planned[name])
        alive += 1
    step.up_to_date = [live[n] for n in sorted(current)]
    step.outdated = remaining
    step.held_back = reasons[0] if reasons and (remaining or missing) else ""
    step.done = not outdated and not missing and not terminating and all(is_ready(live[n]) for n in current)
    step.create.sort(key=lambda o: CREATE_ORDER.get(o["kind"], 3))
    return step


CREATE_ORDER = {
    "ResourceClaimTemplate": 0,
    "NetworkPolicy": 0,
    "Pod": 1,
    "ConfigMap": 1,
    "Service": 2,
    "Deployment": 2,
    "HTTPRoute": 2,
}
"""Claim templates before their pods, and the NetworkPolicy (a new pod never starts unguarded);
Services last (they route to pods, and a pod and its status are what a user waits for); the
router's routes before its Deployment (its pods mount them)."""


def create_stages(objects: list[Obj]) -> list[list[Obj]]:
    """``objects`` grouped by :data:`CREATE_ORDER`, in that order: the objects of one group are
    created at once, each group once the one before it exists."""
    stages: dict[int, list[Obj]] = {}
    for obj in objects:
        stages.setdefault(CREATE_ORDER.get(obj["kind"], 3), []).append(obj)
    return [stages[rank] for rank in sorted(stages)]


IN_PLACE = frozenset({"Deployment", "ConfigMap", "HTTPRoute"})
"""Kinds whose changed objects are written over in place, not deleted and made again: the router's
Deployment rolls its pod (``maxUnavailable: 0``), its routes and an HTTPRoute change
under the clients that use them."""


def _converge_others(step: Step, desired: list[Obj], children: list[Obj]) -> None:
    """Services, claim templates and NetworkPolicies (``children``: the deployment's): replaced when
    their hash changed (recreated once the old one is gone), deleted when the plan has no place for
    them — but a NetworkPolicy only once every NetworkPolicy the plan wants exists (their names
    carry their rules' hash): the pods are never without one."""
    wanted = {(o["kind"], _name(o)): o for o in desired if o["kind"] != "Pod"}
    existing = {(o["kind"], _name(o)): o for o in children}
    successor_missing = any(k[0] == "NetworkPolicy" and k not in existing for k in wanted)
    for key, obj in existing.items():
        target = wanted.get(key)
        if target is not None and key[0] in IN_PLACE and spec_hash_of(target) != spec_hash_of(obj):
            resource_version = obj["metadata"].get("resourceVersion")
            if resource_version and resource_version != "0":  # not one whose create is in flight
                step.replace.append(
                    {**target, "metadata": {**target["metadata"], "resourceVersion": resource_version}}
                )
            continue
        if target is None or spec_hash_of(target) != spec_hash_of(obj):
            if key[0] == "NetworkPolicy" and successor_missing:
                step.waiting = True  # deleted once its successor exists
                continue
            step.delete.append((obj, None))
    for key, obj in wanted.items():
        if key in existing:
            if key[0] not in IN_PLACE and spec_hash_of(existing[key]) != spec_hash_of(obj):
                step.waiting = True  # recreated once the old one is gone
            continue
        step.create.append(obj)


def surge_plan(
    planner: Planner, deployment: LLMDeployment, pods: list[Obj], up_to_date: list[Obj]
) -> Plan | None:
    """The deployment planned beside its outgoing pods (their GPUs held, as another owner's), keeping
    the pods already up to date: a plan only where free GPUs take every new pod, else None. The
    planner is left as it was."""
    outgoing = f"{deployment.key} (outgoing pods)"
    keep = {_name(p) for p in up_to_date}
    held = []
    for pod in pods:
        placement = placement_of(pod)
        if _name(pod) in keep or is_finished(pod) or placement is None:
            continue
        held += [Hold(g.uuid, g.vram_bytes, placement.exclusive, outgoing) for g in placement.gpus]
    planner.hold(held)
    try:
        surge = planner.plan(deployment, hints(up_to_date), commit=False)
    finally:
        planner.release(outgoing)
    return surge if surge.placed else None


class RolloutGate:
    """Rolls an operator-wide change (a new image, gpupin upgraded, a changed flag) across
    deployments a few at a time, so that not every model reloads at once.

    A deployment whose spec changed (a new generation since its pods were last all up to date)
    rolls at once: someone asked for it. One that needs new pods although its spec did not change
    waits for one of ``limit`` slots. Deployments seen for the first time since the operator
    started count as unchanged: after an upgrade every deployment takes its turn. A slot held for
    ``stall_seconds`` (a rollout whose new pods never become Ready) no longer blocks the others.
    Times are the caller's monotonic seconds.
    """

    def __init__(self, limit: int, stall_seconds: float = 600.0) -> None:
        self.limit = limit
        self.stall_seconds = stall_seconds
        self.settled: dict[tuple[str, str], int | None] = {}
        """Deployment → the generation its pods were last all up to date with."""
        self.rolling: dict[tuple[str, str], float] = {}
        """Deployments holding a slot → when they took it."""
        self.waiting: set[tuple[str, str]] = set()

    def allows(self, key: tuple[str, str], generation: int | None, now: float) -> bool:
        """May ``key`` replace its Ready pods now? Asked when it has pods of an earlier spec; a
        True answer takes a slot, a False one puts it in :attr:`waiting`."""
        if key in self.rolling or (key in self.settled and self.settled[key] != generation):
            self.waiting.discard(key)
            return True
        busy = sum(1 for since in self.rolling.values() if now - since < self.stall_seconds)
        if busy < self.limit:
            self.rolling[key] = now
            self.waiting.discard(key)
            return True
        self.waiting.add(key)
        return False

    def settle(self, key: tuple[str, str], generation: int | None) -> set[tuple[str, str]]:
        """``key`` has no pods of an earlier spec left; returns the deployments to wake (a slot freed)."""
        self.settled[key] = generation
        return self.forget(key, keep_settled=True)

    def forget(self, key: tuple[str, str], keep_settled: bool = False) -> set[tuple[str, str]]:
        """``key`` is gone (or settled); returns the deployments to wake."""
        if not keep_settled:
            self.settled.pop(key, None)
        self.waiting.discard(key)
        if self.rolling.pop(key, None) is None:
            return set()
        woken, self.waiting = self.waiting, set()
        return woken
