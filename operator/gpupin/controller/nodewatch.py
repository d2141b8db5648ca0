"""Saying what happens to the nodes' GPU inventories, and ending grace periods on time.

The rules are in :mod:`gpupin.controller.nodeinventory` (pure); this is their edge: a Kubernetes
Event on the Node for each new problem and for its end (Events of cluster-scoped objects go to
namespace ``default``), a log line, and a timer that lets a GPU whose grace period has passed
leave the inventory (then every deployment is reconciled, and pods on that GPU are deleted).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from gpupin.controller.cache import ClusterCache
from gpupin.controller.decide import EventSpec
from gpupin.controller.events import post_event
from gpupin.controller.nodeinventory import EVENT_REASONS, RESTORED, NodeProblem
from gpupin.kube import Kube

log = structlog.get_logger("gpupin.operator")

EVENT_NAMESPACE = "default"
"""Where Events about cluster-scoped objects (Nodes) live, as the kubelet posts them: the API server
refuses an Event of a cluster-scoped object in any other namespace."""


class NodeWatch:
    """Reports node inventory problems and runs the grace-period timer."""

    def __init__(
        self,
        cache: ClusterCache,
        kube: Kube,
        on_change: Callable[[], None],
        spawn: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        self.cache = cache
        self.kube = kube
        self.on_change = on_change
        self.spawn = spawn
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: float | None = None

    def changed(self, changed: bool) -> None:
        """After a Node or ResourceSlice event (or the start-up lists): tell what is new, (re)arm
        the timer, and reconcile everything when the planning inventory changed."""
        self.report()
        self.schedule()
        if changed:
            self.on_change()

    def report(self) -> None:
        for name, problem, gpus in self.cache.book.changes():
            message = event_message(name, problem, gpus)
            if problem is None:
                log.info("Node GPU inventory read again", node=name, gpus=gpus)
            else:
                log.warning("Node GPU inventory problem", node=name, problem=problem.kind, message=message)
            node = self.cache.raw_nodes.get(name)
            if node is not None:
                self.spawn(asyncio.to_thread(self._post, node, problem, message))

    def schedule(self, after_expiry: bool = False) -> None:
        deadline = self.cache.book.next_expiry()
        if deadline is None or (self._deadline is not None and self._deadline <= deadline):
            return
        if after_expiry and deadline <= time.monotonic():
            log.error("A GPU's grace period did not end when due; its loss waits for the next node event")
            return  # never a timer that fires again and again
        if self._timer is not None:
            self._timer.cancel()
        self._deadline = deadline
        delay = max(0.0, deadline - time.monotonic()) + 0.05
        self._timer = asyncio.get_running_loop().call_later(delay, self._expire)

    def _expire(self) -> None:
        self._timer = self._deadline = None
        changed = self.cache.expire_gpu_losses()
        self.report()
        self.schedule(after_expiry=True)
        if changed:
            self.on_change()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._deadline = None

    def _post(self, node: dict[str, Any], problem: NodeProblem | None, message: str) -> None:
        meta = node.get("metadata") or {}
        reason = RESTORED if problem is None else EVENT_REASONS[problem.kind]
        post_event(
            self.kube,
            {"apiVersion": "v1", "kind": "Node", "name": meta.get("name"), "uid": meta.get("uid")},
            EventSpec("Normal" if problem is None else "Warning", reason, message),
            namespace=EVENT_NAMESPACE,
        )


def event_message(name: str, problem: NodeProblem | None, gpus: int) -> str:
    """The Node Event's text for a problem (or for its end)."""
    if problem is None:
        return f"node {name}: GPU inventory read again ({gpus} GPU(s)); new pods may be placed there"
    if not problem.freezes:
        return problem.message
    if gpus:
        return (
            f"{problem.message}; it keeps its last good inventory ({gpus} GPU(s)): the pods there keep "
            "running, and no new pod is placed there"
        )
    return f"{problem.message}; gpupin places nothing there"
