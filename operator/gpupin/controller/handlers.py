"""kopf wiring: watches feed the cache and the work queue; the reconciler does the rest.

Run it with ``gpupin operator`` (flags), or as a plain kopf operator configured by
environment variables (see :mod:`gpupin.controller.config`)::

    kopf run --standalone --all-namespaces -m gpupin.controller.handlers

Only ``on.event`` handlers are used, all ``async`` so that they run on the event loop
the work queue lives on (kopf runs sync handlers in threads, and an asyncio queue fed
from another thread would not wake its consumer). kopf watches and calls back, and never writes to
the watched objects (no finalizers, no progress annotations). Every trigger — a new
spec, a pod that became ready or vanished, a node whose GPUs changed, the resync timer —
only queues a key; the reconcile reads the cache, so triggers can be many and cheap.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from functools import partial
from typing import Any

import kopf
import structlog

from gpupin import constants
from gpupin.controller import kopftuning, liveness, metrics, netpolicies, routerwatch, series
from gpupin.controller.cache import ClusterCache
from gpupin.controller.config import OperatorConfig, from_environment
from gpupin.controller.diagnose import diagnose
from gpupin.controller.listing import Lister, list_nodes, list_objects, unlisted
from gpupin.controller.podstate import is_ready, is_terminating
from gpupin.controller.runtime import Reconciler
from gpupin.controller.store import key_of
from gpupin.kube import ApiError, Kube

log = structlog.get_logger("gpupin.operator")

MANAGED = constants.MANAGED_SELECTOR


class _State:
    def __init__(self) -> None:
        self.config: OperatorConfig | None = None
        self.cache = ClusterCache()
        self.reconciler: Reconciler | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.write_budget: Callable[[], float] | None = None
        self.foreign_logged: set[str] = set()
        """uids of pods already logged as not gpupin's (bounded)."""


STATE = _State()


def configure(config: OperatorConfig, write_budget: Callable[[], float] | None = None) -> None:
    """Before kopf starts: the configuration and the Lease's gate on every write (``kopf run``: env)."""
    STATE.config = config
    STATE.write_budget = write_budget


def _owner_key(obj: dict[str, Any]) -> tuple[str, str] | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("kind") == constants.KIND and ref.get("controller"):
            return obj["metadata"].get("namespace", ""), ref["name"]
    return None


def _served(namespace: str | None) -> bool:
    config = STATE.config
    return not config or not config.namespaces or namespace in config.namespaces


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    config = STATE.config = await routerwatch.usable(STATE.config or from_environment())
    settings.posting.enabled = False  # gpupin posts its own Events (kopf's would pass the Lease's gate)
    kopftuning.listen_only(settings)
    settings.watching.label_selectors["v1", "pods"] = MANAGED
    settings.watching.label_selectors["v1", "services"] = MANAGED
    settings.watching.label_selectors["resource.k8s.io", "resourceclaimtemplates"] = MANAGED
    netpolicies.watch(config, settings, _child_event("network_policies", "NetworkPolicy"))
    routerwatch.watch(config, settings, _child_event)
    settings.watching.server_timeout = 300
    # Serving named namespaces: watch exactly those, without listing Namespaces (kopf's namespace
    # scanning needs cluster-wide rights the chart does not grant, and only matters for globs).
    settings.scanning.disabled = bool(config.namespaces)
    settings.networking.request_timeout = 60
    STATE.cache.book.grace_seconds = config.gpu_loss_grace_seconds
    series.watch(STATE.cache, asyncio.get_running_loop())
    metrics.watch_node_problems(
        lambda: {n: p.kind for n, p in STATE.cache.book.problems().items()}, asyncio.get_running_loop()
    )
    metrics.serve(config.metrics_port)  # here, so that `kopf run -m` serves /metrics too
    kube = Kube(on_request=metrics.count_request, write_budget=STATE.write_budget)
    reconciler = STATE.reconciler = Reconciler(STATE.cache, kube, config)
    await _initial_lists(kube, STATE.cache)
    reconciler.nodes.changed(False)  # problems found at start are news to this process
    reconciler.enqueue_all()
    # What the imports and the first lists made lives as long as the process: out of the
    # collector's sight, a full collection scans only what came since. Measured in a paced run
    # of 200 CRs (`make bench-operator`): six full collections of 50–130 ms each before, every
    # reconcile in flight stalled behind them; 16–55 ms after.
    gc.collect()
    gc.freeze()
    reconciler.ready.set()
    STATE.tasks = [asyncio.create_task(reconciler.run()), asyncio.create_task(reconciler.resync())]
    STATE.tasks.append(liveness.LIVENESS.run_on(asyncio.get_running_loop()))
    if config.relist_seconds > 0:
        STATE.tasks.append(asyncio.create_task(_relist_forever(kube, config.relist_seconds)))
    log.info(
        "gpupin operator started",
        pinning=config.pinning,
        namespaces=list(config.namespaces) or "all",
        nodes=len(STATE.cache.inventory().nodes),
        deployments=len(list(STATE.cache.deployments.values())),
    )


def _scopes() -> list[str | None]:
    """Where gpupin's namespaced objects are listed: each served namespace, or everywhere (None)."""
    config = STATE.config
    return list(config.namespaces) if config and config.namespaces else [None]


def _listers() -> list[Lister]:
    """gpupin's namespaced objects, listed at start-up and by every relist."""
    listers: list[Lister] = [
        ("pods", "Pod", "v1", "pods", True, _pod_seen),
        ("services", "Service", "v1", "services", True, partial(_child_seen, "services", "Service")),
        ("deployments", constants.KIND, constants.API_VERSION, constants.PLURAL, False, _deployment_seen),
    ]
    if netpolicies.enabled(STATE.config):
        listers.append(
            (
                "network_policies",
                "NetworkPolicy",
                "networking.k8s.io/v1",
                "networkpolicies",
                True,
                partial(_child_seen, "network_policies", "NetworkPolicy"),
            )
        )
    for store, kind, group, version, plural in routerwatch.kinds(STATE.config):
        api = f"{group}/{version}" if group else version
        listers.append((store, kind, api, plural, True, partial(_child_seen, store, kind)))
    if STATE.config is not None and STATE.config.pinning == "dra":
        listers.append(
            (
                "claim_templates",
                "ResourceClaimTemplate",
                "resource.k8s.io/v1",
                "resourceclaimtemplates",
                True,
                partial(_child_seen, "claim_templates", "ResourceClaimTemplate"),
            )
        )
    return listers


async def _initial_lists(kube: Kube, cache: ClusterCache) -> None:
    """List once before the first reconcile, so the first plans see every GPU already held
    (the watches then keep the cache current). In namespaced mode only the served namespaces are
    listed: the operator's RBAC grants nothing else, and what it cannot watch it must not keep."""
    for namespace in _scopes():
        for lister in _listers():
            try:
                items, _ = await list_objects(kube, lister, namespace, MANAGED)
            except ApiError as exc:
                if namespace is None or exc.status not in (403, 404):
                    raise
                unlisted(namespace, lister, exc)  # a served namespace not there (yet): the others go on
                continue
            for item in items:
                getattr(cache, lister[0]).upsert(item)
    nodes, slices = await asyncio.to_thread(list_nodes, kube)
    cache.load_nodes(nodes, slices)


async def _relist_forever(kube: Kube, seconds: float) -> None:
    """Every ``seconds``, :func:`relist`; a failed pass is logged and tried again next time."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await relist(kube)
        except ApiError as exc:
            log.warning(
                "Relist failed, will try again", status=exc.status, reason=exc.reason, retry_in=seconds
            )
        except Exception as exc:  # the network: never the end of the operator
            log.warning(
                "Relist failed, will try again", error=str(exc) or type(exc).__name__, retry_in=seconds
            )


async def relist(kube: Kube) -> None:
    """Mark and sweep: LIST gpupin's pods, Services, claim templates (dra pinning) and the
    LLMDeployments where they are served (as at start-up), and make each store match its list.
    What is listed goes the watch's way (the newest resourceVersion wins); what is stored, not
    listed, not ours in flight and not newer than the list goes the way of a DELETED event — a
    watch cut past the resourceVersion window is re-listed by kopf without DELETED events, and a
    pod left in the cache would hold its GPUs and never be made again."""
    for namespace in _scopes():
        for lister in _listers():
            store_name, kind_name, _, _, _, seen = lister
            try:
                items, resource_version = await list_objects(kube, lister, namespace, MANAGED)
            except ApiError as exc:  # this namespace unread (deleted, its RoleBinding gone): sweep the rest
                if namespace is None or exc.status not in (403, 404):
                    raise
                unlisted(namespace, lister, exc)
                continue
            for item in items:  # no await from here to the sweep: the store is not changed meanwhile
                seen(None, item)
            store = getattr(STATE.cache, store_name)
            swept = store.sweep(items, resource_version, partial(seen, "DELETED"), namespace)
            if swept:
                log.info(
                    "Relist found objects gone whose DELETED event was missed",
                    kind=kind_name,
                    count=len(swept),
                    names=[f"{k[0]}/{k[1]}" if k[0] else k[1] for k in map(key_of, swept)][:20],
                )


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    for task in STATE.tasks:
        task.cancel()
    if STATE.reconciler is not None:
        await STATE.reconciler.stop()


@kopf.on.event(constants.GROUP, constants.VERSION, constants.PLURAL)
async def deployment_event(event: kopf.RawEvent, **_: Any) -> None:
    _deployment_seen(event.get("type"), dict(event.get("object") or {}))


def _deployment_seen(kind: str | None, obj: dict[str, Any]) -> None:
    """An LLMDeployment event, from the watch or a relist (``kind`` None: listed)."""
    reconciler = STATE.reconciler
    if not obj or reconciler is None or not _served(obj["metadata"].get("namespace")):
        return
    key = key_of(obj)
    log.debug("Saw LLMDeployment", namespace=key[0], name=key[1], type=kind)
    if kind == "DELETED":
        STATE.cache.deployments.remove(obj)
        return  # its pods go with it (ownerReferences); their DELETED events wake the waiting ones
    old = STATE.cache.deployments.get(key)
    if not STATE.cache.deployments.upsert(obj):
        return
    generation = obj["metadata"].get("generation")
    reconciler.saw_generation(key, generation)
    status_generation = (obj.get("status") or {}).get("observedGeneration")
    if (
        old is None
        or old["metadata"].get("generation") != generation
        or status_generation != generation
        or obj["metadata"].get("deletionTimestamp")
    ):
        reconciler.enqueue(key)


def _pod_view(pod: dict[str, Any]) -> tuple[Any, ...]:
    """What of a pod the decision reads: ready, terminating, phase, and the problem the pod's
    status shows. A failing init container or image pull leaves the pod Pending and unready
    through every kubelet update, so the problem itself must count as a change."""
    problem = diagnose(pod, None)
    return (
        is_ready(pod),
        is_terminating(pod),
        (pod.get("status") or {}).get("phase"),
        problem and (problem.reason, problem.message),
    )


@kopf.on.event("v1", "pods", labels={constants.MANAGED_BY_LABEL: constants.MANAGED_BY})
async def pod_event(event: kopf.RawEvent, **_: Any) -> None:
    _pod_seen(event.get("type"), dict(event.get("object") or {}))


def _pod_seen(kind: str | None, obj: dict[str, Any]) -> None:
    """A pod event, from the watch or a relist (``kind`` None: listed). Only a pod a live (or just
    deleted) LLMDeployment controls wakes a deployment; the others are stored and ignored."""
    reconciler = STATE.reconciler
    if not obj or reconciler is None:
        return
    obj = {**obj, "kind": "Pod"}
    cache = STATE.cache
    if kind == "DELETED":
        owner = cache.owner_of(obj)
        cache.pods.remove(obj)
        if owner:
            reconciler.enqueue(owner)
            reconciler.enqueue_all(only_unplaced=True)  # its GPUs are free now
        return
    old = cache.pods.get(key_of(obj))
    if not cache.pods.upsert(obj):
        return
    owner = cache.owner_of(obj)
    if owner is None:
        _ignore_foreign(obj)
    elif old is None or _pod_view(old) != _pod_view(obj):
        reconciler.enqueue(owner)


def _ignore_foreign(pod: dict[str, Any]) -> None:
    """Say once per pod that a pod with gpupin's label is not gpupin's (it holds no GPU)."""
    uid = str(pod["metadata"].get("uid") or "")
    why = STATE.cache.foreign(pod)
    if why is None or uid in STATE.foreign_logged:
        return
    if len(STATE.foreign_logged) >= 10_000:
        STATE.foreign_logged.clear()
    STATE.foreign_logged.add(uid)
    log.info(
        "Ignoring a pod with gpupin's label that no LLMDeployment controls: it holds no GPU",
        namespace=pod["metadata"].get("namespace"),
        pod=pod["metadata"].get("name"),
        why=why,
    )


def _child_seen(store_name: str, kind_name: str, kind: str | None, obj: dict[str, Any]) -> None:
    """A Service, ResourceClaimTemplate or NetworkPolicy event, from the watch or a relist (``kind``
    None: listed)."""
    if not obj or STATE.reconciler is None:
        return
    obj = {**obj, "kind": kind_name}
    store = getattr(STATE.cache, store_name)
    if kind == "DELETED":
        store.remove(obj)
    elif not store.upsert(obj):
        return
    meta = obj["metadata"]
    log.debug(f"Saw {kind_name}", namespace=meta.get("namespace"), name=meta["name"], type=kind)
    owner = _owner_key(obj)
    if owner and kind in ("DELETED", "MODIFIED"):
        STATE.reconciler.enqueue(owner)


def _child_event(store_name: str, kind_name: str) -> Any:
    async def handler(event: kopf.RawEvent, **_: Any) -> None:
        _child_seen(store_name, kind_name, event.get("type"), dict(event.get("object") or {}))

    return handler


service_event = kopf.on.event("v1", "services", labels={constants.MANAGED_BY_LABEL: constants.MANAGED_BY})(
    _child_event("services", "Service")
)
claim_template_event = kopf.on.event(
    "resource.k8s.io",
    "v1",
    "resourceclaimtemplates",
    labels={constants.MANAGED_BY_LABEL: constants.MANAGED_BY},
)(_child_event("claim_templates", "ResourceClaimTemplate"))


@kopf.on.event("v1", "nodes")
async def node_event(event: kopf.RawEvent, **_: Any) -> None:
    obj: dict[str, Any] = dict(event.get("object") or {})
    kind = event.get("type")
    reconciler = STATE.reconciler
    if not obj or reconciler is None:
        return
    if kind == "DELETED":
        changed = STATE.cache.remove_node(obj["metadata"]["name"])
    else:
        changed = STATE.cache.set_node(obj)
    if not changed:  # a heartbeat: a problem that came or went, a grace period begun, would be a change
        return
    log.info(
        "Node GPU inventory changed",
        node=obj["metadata"]["name"],
        problem=STATE.cache.node_problems.get(obj["metadata"]["name"]),
    )
    reconciler.nodes.changed(changed)


@kopf.on.event("resource.k8s.io", "v1", "resourceslices")
async def slice_event(event: kopf.RawEvent, **_: Any) -> None:
    """The NVIDIA DRA driver's devices: a node's GPUs where no agent annotation is."""
    obj: dict[str, Any] = dict(event.get("object") or {})
    if not obj or STATE.reconciler is None or (obj.get("spec") or {}).get("driver") != constants.DRA_DRIVER:
        return
    STATE.reconciler.nodes.changed(STATE.cache.set_slice(obj, deleted=event.get("type") == "DELETED"))
