"""The scrape-time gauges read the operator's cache only on its event loop.

Aspects: a scrape from another thread (prometheus_client serves /metrics from its own threads)
runs the reader on the loop's thread and gets a copy; a loop too busy to answer in time, or
closed, gives the last copy and never a read off the loop; on the loop itself the reader runs
directly (no deadlock). Deterministic: the reader records the thread it ran on, no race is needed.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from gpupin.controller.metrics import LoopSnapshot, NodeInventoryProblems
from gpupin.controller.series import ClusterSeries


class Source:
    """The cache's stand-in: a dict the loop owns; every read records its thread."""

    def __init__(self) -> None:
        self.counts = {"n1": 1}
        self.threads: list[threading.Thread] = []

    def read(self) -> dict[str, int]:
        self.threads.append(threading.current_thread())
        return self.counts


@pytest.fixture
def loop() -> Iterator[tuple[asyncio.AbstractEventLoop, threading.Thread]]:
    """An event loop running in its own thread, as kopf's does (the test is the scraping thread)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="event-loop", daemon=True)
    thread.start()
    try:
        yield loop, thread
    finally:
        if not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            loop.close()


def test_a_scrape_runs_the_reader_on_the_loop_thread_and_gets_a_copy(
    loop: tuple[asyncio.AbstractEventLoop, threading.Thread],
) -> None:
    event_loop, loop_thread = loop
    source = Source()
    registry = CollectorRegistry()
    samples = LoopSnapshot(
        event_loop, lambda: {"gpupin_gpus_allocated": [((n,), c) for n, c in source.read().items()]}
    )
    registry.register(ClusterSeries(samples))
    scraped: list[bytes] = []
    scraper = threading.Thread(target=lambda: scraped.append(generate_latest(registry)), name="scrape")
    scraper.start()
    scraper.join(5)
    assert b'gpupin_gpus_allocated{node="n1"} 1.0' in scraped[0]
    assert source.threads == [loop_thread], "read on the loop's thread, never on the scrape's"
    snapshot = LoopSnapshot(event_loop, source.read)
    copy = snapshot()
    source.counts["n2"] = 2  # the loop changes its dict after the copy was taken
    assert copy == {"n1": 1} and copy is not source.counts


def test_a_busy_loop_answers_the_last_copy_without_reading_off_the_loop(
    loop: tuple[asyncio.AbstractEventLoop, threading.Thread],
) -> None:
    event_loop, loop_thread = loop
    source = Source()
    snapshot = LoopSnapshot(event_loop, source.read, timeout=0.05)
    assert snapshot() == {"n1": 1}
    release = threading.Event()
    event_loop.call_soon_threadsafe(release.wait, 5)  # the loop is stuck in a long synchronous step
    source.counts = {"n1": 1, "n2": 2}
    try:
        assert snapshot() == {"n1": 1}, "the last copy, not a read of the changing dict"
        assert source.threads == [loop_thread]
    finally:
        release.set()
    assert snapshot() == {"n1": 1, "n2": 2}, "answers again once the loop is free"
    assert set(source.threads) == {loop_thread}


def test_a_closed_loop_answers_the_last_copy(
    loop: tuple[asyncio.AbstractEventLoop, threading.Thread],
) -> None:
    event_loop, loop_thread = loop
    source = Source()
    problems = LoopSnapshot(event_loop, lambda: {"a": "unreadable"} if source.read() else {})
    assert problems() == {"a": "unreadable"}
    event_loop.call_soon_threadsafe(event_loop.stop)
    loop_thread.join(5)
    event_loop.close()
    (family,) = NodeInventoryProblems(problems).collect()
    assert [(s.labels, s.value) for s in family.samples] == [({"node": "a", "problem": "unreadable"}, 1)]
    assert source.threads == [loop_thread]


def test_on_the_loop_itself_the_reader_runs_directly() -> None:
    source = Source()

    async def scrape_on_the_loop() -> dict[str, int]:
        return LoopSnapshot(asyncio.get_running_loop(), source.read, timeout=5)()

    assert asyncio.run(scrape_on_the_loop()) == {"n1": 1}
    assert source.threads == [threading.current_thread()]


def test_the_cluster_series_name_each_pinned_gpu_by_uuid_and_count_idle_nodes_as_zero() -> None:
    """One gpupin_gpu_reserved_bytes series per pod and GPU, labelled as dcgm-exporter labels the
    same GPU (UUID, gpu) plus who holds it; capacity for every GPU and node; a node with nothing
    placed shows 0 GPUs allocated instead of no series; each status condition is a series."""
    from gpupin.controller.series import cluster_samples
    from gpupin.planner import plan
    from gpupin.render import RenderConfig, render

    from helpers import RTX_2060, RTX_4070, deployment, inventory, models, node

    cluster = inventory(node("busy", RTX_4070, RTX_2060), node("idle", RTX_4070))
    item = deployment("chat", namespace="apps", engine="ollama", models=models("qwen2.5:14b"))
    result = plan(item, cluster)
    assert result.placed, result.message
    pods = [o for o in render(item, result, RenderConfig()) if o["kind"] == "Pod"]
    body = {
        "metadata": {"namespace": "apps", "name": "chat"},
        "status": {"conditions": [
            {"type": "Placed", "status": "True", "reason": "Placed"},
            {"type": "Ready", "status": "False", "reason": "PodsStarting"},
        ]},
    }  # fmt: skip
    held = {p.node: len(p.gpus) for p in result.placements}
    samples = cluster_samples(cluster, [(p, "chat") for p in pods], [body], held)

    reserved = samples["gpupin_gpu_reserved_bytes"]
    expected = {
        (p.node, g.uuid, str(g.index), "apps", p.pod, "chat"): float(g.vram_bytes or 0)
        for p in result.placements
        for g in p.gpus
    }
    assert dict(reserved) == expected and all(v > 0 for v in expected.values())
    assert dict(samples["gpupin_gpus_allocated"]) == {("busy",): float(sum(held.values())), ("idle",): 0.0}
    assert dict(samples["gpupin_node_gpus"]) == {("busy",): 2.0, ("idle",): 1.0}
    memory = dict(samples["gpupin_gpu_memory_bytes"])
    assert memory[("idle", "GPU-idle-0", "0", cluster.nodes[1].gpus[0].name)] == float(
        cluster.nodes[1].gpus[0].memory
    )
    assert sorted(samples["gpupin_llmdeployment_condition"]) == [
        (("apps", "chat", "Placed", "True", "Placed"), 1.0),
        (("apps", "chat", "Ready", "False", "PodsStarting"), 1.0),
    ]
    (family,) = [f for f in ClusterSeries(lambda: samples).collect() if f.name == "gpupin_gpu_reserved_bytes"]
    assert {s.labels["UUID"] for s in family.samples} == {k[1] for k in expected}
