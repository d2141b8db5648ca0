"""Prometheus metrics of the operator, served on /metrics (``--metrics-port``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily

RECONCILES = Counter("gpupin_reconciles_total", "Reconciles of LLMDeployments, by result", ["result"])
REFUSALS = Counter("gpupin_refusals_total", "Plans refused, by reason", ["reason"])
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
    "Requests the operator sent (writes), by verb and resource",
    ["verb", "resource"],
)
QUEUE_DEPTH = Gauge("gpupin_queue_depth", "LLMDeployments waiting to be reconciled")


class GPUsAllocated:
    """gpupin_gpus_allocated{node}, counted from the operator's cache when Prometheus scrapes — not
    recomputed after every write (and a node that loses its last pod drops to 0 rather than lingering)."""

    def __init__(self, count: Callable[[], dict[str, int]]) -> None:
        self.count = count

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "gpupin_gpus_allocated", "GPUs held by gpupin pods, by node", labels=["node"]
        )
        for node, gpus in sorted(self.count().items()):
            family.add_metric([node], gpus)
        yield family


def watch_allocations(count: Callable[[], dict[str, int]]) -> None:
    """Register the scrape-time GPU gauge (once per process)."""
    if "allocations" not in _registered:
        REGISTRY.register(GPUsAllocated(count))
        _registered.add("allocations")


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


def watch_node_problems(problems: Callable[[], Mapping[str, str]]) -> None:
    """Register the scrape-time node inventory problem gauge (once per process)."""
    if "node_problems" not in _registered:
        REGISTRY.register(NodeInventoryProblems(problems))
        _registered.add("node_problems")


_registered: set[str] = set()
_serving: set[int] = set()


def serve(port: int) -> None:
    """Start the /metrics endpoint in a background thread (0: disabled). Idempotent: kopf retries
    a failed start-up, and the second start must not fail on a port already bound by the first."""
    if port and port not in _serving:
        start_http_server(port)
        _serving.add(port)


def count_request(verb: str, resource: str) -> None:
    """The REST client's ``on_request`` hook: one API request sent."""
    API_REQUESTS.labels(verb=verb, resource=resource).inc()
