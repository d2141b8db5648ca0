"""The reconcile loop: a work queue, one allocation step at a time, writes in parallel.

Why no two deployments ever take the same GPU: planning is a *single-writer* step. One
worker takes keys off the queue and, for each, plans against the cache and records the
pods it is about to create in that cache *before* any API call. The next deployment is
planned only after that, so it sees those GPUs as held even though the watch has not
echoed the new pods yet. The API writes then run concurrently (``--concurrency``),
at most one batch per deployment at a time (in its order: :meth:`ApiWrites.apply`). If a write fails, the recorded pods are
dropped from the cache and the deployment is reconciled again with backoff — unless the API
server refused the object for good (422, 400, 403): then status and an Event say so, and nothing
is retried until the spec changes (or a resync period passes). After a
restart nothing is lost: pods carry their placement as an annotation and are listed by
the watches before the first reconcile, and pod names are derived from the GPUs they
hold, so a pod that exists is found, never made twice.

Several operator processes would each be a single writer and could give one GPU twice:
run exactly one (the chart refuses more; `gpupin operator` runs kopf standalone).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from datetime import UTC, datetime
from typing import Any

import structlog
from pydantic import ValidationError

from gpupin import reasons
from gpupin.api.v1alpha1 import LLMDeployment, Rollout
from gpupin.controller import metrics
from gpupin.controller.cache import ClusterCache
from gpupin.controller.config import OperatorConfig
from gpupin.controller.decide import Actions, decide
from gpupin.controller.metadata import ModelMetadata, cluster_catalog
from gpupin.controller.nodewatch import NodeWatch
from gpupin.controller.probes import ProbeFollower
from gpupin.controller.rollout import RolloutGate, RolloutPolicy, hints, surge_plan
from gpupin.controller.store import Key
from gpupin.controller.workqueue import WorkQueue
from gpupin.controller.writes import ApiWrites, Rejected, Setbacks, namesakes
from gpupin.inventory import Inventory
from gpupin.kube import ApiError, Kube
from gpupin.loading import describe_errors
from gpupin.modelsource import ModelSource
from gpupin.placement import Plan
from gpupin.planner import Planner

log = structlog.get_logger("gpupin.operator")


class Reconciler:
    def __init__(self, cache: ClusterCache, kube: Kube, config: OperatorConfig) -> None:
        self.cache = cache
        self.kube = kube
        self.config = config
        self.queue = WorkQueue()
        self.busy: set[Key] = set()
        self.dirty: set[Key] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.semaphore = asyncio.Semaphore(config.concurrency)
        self.generation_seen: dict[Key, tuple[int, float]] = {}
        self._planner_state: Planner | None = None
        self._planner_inventory: Inventory | None = None
        self.ready = asyncio.Event()
        self.probes = ProbeFollower(kube, self.queue, self._spawn)
        self.writes = ApiWrites(kube, cache, config.concurrency)
        self.gate = RolloutGate(config.max_concurrent_rollouts)
        self._held_back: set[Key] = set()
        self._gate_timers: set[Key] = set()
        """Deployments whose rollout waits for a GPU or a Ready pod: woken when any pod goes."""
        self.setbacks = Setbacks(config.resync_seconds)
        source = None
        if config.model_metadata == "online":
            source = ModelSource(hf_endpoint=config.hf_endpoint, ollama_registry=config.ollama_registry)
        self.metadata = ModelMetadata(cluster_catalog(config.model_data), source, on_read=self.enqueue_all)
        self.nodes = NodeWatch(cache, kube, self.enqueue_all, self._spawn)

    # -- triggers ----------------------------------------------------------------------

    def enqueue(self, key: Key) -> None:
        self.queue.add(key)

    def enqueue_all(self, only_unplaced: bool = False) -> None:
        """Queue every deployment; ``only_unplaced``: those a freed GPU may help (refused, or a
        rollout held back)."""
        for key in list(self._held_back) if only_unplaced else ():
            self.queue.add(key)
        for obj in list(self.cache.deployments.values()):
            if only_unplaced and _placed(obj):
                continue
            self.queue.add((obj["metadata"]["namespace"], obj["metadata"]["name"]))

    def saw_generation(self, key: Key, generation: int | None) -> None:
        if generation is not None and self.generation_seen.get(key, (None, 0.0))[0] != generation:
            self.generation_seen[key] = (generation, time.monotonic())

    # -- the loop ----------------------------------------------------------------------

    async def run(self) -> None:
        """Consume the queue forever; waits until the watches have listed everything once."""
        await self.ready.wait()
        log.info("Reconciler started", pinning=self.config.pinning, concurrency=self.config.concurrency)
        while True:
            key = await self.queue.get()
            if key in self.busy:
                self.dirty.add(key)  # reconciled again once its writes finish
                continue
            try:
                actions = self.allocate(key)
            except Exception as exc:  # a bug must not stop the loop for every other deployment
                log.exception("Reconcile failed", namespace=key[0], name=key[1])
                metrics.RECONCILES.labels(result="error").inc()
                self._report_failure(key, exc)
                self.queue.add_after(key, self.queue.backoff(key))
                continue
            if actions is None:
                continue
            self.busy.add(key)
            task = asyncio.create_task(self._write(key, actions))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def resync(self) -> None:
        while True:
            await asyncio.sleep(self.config.resync_seconds)
            self.enqueue_all()

    def allocate(self, key: Key) -> Actions | None:
        """The single-writer step: plan against the cache and record the new pods in it."""
        started = time.perf_counter()
        body = self.cache.deployments.get(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            self.probes.forget(key)
            self.setbacks.forget(key)
            self._wake(self.gate.forget(key))
            self._held_back.discard(key)
            return None  # the garbage collector removes its children through ownerReferences
        deployment: LLMDeployment | None = None
        invalid = None
        plan: Plan | None = None
        try:
            deployment = LLMDeployment.model_validate(
                {k: v for k, v in body.items() if k in ("apiVersion", "kind", "metadata", "spec")}
            )
        except ValidationError as exc:
            invalid = describe_errors(exc, LLMDeployment)
        pods = self.cache.pods_of(key)
        inventory = self.cache.inventory()
        unknown = self.cache.unknown_gpus(pods)
        if unknown is not None:  # re-planning would move a pod for want of facts: wait for them
            log.info(
                "Not reconciled until the node's GPUs are known", namespace=key[0], name=key[1], why=unknown
            )
            return None  # a Node event re-queues every deployment
        frozen = self.cache.frozen()
        planner = self._planner()
        engines = self.metadata.registry
        if deployment is not None:
            waited = self.metadata.registry_for(deployment)
            if waited is None:
                return None  # a model's metadata is being read; on_read re-queues this deployment
            engines = waited
            planner.use_engines(engines)
            planner.release(f"{key[0]}/{key[1]}")  # its own pods are hints for the plan, not holds against it
            plan = planner.plan(deployment, hints(pods), commit=False)
            if not plan.placed:
                metrics.REFUSALS.labels(reason=plan.reason).inc()
        namespace, name = key
        self.probes.follow(key, pods)
        generation = body["metadata"].get("generation")
        settings = (deployment.spec.rollout if deployment else None) or Rollout()
        policy = RolloutPolicy(settings.max_unavailable, settings.max_surge)
        decide_for = functools.partial(
            decide,
            body,
            deployment,
            invalid,
            pods=pods,
            services=self.cache.services.owned_by(body),
            claim_templates=self.cache.claim_templates.owned_by(body),
            network_policies=self.cache.network_policies.owned_by(body),
            routers=[
                *self.cache.config_maps.owned_by(body),
                *self.cache.workloads.owned_by(body),
                *self.cache.http_routes.owned_by(body),
            ],
            inventory=inventory,
            render_config=self.config.render,
            now=datetime.now(UTC),
            engines=engines,
            probe_output=self.probes.messages(key, pods),
            rejected=self.setbacks.rejection(key, generation),
            node_notes=frozen.nodes,
            gpu_aliases={uuid: alias.uuid for uuid, alias in frozen.aliases.items()},
            frozen_gpus=tuple(frozen.gpus),
        )
        actions = decide_for(plan=plan, policy=policy)
        step = actions.step
        if step is not None and step.replacing and not decide_for.keywords["rejected"]:
            if not self.gate.allows(key, generation, time.monotonic()):
                policy = RolloutPolicy(policy.max_unavailable, policy.max_surge, replace_ready=False)
                actions = decide_for(plan=plan, policy=policy)
                if key not in self._gate_timers:  # a stalled turn frees a slot without an event
                    self._gate_timers.add(key)
                    asyncio.get_running_loop().call_later(self.gate.stall_seconds, self._gate_timer, key)
            elif (
                step.in_place
                and policy.max_surge
                and deployment is not None
                and self.setbacks.may_surge(key, generation)
            ):
                surge = surge_plan(planner, deployment, pods, step.up_to_date)
                if surge is not None:  # new pods on free GPUs; the old ones serve until they are Ready
                    actions = decide_for(plan=surge, policy=policy)
                    actions.surge = True
        elif step is not None and step.done:
            self._wake(self.gate.settle(key, generation))
        self._held_back.discard(key)
        if actions.step is not None and actions.step.held_back and policy.replace_ready:
            self._held_back.add(key)  # woken when any pod goes (a GPU may be free for it)
        namesake = namesakes(body, actions, self.writes.store)
        if namesake:  # another owner's object has a planned name: creating it would fail for ever
            actions = decide_for(plan=plan, policy=policy, rejected=namesake)
            self.queue.add_after(key, 30.0)  # its deletion sends no event this deployment hears
        for obj in actions.create:  # the reservation: visible to the next plan at once
            store = self.writes.store(obj)
            store.upsert({**obj, "metadata": {**obj["metadata"], "resourceVersion": "0"}})
        for obj, _ in actions.delete:
            self.writes.store(obj).mark_deleting(obj)
        self._resync_holds(key)  # what it holds now: its pods, the ones about to be created included
        metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)
        if not (actions.create or actions.delete or actions.replace or actions.status or actions.events):
            self._done(key, actions)
            metrics.RECONCILES.labels(result="unchanged").inc()
            return None
        outcome, reason = (plan.outcome, plan.reason) if plan else ("Invalid", reasons.INVALID_SPEC)
        log.debug("Planned", namespace=namespace, name=name, outcome=outcome, reason=reason,
                  creates=len(actions.create), deletes=len(actions.delete))  # fmt: skip
        return actions

    def _gate_timer(self, key: Key) -> None:
        self._gate_timers.discard(key)
        self.queue.add(key)

    def _wake(self, keys: set[Key]) -> None:
        for key in keys:
            self.queue.add(key)

    def _report_failure(self, key: Key, exc: Exception) -> None:
        """An unexpected error on one deployment: say so on it (status and one Event per distinct
        error), instead of a retry loop only the log knows about."""
        body = self.cache.deployments.get(key)
        message = (
            f"the operator failed on this deployment and retries with backoff: {type(exc).__name__}: {exc}"
        )
        if body is not None and self.setbacks.new_failure(key, message):
            self._spawn(self.writes.report(key, body, reasons.INTERNAL_ERROR, message))

    def _planner(self) -> Planner:
        """One Planner that follows the cluster: rebuilt only when the GPU inventory changes, and
        otherwise told whose pods changed — no scan of every GPU for every reconcile."""
        inventory = self.cache.inventory()
        if self._planner_state is None or self._planner_inventory is not inventory:
            self._planner_state = Planner(
                inventory,
                self.cache.holds(),
                self.config.pinning,
                frozen=self.cache.frozen(),
                policy=self.config.policy,
            )
            self._planner_inventory = inventory
            self.cache.dirty_owners.clear()
        for key in list(self.cache.dirty_owners):
            self._resync_holds(key)
        return self._planner_state

    def _resync_holds(self, key: Key) -> None:
        """Make the planner's view of what ``key``'s pods hold match the cache."""
        if self._planner_state is not None:
            for owner in self.cache.hold_owners(key):  # the live deployment's, and a deleted one's
                self._planner_state.release(owner)
            self._planner_state.hold(self.cache.holds(only=key))
        self.cache.dirty_owners.discard(key)

    async def _write(self, key: Key, actions: Actions) -> None:
        namespace, name = key
        logger = log.bind(namespace=namespace, name=name)
        body = self.cache.deployments.get(key) or {}
        try:
            async with self.semaphore:
                await self.writes.apply(key, body, actions, logger)
            for event in actions.events:  # news for people: off the critical path
                self._spawn(self.writes.post_event(body, event))
        except Rejected as exc:  # permanent: say so, and do not try again until the spec changes
            self._forget(actions)
            generation = body.get("metadata", {}).get("generation")
            if actions.surge:  # a surge the cluster refuses (a quota): replace in place instead
                self.setbacks.surge_refused(key, generation)
            else:
                self.setbacks.reject(key, generation, exc.message)
            logger.warning(
                "The API server refused an object", object=exc.name, status=exc.status, reason=exc.message
            )
            metrics.RECONCILES.labels(result="rejected").inc()
            self.busy.discard(key)
            self.dirty.discard(key)
            # the next reconcile writes the status (and its Event), nothing else
            self.queue.add_after(key, 1.0)
            return
        except Exception as exc:  # whatever failed, drop the reservations and try again later
            self._forget(actions)
            delay = self.queue.backoff(key)
            if isinstance(exc, ApiError):
                level = logger.info if exc.status in (404, 409) else logger.warning
                level(
                    "Write failed, will retry", status=exc.status, reason=exc.reason, retry_in=round(delay, 2)
                )
            else:
                logger.exception("Write failed unexpectedly, will retry", retry_in=round(delay, 2))
            metrics.RECONCILES.labels(result="retry" if isinstance(exc, ApiError) else "error").inc()
            self.busy.discard(key)
            self.queue.add_after(key, delay)
            return
        metrics.RECONCILES.labels(result="applied").inc()
        self._done(key, actions)
        self.busy.discard(key)
        if key in self.dirty:
            self.dirty.discard(key)
            self.queue.add(key)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _done(self, key: Key, actions: Actions) -> None:
        self.queue.failures.pop(key, None)
        if actions.pods_complete:
            seen = self.generation_seen.pop(key, None)
            if seen is not None:
                metrics.SPEC_TO_PODS_SECONDS.observe(time.monotonic() - seen[1])
        if actions.waiting:
            # the pod DELETED event re-queues it; this is the fallback if that event is missed
            self.queue.add_after(key, 5.0)

    def _forget(self, actions: Actions) -> None:
        """Drop reservations whose create did not happen (the watch re-adds anything that exists),
        take back the marks of deletes that may not have happened (a newer watch event or the
        DELETED one wins over the copy put back), and let the deployments that were refused for
        those GPUs try again."""
        for obj, _ in actions.delete:
            self.writes.store(obj).upsert(obj)
        released = False
        for obj in actions.create:
            store = self.writes.store(obj)
            cached = store.get((obj["metadata"].get("namespace") or "", obj["metadata"]["name"]))
            if cached is not None and cached["metadata"].get("resourceVersion") == "0":
                store.remove({"metadata": {**obj["metadata"], "uid": None}})
                released = released or obj["kind"] == "Pod"
        if released:
            self.enqueue_all(only_unplaced=True)

    async def stop(self) -> None:
        self.nodes.stop()
        for task in list(self.tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.writes.close()


def _placed(body: dict[str, Any]) -> bool:
    for condition in (body.get("status") or {}).get("conditions") or []:
        if condition.get("type") == reasons.PLACED:
            return bool(condition.get("status") == "True")
    return False
