"""The operator's writes to the API server: children created (or first tried as a dry run) and
deleted, the status patched, Events posted. A thin edge: what to write is decided elsewhere
(:mod:`gpupin.controller.decide`); this module writes it and keeps the cache in step.

The client blocks, so calls run in threads of this module's own: one pool for the writes a
reconcile waits for (sized for ``--concurrency`` deployments with several objects each), and a
small one for Events. asyncio's default executor has cpu + 4 threads (6 on two cores) and is
shared; in a burst the writes of the deployments in flight queued there behind each other and
behind Events, which are news for people and must not hold up a pod.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import structlog

from gpupin import constants
from gpupin.controller.cache import ClusterCache
from gpupin.controller.decide import Actions, EventSpec
from gpupin.controller.events import post_event
from gpupin.controller.podstate import is_terminating
from gpupin.controller.rollout import create_stages
from gpupin.controller.status import failed_status
from gpupin.controller.store import Key, Store
from gpupin.kube import ApiError, Kube

log = structlog.get_logger("gpupin.operator")


class Rejected(Exception):
    """The API server refused an object gpupin made, for a reason retrying will not fix: invalid
    (422, 400) or forbidden (403: an admission policy, a quota, RBAC)."""

    PERMANENT = (400, 403, 422)

    def __init__(self, name: str, status: int, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.status = status
        self.message = message

    @classmethod
    def of(cls, obj: dict[str, Any], exc: ApiError) -> Rejected | None:
        if exc.status not in cls.PERMANENT:
            return None
        try:
            detail = str(json.loads(exc.body).get("message") or exc.body)
        except (ValueError, AttributeError):
            detail = exc.body
        kind, name = obj["kind"], obj["metadata"]["name"]
        return cls(
            name,
            exc.status,
            f"the API server refused {kind} {name} ({exc.status} {exc.reason}): {detail}"[:1000],
        )


class Setbacks:
    """What the operator remembers of writes that cannot succeed, per deployment: a refused object
    (not tried again until the spec changes, or ``max_age`` seconds pass: a quota or a webhook may
    change), a refused surge (that generation is replaced in place), the last unexpected error
    reported (one Event per distinct error)."""

    def __init__(self, max_age: float) -> None:
        self.max_age = max_age
        self.rejected: dict[Key, tuple[int | None, str, float]] = {}
        """Deployment → (generation, why, when): the API server refused an object of its plan."""
        self.no_surge: dict[Key, tuple[int | None, float]] = {}
        """Deployment → (generation, when): the API server refused its surge pods."""
        self.failures: dict[Key, str] = {}

    def surge_refused(self, key: Key, generation: int | None) -> None:
        self.no_surge[key] = (generation, time.monotonic())

    def may_surge(self, key: Key, generation: int | None) -> bool:
        """False while a surge of this generation was refused (for ``max_age`` seconds)."""
        found = self.no_surge.get(key)
        if found is None or found[0] != generation or time.monotonic() - found[1] > self.max_age:
            self.no_surge.pop(key, None)
            return True
        return False

    def reject(self, key: Key, generation: int | None, message: str) -> None:
        self.rejected[key] = (generation, message, time.monotonic())

    def rejection(self, key: Key, generation: int | None) -> str | None:
        """Why the API server refused an object of this deployment's plan, while that still holds."""
        found = self.rejected.get(key)
        if found is None:
            return None
        seen, message, since = found
        if seen != generation or time.monotonic() - since > self.max_age:
            del self.rejected[key]
            return None
        return message

    def new_failure(self, key: Key, message: str) -> bool:
        """Remember an unexpected error; False when it is the one last reported."""
        if self.failures.get(key) == message:
            return False
        self.failures[key] = message
        return True

    def forget(self, key: Key) -> None:
        for memory in (self.rejected, self.no_surge, self.failures):
            memory.pop(key, None)


def namesakes(
    body: dict[str, Any], actions: Actions, store_of: Callable[[dict[str, Any]], Store]
) -> str | None:
    """Objects to create whose name another owner's object has. One an earlier LLMDeployment of
    this name left (it is owned by a deployment of this name with another uid, or is terminating)
    is waited for: that create is dropped from ``actions`` for now (the garbage collector removes
    it). Any other (an orphaned pod, someone's Service) is returned as the reason the plan cannot
    be made, in words: creating it would fail with 409 for ever."""
    meta = body["metadata"]
    waiting = []
    skipped = []
    for obj in actions.create:
        if (obj["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "router":
            found = store_of(obj).get((obj["metadata"].get("namespace") or "", obj["metadata"]["name"]))
            if found is not None and not any(
                r.get("uid") == meta.get("uid") for r in found["metadata"].get("ownerReferences") or []
            ):  # the endpoint is an extra: its name taken (another deployment's Service) costs only it
                log.warning("The deployment's endpoint is not made: its name is taken",
                            kind=obj["kind"], object=obj["metadata"]["name"], deployment=meta.get("name"))  # fmt: skip
                skipped.append(obj)
            continue
        found = store_of(obj).get((obj["metadata"].get("namespace") or "", obj["metadata"]["name"]))
        if found is None or found["metadata"].get("resourceVersion") == "0":
            continue
        refs = [r for r in found["metadata"].get("ownerReferences") or [] if r.get("kind") == constants.KIND]
        if any(r.get("uid") == meta.get("uid") for r in refs):
            continue
        if is_terminating(found) or any(r.get("name") == meta.get("name") for r in refs):
            waiting.append(obj)
            continue
        return (
            f"{obj['kind']} {obj['metadata']['name']} exists and is not this deployment's: delete it, or "
            "rename the deployment"
        )
    if waiting or skipped:
        actions.create = [o for o in actions.create if o not in waiting and o not in skipped]
        actions.waiting = actions.waiting or bool(waiting)
    return None


class ApiWrites:
    WRITES_PER_DEPLOYMENT = 4
    """Threads per deployment in flight: its pods, Service, claim templates or NetworkPolicies and
    status at once (more wait their turn)."""
    EVENT_THREADS = 2

    def __init__(self, kube: Kube, cache: ClusterCache, concurrency: int = 8) -> None:
        self.kube = kube
        self.cache = cache
        self._writes = ThreadPoolExecutor(concurrency * self.WRITES_PER_DEPLOYMENT, "gpupin-write")
        self._events = ThreadPoolExecutor(self.EVENT_THREADS, "gpupin-event")

    async def _call(self, pool: ThreadPoolExecutor, call: Callable[..., Any], *args: Any) -> Any:
        """``call(*args)`` in a thread of ``pool`` (with this task's context, as asyncio.to_thread)."""
        context = contextvars.copy_context()
        run = functools.partial(context.run, call, *args)
        return await asyncio.get_running_loop().run_in_executor(pool, run)

    def close(self) -> None:
        """Let the threads go; calls not started yet are dropped."""
        for pool in (self._writes, self._events):
            pool.shutdown(wait=False, cancel_futures=True)

    async def apply(self, key: Key, body: dict[str, Any], actions: Actions, logger: Any) -> None:
        """One reconcile's writes, in their order. A spec the API server would refuse must not take
        down a serving pod: the replacements of the Ready pods about to be deleted are tried first
        (dry runs). Then the deletes (a replaced pod must be gone before its successor exists); then
        the creates, group after group (:func:`~gpupin.controller.rollout.create_stages`), with the
        status patch beside them. Raises :class:`Rejected` or :class:`ApiError` (the first failure;
        ``actions.delete`` is left with the deletes that failed, the done ones stay marked)."""
        if actions.step is not None and actions.step.trial:
            await asyncio.gather(*(self.trial(obj) for obj in actions.step.trial))
        results = await asyncio.gather(
            *(self.delete(obj, grace, logger) for obj, grace in actions.delete), return_exceptions=True
        )
        failed = [(obj, r) for (obj, _), r in zip(actions.delete, results, strict=True) if r is not None]
        if failed:
            actions.delete = [(obj, None) for obj, _ in failed]
            raise failed[0][1]
        status = actions.status
        patch = asyncio.ensure_future(self.patch_status(key, body, status)) if status is not None else None
        failure: Exception | None = None
        try:
            for stage in create_stages(actions.create):
                await asyncio.gather(*(self.create(obj, logger) for obj in stage))
            await asyncio.gather(*(self.replace(obj, logger) for obj in actions.replace))
        except Exception as exc:  # the status patch is awaited all the same (its outcome is news too)
            failure = exc
        if patch is not None:
            try:
                await patch
            except Exception as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    async def delete(self, obj: dict[str, Any], grace: int | None, logger: Any) -> None:
        await self._call(self._writes, self.kube.delete, obj, grace)
        logger.info(f"Deleted {obj['kind']}", object=obj["metadata"]["name"])

    async def create(self, obj: dict[str, Any], logger: Any) -> None:
        await self._store_write(self.kube.create, obj, logger, "Created {}")

    async def replace(self, obj: dict[str, Any], logger: Any) -> None:
        await self._store_write(self.kube.replace, obj, logger, "Replaced {} in place")

    async def _store_write(
        self, call: Callable[[dict[str, Any]], dict[str, Any]], obj: dict[str, Any], logger: Any, done: str
    ) -> None:
        """``call(obj)`` (a create or a replace); the cache takes the API server's answer. Raises
        :class:`Rejected` for a refusal retrying will not fix, else the :class:`ApiError`."""
        try:
            written = await self._call(self._writes, call, obj)
        except ApiError as exc:
            raise Rejected.of(obj, exc) or exc from exc
        self.store(obj).upsert(written)
        logger.info(done.format(obj["kind"]), object=obj["metadata"]["name"])

    async def trial(self, obj: dict[str, Any]) -> None:
        """Create ``obj`` as a server-side dry run (under a generated name: its namesake may still
        exist); raise :class:`Rejected` if the API server would refuse it."""
        meta = {k: v for k, v in obj["metadata"].items() if k != "name"}
        meta["generateName"] = obj["metadata"]["name"][:57] + "-"
        try:
            await self._call(self._writes, self.kube.create, {**obj, "metadata": meta}, True)
        except ApiError as exc:
            raise Rejected.of(obj, exc) or exc from exc

    async def patch_status(self, key: Key, body: dict[str, Any], status: dict[str, Any]) -> None:
        patch = dict(status)
        for stale in set(body.get("status") or {}) - set(patch) - {"kopf"}:
            patch[stale] = None  # a merge patch removes only what it names
        updated = await self._call(self._writes, self.kube.patch_status, key[0], key[1], patch)
        self.cache.deployments.upsert(updated)

    def store(self, obj: dict[str, Any]) -> Store:
        return {
            "Pod": self.cache.pods,
            "Service": self.cache.services,
            "ResourceClaimTemplate": self.cache.claim_templates,
            "NetworkPolicy": self.cache.network_policies,
            "ConfigMap": self.cache.config_maps,
            "Deployment": self.cache.workloads,
            "HTTPRoute": self.cache.http_routes,
        }[obj["kind"]]

    async def post_event(self, body: dict[str, Any], event: EventSpec) -> None:
        """An Event about an LLMDeployment (``body``), in its namespace (failures are only logged)."""
        meta = body.get("metadata") or {}
        involved = {
            "apiVersion": constants.API_VERSION,
            "kind": constants.KIND,
            "namespace": meta.get("namespace"),
            "name": meta.get("name"),
            "uid": meta.get("uid"),
        }
        await self._call(self._events, post_event, self.kube, involved, event)

    async def report(self, key: Key, body: dict[str, Any], reason: str, message: str) -> None:
        """Placed=False with ``reason`` in the status (the rest kept) and a Warning Event: for a
        deployment the operator cannot reconcile at all. Failures here are only logged."""
        await self.post_event(body, EventSpec("Warning", reason, message))
        try:
            await self.patch_status(key, body, failed_status(body, reason, message, datetime.now(UTC)))
        except ApiError as exc:
            log.info("Could not write status", namespace=key[0], name=key[1], status=exc.status)
