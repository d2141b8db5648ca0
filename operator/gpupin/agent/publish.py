"""Publish a node's GPUs on its Node object; run the agent loop; serve its health.

What is written, on the agent's own Node only (RBAC: get and patch nodes):

- annotation ``gpupin.dev/gpu-inventory``: the inventory as compact JSON (the format the
  planner reads);
- labels ``gpupin.dev/gpu-count`` and ``gpupin.dev/mixed`` (true when the GPUs differ);
- annotation ``gpupin.dev/gpu-inventory-error``: why the last read failed (removed once a
  read succeeds).

When NVML cannot be read: before any successful read nothing is published (the node stays
unknown to the operator, which never guesses); after one, the last good inventory stays —
a driver hiccup must not make the operator tear down the pods on the node — and the error
annotation says what is wrong. The agent retries with backoff and stays up. A patch is sent
only when what should be on the Node differs from what is there: no writes in steady state.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog

from gpupin import constants
from gpupin.agent.gpus import GPUReadError, GPUSource
from gpupin.agent.metrics import AgentMetrics
from gpupin.inventory import NodeInventory
from gpupin.kube import ApiError, Kube

ERROR_ANNOTATION = "gpupin.dev/gpu-inventory-error"

log = structlog.get_logger("gpupin.agent")


def desired_metadata(inventory: NodeInventory) -> tuple[dict[str, str], dict[str, str]]:
    """(annotations, labels) the Node should carry for this inventory."""
    annotations = {constants.INVENTORY_ANNOTATION: inventory.to_annotation()}
    labels = {
        constants.GPU_COUNT_LABEL: str(len(inventory.gpus)),
        constants.MIXED_LABEL: "true" if inventory.mixed else "false",
    }
    return annotations, labels


def metadata_patch(
    node: dict[str, Any], inventory: NodeInventory | None, error: str | None
) -> dict[str, Any] | None:
    """The merge patch that brings the Node to what it should carry, or None when it already does."""
    meta = node.get("metadata") or {}
    have_annotations = meta.get("annotations") or {}
    have_labels = meta.get("labels") or {}
    annotations: dict[str, str | None] = {}
    labels: dict[str, str | None] = {}
    if inventory is not None:
        want_annotations, want_labels = desired_metadata(inventory)
        annotations.update({k: v for k, v in want_annotations.items() if have_annotations.get(k) != v})
        labels.update({k: v for k, v in want_labels.items() if have_labels.get(k) != v})
    if error is not None:
        if have_annotations.get(ERROR_ANNOTATION) != error:
            annotations[ERROR_ANNOTATION] = error
    elif ERROR_ANNOTATION in have_annotations:
        annotations[ERROR_ANNOTATION] = None
    patch: dict[str, Any] = {}
    if annotations:
        patch.setdefault("metadata", {})["annotations"] = annotations
    if labels:
        patch.setdefault("metadata", {})["labels"] = labels
    return patch or None


class Agent:
    def __init__(
        self,
        kube: Kube,
        source: GPUSource,
        node_name: str,
        interval: float = 60.0,
        metrics: AgentMetrics | None = None,
    ) -> None:
        self.kube = kube
        self.metrics = metrics or AgentMetrics(node_name)
        self.source = source
        self.node_name = node_name
        self.interval = interval
        self.last_good: NodeInventory | None = None
        self.last_error: str | None = None
        self.failures = 0
        self.healthy_until = 0.0
        self.patches = 0

    def step(self) -> float:
        """Read, publish if needed; return the seconds to wait before the next step."""
        try:
            reading = self.source.read(self.node_name)
        except GPUReadError as exc:
            self.metrics.read(False, None)
            self.failures += 1
            self.last_error = str(exc)
            delay = float(min(self.interval, 2.0 * 2 ** min(self.failures, 6)))
            log.warning(
                "Could not read GPUs; keeping the last published inventory"
                if self.last_good
                else "Could not read GPUs; publishing nothing until a read succeeds",
                node=self.node_name,
                error=self.last_error,
                retry_in=delay,
            )
        else:
            if self.failures or self.last_good != reading.inventory:
                log.info(
                    "Read GPUs",
                    node=self.node_name,
                    gpus=len(reading.inventory.gpus),
                    products=sorted({g.name for g in reading.inventory.gpus}),
                    seconds=round(reading.seconds, 4),
                )
            self.metrics.read(True, len(reading.inventory.gpus))
            self.failures = 0
            self.last_error = None
            self.last_good = reading.inventory
            delay = self.interval
        try:
            self.metrics.published("updated" if self.publish() else "unchanged")
        except ApiError as exc:
            self.metrics.published("error")
            log.warning(
                "Could not update the Node", node=self.node_name, status=exc.status, reason=exc.reason
            )
            delay = min(delay, 5.0)
        self.healthy_until = time.monotonic() + max(3 * self.interval, 30.0)
        return delay

    def publish(self) -> bool:
        """Bring the Node's annotation and labels up to date: True when it was patched."""
        node = self.kube.request("GET", f"/api/v1/nodes/{self.node_name}")
        patch = metadata_patch(node, self.last_good, self.last_error)
        if patch is None:
            return False
        self.kube.request(
            "PATCH", f"/api/v1/nodes/{self.node_name}", patch, content_type="application/merge-patch+json"
        )
        self.patches += 1
        log.info(
            "Updated the Node's GPU inventory",
            node=self.node_name,
            patch=sorted(patch["metadata"].get("annotations", {}))
            + sorted(patch["metadata"].get("labels", {})),
        )
        return True

    def run(self, stop: threading.Event, once: bool = False) -> None:
        while not stop.is_set():
            delay = self.step()
            if once:
                return
            stop.wait(delay)

    def healthy(self) -> bool:
        """Alive: the loop has completed a step recently (a read failure is not unhealthy)."""
        return time.monotonic() < self.healthy_until


def serve_health(port: int, healthy: Callable[[], bool]) -> http.server.ThreadingHTTPServer:
    """/healthz for the DaemonSet's liveness probe, /readyz after the first step."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path in ("/healthz", "/readyz") and healthy()
            self.send_response(200 if ok else 503)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok\n" if ok else b"not ready\n")

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("0.0.0.0", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
