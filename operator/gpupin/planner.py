"""The placement planner: which GPUs each LLMDeployment's pods get.

Pure: no kopf, no kubernetes, no I/O. Input: the deployment, the GPU inventory, the GPU memory
other deployments' pods already hold, and this deployment's existing pods (so a re-plan keeps
them where they are). Output: a :class:`~gpupin.placement.Plan` — placements, or a refusal with a
reason from :mod:`gpupin.reasons` and a message a person can act on.

This module is the facade: it sizes the models with the deployment's engine, asks the pinning
mode which nodes it can use, and hands the engine a :class:`~gpupin.kernel.context.PlanContext`
on the shared :class:`~gpupin.kernel.state.ClusterState`. The rules live where they vary:

- the engine places (:mod:`gpupin.engines`): vLLM as exclusive tensor-parallel groups of
  matching GPUs on one node, Ollama as shared per-GPU servers by memory budget;
- the pinning mode (:mod:`gpupin.pinning`) says whether a GPU can be shared at all and on which
  nodes it can pin; a pod owns its GPUs when its engine or the mode says so (:func:`exclusive`);
- a GPU is never oversubscribed; choices are best fit and deterministic: the same inputs give
  the same plan;
- frozen nodes and GPUs (:class:`~gpupin.kernel.state.Frozen`: the operator keeps a node's last
  good inventory while its GPU facts cannot be read) keep the pods already there and take no new
  ones; a refusal says which and why;
- the cluster admin's :class:`~gpupin.policy.Policy` comes first: a spec using what it does not
  allow is refused (``PolicyRefused``) before it is sized, and Ollama pods of different namespaces
  share no GPU unless the policy allows it.

:class:`Planner` plans deployments one after another against one cluster state, each seeing the
GPUs the earlier ones took; it keeps indexes so that planning one deployment does not scan every
GPU of a large cluster. :func:`plan` plans one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from gpupin import pinning as pinning_modes
from gpupin import reasons
from gpupin.api.v1alpha1 import LLMDeployment
from gpupin.engines import ENGINES, Engine, EngineRegistry, UnknownEngine
from gpupin.inventory import Inventory
from gpupin.kernel.context import PlanContext
from gpupin.kernel.eligibility import GPUFilter, Refusal
from gpupin.kernel.state import NOT_FROZEN, ClusterState, Frozen
from gpupin.pinning import PinningMode, PinningModeName
from gpupin.placement import CurrentPod, Hold, ModelSizing, Plan
from gpupin.policy import DEFAULT_POLICY, Policy, problems, refusal_message
from gpupin.quantity import format_gib
from gpupin.sizing import Estimate, SizingError


class Trial:
    """One :meth:`Planner.trial`: kept or undone when it ends."""

    def __init__(self, mark: int) -> None:
        self.mark = mark
        self.kept = False

    def keep(self) -> None:
        self.kept = True


def exclusive(engine: Engine, mode: PinningMode) -> bool:
    """Does a pod own its GPUs? The one place the rule is written (the renderer reads the placement)."""
    return engine.owns_gpus or not mode.shares_gpus


class Planner:
    """Plans deployments one after another against one cluster state.

    Each placed plan's GPUs are taken before the next deployment is planned, which is how
    the operator serializes allocations (first come, first served); ``gpupin plan`` places a
    file's set together with :func:`gpupin.packing.plan_all`, which searches with
    :meth:`trial` and ``plan(explain=False)``.
    """

    def __init__(
        self,
        inventory: Inventory,
        holds: Iterable[Hold] = (),
        pinning: PinningModeName = "visible-devices",
        engines: EngineRegistry = ENGINES,
        frozen: Frozen = NOT_FROZEN,
        policy: Policy = DEFAULT_POLICY,
    ) -> None:
        self.inventory = inventory
        self.policy = policy
        self.pinning = pinning
        self.mode = pinning_modes.get(pinning)
        self.engines = engines
        self.frozen = frozen
        self.state = ClusterState(
            inventory,
            exclusive_only=not self.mode.shares_gpus,
            frozen=frozen,
            shared_first_below=engines.owners_oldest_compute_capability(),
        )
        self._empty: Planner | None = None
        self._is_capacity_view = False
        self._trials = 0
        self._prepared: dict[int, tuple[Any, ...]] = {}
        """id(deployment) → (deployment, engines, estimates, sizing, compute requirement), kept for
        :meth:`plan` with ``explain`` False until :meth:`forget_prepared` (a search's working set)."""
        self.hold(holds)

    def hold(self, holds: Iterable[Hold]) -> None:
        """Record GPU memory that pods hold (holds on GPUs the inventory lacks are ignored; a hold
        under a GPU's alias counts against that GPU)."""
        for hold in holds:
            slot = self.state.slot_of(hold.uuid)
            if slot is None:
                continue
            if hold.vram_bytes is None:  # unknown: the whole GPU, never a free share of it
                self.state.reserve(slot, slot.gpu.memory, hold.owner, exclusive=True)
            else:
                self.state.reserve(slot, hold.vram_bytes, hold.owner, hold.exclusive)
        if not self._trials:
            self.state.undo.clear()

    @contextlib.contextmanager
    def trial(self) -> Iterator[Trial]:
        """Try a layout: plans and releases inside are undone on leaving unless :meth:`Trial.keep`
        was called. Trials nest; the undo log is cleared only when the outermost one keeps."""
        trial = Trial(self.state.mark())
        self._trials += 1
        try:
            yield trial
        finally:
            self._trials -= 1
            if not trial.kept:
                self.state.rollback(trial.mark)
            elif not self._trials:
                self.state.undo.clear()

    def forget_prepared(self) -> None:
        """Drop the sizing kept for a search's repeated tries (see :meth:`plan`)."""
        self._prepared.clear()

    def release(self, owner: str) -> None:
        """Forget everything ``owner`` ("namespace/name") holds, before re-planning it or once it is gone.

        With :meth:`hold`, this lets one Planner follow a changing cluster instead of being rebuilt
        from the whole inventory for every plan (what the operator does)."""
        self.state.release(owner, undoable=self._trials > 0)

    def _room_hint(self, engine: Engine, deployment: LLMDeployment) -> str:
        """How much a model of unknown size may need and still be placed here: the largest GPU less
        what the deployment's other models need (so an example figure never asks for a whole GPU)."""
        spec = deployment.spec
        others = 0
        for model in spec.models:
            try:
                others += engine.estimate(model, spec, self.engines.catalog).need_on(1)
            except SizingError:
                continue
        largest = max((int(g.memory) for n in self.inventory.nodes for g in n.gpus), default=0)
        if engine.owns_gpus:  # vLLM takes gpuMemoryUtilization of the GPU
            largest = int(largest * spec.vllm_options.gpu_memory_utilization)
        room = largest - others
        if room <= 0:
            return ""
        where = "beside the other models on the largest GPU here" if others else "on the largest GPU here"
        return f"; up to {format_gib(room)} fits {where}"

    def use_engines(self, engines: EngineRegistry) -> None:
        """Size with another registry from now on (the operator's, as model metadata is read)."""
        self.engines = engines
        if self._empty is not None:
            self._empty.engines = engines

    def _capacity_planner(self) -> Planner:
        """The same cluster with nothing held: tells 'too small' from 'taken'."""
        if self._empty is None:
            self._empty = Planner(self.inventory, (), self.pinning, self.engines, self.frozen, self.policy)
            self._empty._is_capacity_view = True
        return self._empty

    def plan(
        self,
        deployment: LLMDeployment,
        current: Sequence[CurrentPod] = (),
        commit: bool = True,
        explain: bool = True,
    ) -> Plan:
        """Plan one deployment; when placed (and ``commit``), its GPUs are taken for the ones planned
        after it. ``explain`` False: a refusal for want of free GPUs says only
        :data:`~gpupin.kernel.context.UNEXPLAINED` (a search's cheap try; see :mod:`gpupin.packing`)."""
        spec = deployment.spec
        name = spec.resolved_engine
        try:
            engine = self.engines.get(name)
        except UnknownEngine as exc:  # never planned as another engine
            return _refused(deployment, name, Refusal(reasons.INVALID_SPEC, str(exc)))
        refused = problems(spec, self.policy)
        if refused:  # the admin's rule, before anything is sized or read
            return _refused(deployment, name, Refusal(reasons.POLICY_REFUSED, refusal_message(refused)))
        mark = self.state.mark()
        sized: tuple[ModelSizing, ...] = ()
        gpu_filter: GPUFilter | None = None
        try:
            prepared = self._prepared.get(id(deployment)) if not explain else None
            if prepared is None or prepared[0] is not deployment or prepared[1] is not self.engines:
                try:
                    estimates = [engine.estimate(model, spec, self.engines.catalog) for model in spec.models]
                    sized = tuple(_sizing(e, self.engines.catalog.notes) for e in estimates)
                except SizingError as exc:
                    raise Refusal(exc.reason, str(exc) + self._room_hint(engine, deployment)) from exc
                requirement = engine.compute_requirement(spec, estimates) if spec.replicas else None
                prepared = (deployment, self.engines, estimates, sized, requirement)
                if not explain:  # a search tries the same deployment many times: size it once
                    self._prepared[id(deployment)] = prepared
            _, _, estimates, sized, requirement = prepared
            if spec.replicas == 0:
                return _paused(deployment, name, sized)
            gpu_filter = GPUFilter(spec.gpu_selector, requirement, self.mode, self.state)
            ctx = PlanContext(
                state=self.state,
                filter=gpu_filter,
                owner=deployment.key,
                name=deployment.metadata.name,
                current=current,
                exclusive=exclusive(engine, self.mode),
                capacity_exists=lambda: self.fits_when_empty(deployment),
                share_across_namespaces=self.policy.cross_namespace_sharing,
                explain=explain,
            )
            placements, reason, message = engine.place(ctx, spec, estimates)
        except Refusal as refusal:
            self.state.rollback(mark)
            if (
                explain
                and gpu_filter is not None
                and refusal.reason != reasons.NODE_INVENTORY_PROBLEM
                and (note := gpu_filter.frozen_note())
            ):
                refusal = Refusal(
                    refusal.reason, f"{refusal.message.rstrip('.')}. Not counted, taking no new pods: {note}"
                )
            return replace(_refused(deployment, name, refusal), models=sized)
        if commit:
            if not self._trials:
                self.state.undo.clear()
        else:
            self.state.rollback(mark)
        return Plan(
            namespace=deployment.metadata.namespace,
            name=deployment.metadata.name,
            engine=name,
            outcome="Placed",
            reason=reason,
            message=message,
            placements=tuple(sorted(placements, key=lambda p: p.pod)),
            models=sized,
        )

    def fits_when_empty(self, deployment: LLMDeployment) -> bool:
        """Would the deployment be placed if no other deployment held anything?"""
        if self._is_capacity_view:
            return False  # this planner already is the empty cluster, and the plan failed on it
        return self.plan_when_empty(deployment).placed

    def plan_when_empty(self, deployment: LLMDeployment) -> Plan:
        """The deployment's plan on this cluster with nothing held (nothing is taken)."""
        return self._capacity_planner().plan(deployment, commit=False)


def _sizing(estimate: Estimate, notes: Mapping[str, str]) -> ModelSizing:
    facts = estimate.facts
    if estimate.source == "spec":
        origin = "spec.models[].vram"
    elif estimate.source == "name":
        origin = "the parameter count in its name"
        note = notes.get(estimate.model.lower())
        if note:
            origin += f" (its metadata was not read: {note})"
    else:
        origin = facts.origin if facts else ""
    return ModelSizing(
        name=estimate.model,
        vram_bytes=estimate.need_on(1),
        source=estimate.source,
        origin=origin,
        read_at=facts.read_at if facts and estimate.source == "metadata" else None,
    )


def _paused(deployment: LLMDeployment, engine: str, sized: tuple[ModelSizing, ...]) -> Plan:
    """replicas: 0 — placed, with nothing to place (the models are still sized, so a spec that
    could never run is refused as before)."""
    return Plan(
        namespace=deployment.metadata.namespace,
        name=deployment.metadata.name,
        engine=engine,
        outcome="Placed",
        reason=reasons.PAUSED,
        message="paused (replicas: 0): no pods, no GPUs held; set replicas to serve again",
        models=sized,
    )


def _refused(deployment: LLMDeployment, engine: str, refusal: Refusal) -> Plan:
    return Plan(
        namespace=deployment.metadata.namespace,
        name=deployment.metadata.name,
        engine=engine,
        outcome="Refused",
        reason=refusal.reason,
        message=refusal.message,
    )


def plan(
    deployment: LLMDeployment,
    inventory: Inventory,
    holds: Iterable[Hold] = (),
    pinning: PinningModeName = "visible-devices",
    current: Sequence[CurrentPod] = (),
    engines: EngineRegistry = ENGINES,
    policy: Policy = DEFAULT_POLICY,
) -> Plan:
    """Plan one deployment: the pure function the operator's reconcile calls."""
    return Planner(inventory, holds, pinning, engines, policy=policy).plan(deployment, current)
