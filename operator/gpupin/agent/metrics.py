"""The agent's Prometheus metrics (``gpupin agent --metrics-port``, default 9402; 0: none).

- ``gpupin_agent_reads_total{result}``: GPU reads, ``ok`` or ``error`` (NVML or the fake file);
- ``gpupin_agent_publishes_total{result}``: steps that ``updated`` the Node, found it
  ``unchanged``, or ended in an API ``error``;
- ``gpupin_agent_last_publish_timestamp_seconds{node}``: Unix seconds of the last step whose
  Node update succeeded (or was not needed), the agent's start until one has — alert when it
  falls behind (the chart's rules do);
- ``gpupin_agent_gpus{node}``: GPUs in the inventory the agent last read (the last good one
  while reads fail);
- ``gpupin_build_info{version}``.

Its own registry, so the agent exports only what describes the agent.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Info, start_http_server

from gpupin import __version__


class AgentMetrics:
    """The agent's series for one node."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.registry = CollectorRegistry()
        self.reads = Counter(
            "gpupin_agent_reads", "GPU reads, by result (ok, error)", ["result"], registry=self.registry
        )
        self.publishes = Counter(
            "gpupin_agent_publishes", "Node updates, by result (updated, unchanged, error)", ["result"],
            registry=self.registry,
        )  # fmt: skip
        self.last_publish = Gauge(
            "gpupin_agent_last_publish_timestamp_seconds",
            "Unix time of the last step whose Node update succeeded or was not needed",
            ["node"], registry=self.registry,
        )  # fmt: skip
        # from the start, so an agent that never manages a publish falls behind too (and alerts)
        self.last_publish.labels(node=node).set(time.time())
        self.gpus = Gauge(
            "gpupin_agent_gpus", "GPUs in the inventory last read", ["node"], registry=self.registry
        )
        Info("gpupin_build", "The gpupin version serving these metrics", registry=self.registry).info(
            {"version": __version__}
        )

    def read(self, ok: bool, gpus: int | None) -> None:
        self.reads.labels(result="ok" if ok else "error").inc()
        if gpus is not None:
            self.gpus.labels(node=self.node).set(gpus)

    def published(self, result: str) -> None:
        self.publishes.labels(result=result).inc()
        if result != "error":
            self.last_publish.labels(node=self.node).set(time.time())

    def serve(self, port: int) -> None:
        """/metrics on ``port`` in a thread of its own (0: not served)."""
        if port:
            start_http_server(port, registry=self.registry)
