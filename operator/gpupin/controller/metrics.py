"""Prometheus metrics of the operator, served on /metrics (``--metrics-port``).

The endpoint runs in prometheus_client's own threads, while the operator's cache belongs to the
asyncio event loop, which changes its dicts at any moment: a scrape that iterated them would see
"dictionary changed size during iteration" or half an update. So the scrape-time gauges never read
the cache from the scrape thread: :class:`LoopSnapshot` asks the loop for a copy and waits
briefly, keeping the last copy for a loop that cannot answer in time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import platform
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, Info, start_http_server
from prometheus_client.core import GaugeMetricFamily

from gpupin import __version__

RECONCILES = Counter("gpupin_reconciles_total", "Reconciles of LLMDeployments, by result", ["result"])
REFUSALS = Counter(
    "gpupin_refusals_total",
    "Plans that came out refused, by reason: a deployment re-planned while refused counts each time "
    '(how many are refused now: gpupin_llmdeployment_condition{condition="Placed",status="False"})',
    ["reason"],
)
RECONCILE_SECONDS = Histogram(
    "gpupin_reconcile_duration_seconds",
    "Time to reconcile one LLMDeployment (plan and writes)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SPEC_TO_PODS_SECONDS = Histogram(
    "gpupin_spec_to_pods_seconds",
    "From the operator seeing a new spec generation to all its pods created",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
API_REQUESTS = Counter(
    "gpupin_api_requests_total",
    "Requests the operator sent to the API server (reads and writes; kopf's watches not included), "
    "by verb, resource and HTTP status code (0: no answer)",
    ["verb", "resource", "code"],
)
BUILD_INFO = Info("gpupin_build", "The gpupin version serving these metrics")
BUILD_INFO.info({"version": __version__, "python_version": platform.python_version()})
LEASE_HOLDER = Gauge(
    "gpupin_lease_holder", "1 in the operator process that holds the operator Lease (a standby exports nothing)",
    ["identity"],
)  # fmt: skip
QUEUE_DEPTH = Gauge("gpupin_queue_depth", "LLMDeployments waiting to be reconciled")

SNAPSHOT_SECONDS = 2.0
"""How long a scrape waits for the event loop's copy before it serves the last one (seconds)."""

V = TypeVar("V")


class LoopSnapshot(Generic[V]):
    """``read()`` as another thread may call it: ``read`` runs on ``loop`` (the thread that owns what
    it reads), and the caller gets a copy of its result.

    Waits at most ``timeout`` seconds for a loop busy with other work; then, or when the loop is
    closed, answers the last copy (empty before the first). Called on the loop itself, it reads
    directly. Errors of ``read`` reach the caller."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        read: Callable[[], Mapping[str, V]],
        timeout: float = SNAPSHOT_SECONDS,
    ) -> None:
        self.loop = loop
        self.read = read
        self.timeout = timeout
        self.last: dict[str, V] = {}

    async def _copy(self) -> dict[str, V]:
        return dict(self.read())

    def __call__(self) -> dict[str, V]:
        try:
            on_loop = asyncio.get_running_loop() is self.loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self.last = dict(self.read())
            return self.last
        copy = self._copy()
        try:
            future = asyncio.run_coroutine_threadsafe(copy, self.loop)
        except RuntimeError:  # the loop is closed: the operator is stopping
            copy.close()
            return self.last
        try:
            self.last = future.result(self.timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
        return self.last


class NodeInventoryProblems:
    """gpupin_node_inventory_problem{node,problem}: 1 while a node's GPU facts are not used as they
    are (problem: unreadable, missing, duplicate-uuid, mig, gfd-changed, gpu-gone); read from the
    operator's cache at scrape time, so a problem that ends disappears."""

    def __init__(self, problems: Callable[[], Mapping[str, str]]) -> None:
        self.problems = problems

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "gpupin_node_inventory_problem",
            "1 while a node's GPU inventory has a problem (its last good inventory serves its pods)",
            labels=["node", "problem"],
        )
        for node, problem in sorted(self.problems().items()):
            family.add_metric([node, problem], 1)
        yield family


def watch_node_problems(problems: Callable[[], Mapping[str, str]], loop: asyncio.AbstractEventLoop) -> None:
    """Register the scrape-time node inventory problem gauge (once per process); ``problems`` runs on
    ``loop`` (see :class:`LoopSnapshot`)."""
    if "node_problems" not in _registered:
        REGISTRY.register(NodeInventoryProblems(LoopSnapshot(loop, problems)))
        _registered.add("node_problems")


_registered: set[str] = set()
_serving: set[int] = set()


def serve(port: int) -> None:
    """Start the /metrics endpoint in a background thread (0: disabled). Idempotent: kopf retries
    a failed start-up, and the second start must not fail on a port already bound by the first."""
    if port and port not in _serving:
        start_http_server(port)
        _serving.add(port)


def count_request(verb: str, resource: str, code: int) -> None:
    """The REST client's ``on_request`` hook: one API request answered with ``code``."""
    API_REQUESTS.labels(verb=verb, resource=resource, code=str(code)).inc()
