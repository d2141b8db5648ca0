"""The reconcile loop: a work queue, one allocation step at a time, writes in parallel.

Why no two deployments ever take the same GPU: planning is a *single-writer* step. One
worker takes keys off the queue and, for each, plans against the cache and records the
pods it is about to create in that cache *before* any API call. The next deployment is
planned only after that, so it sees those GPUs as held even though the watch has not
echoed the new pods yet. The API writes then run concurrently (``--concurrency``),
at most one batch per deployment at a time. If a write fails, the recorded pods are
dropped from the cache and the deployment is reconciled again with backoff. After a
restart nothing is lost: pods carry their placement as an annotation and are listed by
the watches before the first reconcile, and pod names are derived from the GPUs they
hold, so a pod that exists is found, never made twice.

Several operator processes would each be a single writer and could give one GPU twice:
run exactly one (the chart refuses more; `gpupin operator` runs kopf standalone).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime
from typing import Any

import structlog
from pydantic import ValidationError

from gpupin import constants, reasons
from gpupin.api.v1alpha1 import LLMDeployment
from gpupin.controller import metrics
from gpupin.controller.cache import ClusterCache, Key, current_pods
from gpupin.controller.config import OperatorConfig
from gpupin.controller.decide import Actions, EventSpec, decide
from gpupin.controller.diagnose import needs_probe_output
from gpupin.controller.metadata import ModelMetadata, cluster_catalog
from gpupin.controller.nodewatch import NodeWatch
from gpupin.controller.workqueue import ProbeReading, WorkQueue, running_since
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
        self.probes: dict[Key, dict[str, ProbeReading]] = {}
        """Deployment → pod uid → the latest failed readiness probe of a running, not-Ready pod."""
        self._probe_rechecks: set[Key] = set()
        source = None
        if config.model_metadata == "online":
            source = ModelSource(hf_endpoint=config.hf_endpoint, ollama_registry=config.ollama_registry)
        self.metadata = ModelMetadata(cluster_catalog(config.model_data), source, on_read=self.enqueue_all)
        self.nodes = NodeWatch(cache, kube, self.enqueue_all, self._spawn)

    # -- triggers ----------------------------------------------------------------------

    def enqueue(self, key: Key) -> None:
        self.queue.add(key)

    def enqueue_all(self, only_unplaced: bool = False) -> None:
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
            except Exception:  # a bug must not stop the loop for every other deployment
                log.exception("Reconcile failed", namespace=key[0], name=key[1])
                metrics.RECONCILES.labels(result="error").inc()
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
            self.probes.pop(key, None)
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
            plan = planner.plan(deployment, current_pods(pods), commit=False)
            if not plan.placed:
                metrics.REFUSALS.labels(reason=plan.reason).inc()
        namespace, name = key
        self._follow_probes(key, pods)
        actions = decide(
            body,
            deployment,
            invalid,
            plan,
            pods,
            [s for s in self.cache.services.values() if _owned_by(s, body)],
            [c for c in self.cache.claim_templates.values() if _owned_by(c, body)],
            inventory,
            self.config.render,
            now=datetime.now(UTC),
            engines=engines,
            node_notes=frozen.nodes,
            gpu_aliases={uuid: alias.uuid for uuid, alias in frozen.aliases.items()},
            probe_output={
                p["metadata"]["name"]: reading.message
                for p in pods
                if (reading := self.probes.get(key, {}).get(str(p["metadata"].get("uid"))))
                and reading.message
            },
        )
        for obj in actions.create:  # the reservation: visible to the next plan at once
            store = self._store(obj)
            store.upsert({**obj, "metadata": {**obj["metadata"], "resourceVersion": "0"}})
        for obj, _ in actions.delete:
            self._store(obj).mark_deleting(obj)
        self._resync_holds(key)  # what it holds now: its pods, the ones about to be created included
        metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)
        if not (actions.create or actions.delete or actions.status or actions.events):
            self._done(key, actions)
            metrics.RECONCILES.labels(result="unchanged").inc()
            return None
        log.debug(
            "Planned",
            namespace=namespace,
            name=name,
            creates=len(actions.create),
            deletes=len(actions.delete),
            outcome=plan.outcome if plan else "Invalid",
            reason=plan.reason if plan else reasons.INVALID_SPEC,
            message=plan.message if plan else invalid,
        )
        return actions

    PROBE_READ_SECONDS = 20.0
    """How often the readiness-probe Events of a running, not-Ready pod are read (one GET each)."""

    def _follow_probes(self, key: Key, pods: list[dict[str, Any]]) -> None:
        """Read why running pods are not Ready, off the allocation path: the kubelet reports a
        failing readiness probe only as an Event, and the pod itself does not change while it
        keeps failing, so the deployment is looked at again until its pods are Ready."""
        waiting = {str(p["metadata"].get("uid")): p for p in pods if needs_probe_output(p)}
        known = self.probes.setdefault(key, {})
        for uid in set(known) - set(waiting):  # Ready again, not running or gone: old news
            del known[uid]
        if not known and not waiting:
            self.probes.pop(key, None)
            return
        now = time.monotonic()
        for uid, pod in waiting.items():
            reading = known.setdefault(uid, ProbeReading())
            if now - reading.read_at >= self.PROBE_READ_SECONDS:
                reading.read_at = now
                self._spawn(self._read_probe(key, pod))
        if key not in self._probe_rechecks:
            self._probe_rechecks.add(key)

            def recheck() -> None:
                self._probe_rechecks.discard(key)
                self.queue.add(key)

            asyncio.get_running_loop().call_later(self.PROBE_READ_SECONDS, recheck)

    async def _read_probe(self, key: Key, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        uid = str(meta.get("uid") or "")
        if not uid:
            return
        try:
            message = await asyncio.to_thread(
                self.kube.last_probe_failure, meta["namespace"], uid, running_since(pod)
            )
        except ApiError as exc:  # status then says less; not worth a retry loop
            log.info("Could not read probe Events", pod=meta["name"], status=exc.status)
            return
        reading = self.probes.get(key, {}).get(uid)
        if reading is not None and message and reading.message != message:
            reading.message = message
            self.queue.add(key)

    def _planner(self) -> Planner:
        """One Planner that follows the cluster: rebuilt only when the GPU inventory changes, and
        otherwise told whose pods changed — no scan of every GPU for every reconcile."""
        inventory = self.cache.inventory()
        if self._planner_state is None or self._planner_inventory is not inventory:
            self._planner_state = Planner(
                inventory, self.cache.holds(), self.config.pinning, frozen=self.cache.frozen()
            )
            self._planner_inventory = inventory
            self.cache.dirty_owners.clear()
        for key in list(self.cache.dirty_owners):
            self._resync_holds(key)
        return self._planner_state

    def _resync_holds(self, key: Key) -> None:
        """Make the planner's view of what ``key``'s pods hold match the cache."""
        if self._planner_state is not None:
            self._planner_state.release(f"{key[0]}/{key[1]}")
            self._planner_state.hold(self.cache.holds(only=key))
        self.cache.dirty_owners.discard(key)

    async def _write(self, key: Key, actions: Actions) -> None:
        namespace, name = key
        logger = log.bind(namespace=namespace, name=name)
        body = self.cache.deployments.get(key) or {}
        try:
            async with self.semaphore:
                # deletes first (a replaced pod must be gone before its successor exists), then
                # every create and the status patch at once: they do not depend on each other
                await asyncio.gather(*(self._delete(obj, grace, logger) for obj, grace in actions.delete))
                writes = [self._create(obj, logger) for obj in actions.create]
                if actions.status is not None:
                    writes.append(self._patch_status(key, body, actions.status))
                await asyncio.gather(*writes)
            for event in actions.events:  # news for people: off the critical path
                self._spawn(asyncio.to_thread(self._post_event, body, event))
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

    async def _delete(self, obj: dict[str, Any], grace: int | None, logger: Any) -> None:
        await asyncio.to_thread(self.kube.delete, obj, grace)
        logger.info(f"Deleted {obj['kind']}", object=obj["metadata"]["name"])

    async def _create(self, obj: dict[str, Any], logger: Any) -> None:
        created = await asyncio.to_thread(self.kube.create, obj)
        self._store(obj).upsert(created)
        logger.info(f"Created {obj['kind']}", object=obj["metadata"]["name"])

    async def _patch_status(self, key: Key, body: dict[str, Any], status: dict[str, Any]) -> None:
        patch = dict(status)
        for stale in set(body.get("status") or {}) - set(patch) - {"kopf"}:
            patch[stale] = None  # a merge patch removes only what it names
        updated = await asyncio.to_thread(self.kube.patch_status, key[0], key[1], patch)
        self.cache.deployments.upsert(updated)

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
        and let the deployments that were refused for those GPUs try again."""
        released = False
        for obj in actions.create:
            store = self._store(obj)
            cached = store.get((obj["metadata"].get("namespace") or "", obj["metadata"]["name"]))
            if cached is not None and cached["metadata"].get("resourceVersion") == "0":
                store.remove({"metadata": {**obj["metadata"], "uid": None}})
                released = released or obj["kind"] == "Pod"
        if released:
            self.enqueue_all(only_unplaced=True)

    def _store(self, obj: dict[str, Any]) -> Any:
        return {
            "Pod": self.cache.pods,
            "Service": self.cache.services,
            "ResourceClaimTemplate": self.cache.claim_templates,
        }[obj["kind"]]

    def _post_event(self, body: dict[str, Any], event: EventSpec) -> None:
        meta = body.get("metadata") or {}
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        try:
            self.kube.create(
                {
                    "apiVersion": "v1",
                    "kind": "Event",
                    "metadata": {"generateName": f"{meta.get('name')}.", "namespace": meta.get("namespace")},
                    "involvedObject": {
                        "apiVersion": constants.API_VERSION,
                        "kind": constants.KIND,
                        "name": meta.get("name"),
                        "namespace": meta.get("namespace"),
                        "uid": meta.get("uid"),
                    },
                    "type": event.type,
                    "reason": event.reason,
                    "message": event.message[:1024],
                    "source": {"component": "gpupin-operator"},
                    "reportingComponent": "gpupin.dev/operator",
                    "firstTimestamp": now,
                    "lastTimestamp": now,
                    "count": 1,
                }
            )
        except ApiError as exc:  # an Event that cannot be posted is not worth a retry loop
            log.warning("Could not post Event", reason=event.reason, status=exc.status)

    async def stop(self) -> None:
        self.nodes.stop()
        for task in list(self.tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _owned_by(obj: dict[str, Any], owner: dict[str, Any]) -> bool:
    uid = owner["metadata"].get("uid")
    return any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])


def _placed(body: dict[str, Any]) -> bool:
    for condition in (body.get("status") or {}).get("conditions") or []:
        if condition.get("type") == reasons.PLACED:
            return bool(condition.get("status") == "True")
    return False
