"""Operator burst benchmark: many CRs created at once by many clients, against a real API server.

Starts a kwokctl cluster (the binaries of ``make cluster-tools``) with NODES KWOK nodes of
8 GPUs each and a Service range wide enough for every CR's Service (kwokctl's default, the API
server's 10.0.0.0/24, holds only 253 Services), then, in the same run and on the same cluster:

1. the floor: the minimal kopf operator of benchmarks/floor_operator.py, one owned pod per CR;
   then the serving floor, the same operator writing a pod, a Service and a status per CR (what
   any operator serving a model must), timed until every pod and status is seen;
2. gpupin: ``gpupin operator``, COUNT LLMDeployments (vLLM, one GPU each: a pod and a Service).

Each serves its own namespace. Each is warmed up with one CR first (start-up and the first plan
are not the burst's); then THREADS client threads create COUNT CRs as fast as the API server takes
them. A watch timestamps each pod's first sighting and, for gpupin, each status once it is current
(written for the CR's generation, Ready True: the pod's readiness is in it). Prints, for each:
seconds from the first create until every pod exists (and CR/s), until every status is current,
the operator's peak RSS, its CPU seconds during the burst and the control plane's (kwokctl's
processes: on a machine the burst saturates, time follows the sum), and its API writes per CR as
the API server counts them (pods, Services and core Events created, writes to the CRs and their
status: both operators counted alike).

``--before=DIR``: first run gpupin from the checkout DIR (e.g. a worktree of main) the same way, in
its own namespace, for a before/after in one run; ``--verbose``: where gpupin's CPU went and the
API server's mean time per write; ``--skip-floor``; ``--profile=FILE``: gpupin under cProfile.

Run: ``make bench-burst`` (or ``python benchmarks/operator_burst.py [COUNT] [NODES] [THREADS] [--before=DIR]``).
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchtools import (
    SERVICE_RANGE,
    SERVING_FLOOR,
    PodWatch,
    add_nodes,
    all_writes,
    all_writes_text,
    apiserver_durations,
    apiserver_writes,
    clear,
    cluster_cpu,
    cpu_text,
    metric,
    per_cr,
    proc_stats,
    start_floor,
    start_gpupin,
    stop,
    thread_cpu,
    writes_text,
)

from gpupin import constants
from gpupin.kube import Kube, load_configuration

from kwok import Cluster, start_cluster, stop_cluster, wait_for

PORT = 9798


def _burst(
    cluster: Cluster, count: int, threads: int, path: str, body: Callable[[str], dict[str, Any]]
) -> float:
    """Create ``count`` CRs from ``threads`` threads, each with its own client; returns the start time."""

    def create(offset: int) -> None:
        kube = Kube(load_configuration(str(cluster.kubeconfig)))
        for i in range(offset, count, threads):
            kube.request("POST", path, body(f"b-{i:05d}"))

    workers = [threading.Thread(target=create, args=(t,)) for t in range(threads)]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return started


def _run_floor(
    cluster: Cluster, count: int, threads: int, workdir: Path, serving: bool = False
) -> dict[str, Any]:
    """The bare floor, or (``serving``) the serving floor: a pod, a Service and a status per CR,
    timed until every pod and (serving) every status is seen."""
    namespace = SERVING_FLOOR if serving else "floor"
    path = f"/apis/bench.gpupin.dev/v1/namespaces/{namespace}/floors"
    process = start_floor(cluster, workdir / f"{namespace}.log", namespace)

    def body(name: str) -> dict[str, Any]:
        return {
            "apiVersion": "bench.gpupin.dev/v1",
            "kind": "Floor",
            "metadata": {"name": name},
            "spec": {"service": serving},
        }

    pods = PodWatch(
        cluster, f"/api/v1/namespaces/{namespace}/pods", lambda o: o["metadata"]["name"].removesuffix("-pod")
    )
    statuses = PodWatch(
        cluster, path, lambda o: o["metadata"]["name"] if (o.get("status") or {}).get("create_pod") else None
    )
    seen = [pods.seen, statuses.seen] if serving else [pods.seen]
    try:
        cluster.kube.request("POST", path, body("warm-up"))
        wait_for(lambda: all("warm-up" in s for s in seen), timeout=120, what="the floor's warm-up")
        cpu0, _ = proc_stats(process.pid)
        writes0, control0 = apiserver_writes(cluster, "bench.gpupin.dev", "floors"), cluster_cpu(cluster)
        every0 = all_writes(cluster)
        started = _burst(cluster, count, threads, path, body)
        wait_for(
            lambda: all(len(s) > count for s in seen), timeout=900, interval=0.05, what="the floor's pods"
        )
        pods_s = max(max(s.values()) for s in seen) - started
        control = cpu_text(control0, cluster_cpu(cluster))
        time.sleep(1.0)  # kopf's own writes after the handler
        cpu, peak = proc_stats(process.pid)
        writes = per_cr(writes0, apiserver_writes(cluster, "bench.gpupin.dev", "floors"), count)
        every = all_writes_text(per_cr(every0, all_writes(cluster), count))
    finally:
        stop(process)
        pods.stop()
        statuses.stop()
    return {
        "pods_s": pods_s,
        "rss_mib": peak,
        "cpu_s": cpu - cpu0,
        "writes": writes,
        "control": control,
        "every": every,
    }


def _written(obj: dict[str, Any]) -> str | None:
    """The CR's name once a status is written for its generation (Ready or not)."""
    status = obj.get("status") or {}
    return (
        obj["metadata"]["name"]
        if status.get("observedGeneration") == obj["metadata"].get("generation")
        else None
    )


def _current(obj: dict[str, Any]) -> str | None:
    """The CR's name once its status is written for its generation and says Ready."""
    status = obj.get("status") or {}
    if status.get("observedGeneration") != obj["metadata"].get("generation"):
        return None
    ready = [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    return obj["metadata"]["name"] if ready and ready[0].get("status") == "True" else None


def _serving() -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{PORT}/metrics", timeout=2).read()
    except OSError:
        return False
    return True


def _run_gpupin(
    cluster: Cluster, args: Args, workdir: Path, namespace: str, source: Path | None
) -> dict[str, Any]:
    process = start_gpupin(cluster, workdir / f"{namespace}.log", PORT, [namespace], source, args.profile)
    path = f"/apis/{constants.API_VERSION}/namespaces/{namespace}/{constants.PLURAL}"

    def body(name: str) -> dict[str, Any]:
        return {
            "apiVersion": constants.API_VERSION,
            "kind": constants.KIND,
            "metadata": {"name": name},
            "spec": {"engine": "vllm", "models": [{"name": "Qwen/Qwen2.5-3B-Instruct"}]},
        }

    pods = PodWatch(
        cluster,
        f"/api/v1/namespaces/{namespace}/pods",
        lambda o: (o["metadata"].get("labels") or {}).get(constants.DEPLOYMENT_LABEL),
    )
    statuses = PodWatch(cluster, path, _current)
    written = PodWatch(cluster, path, _written)
    count = args.count
    try:
        wait_for(_serving, timeout=120, what="gpupin's /metrics")
        cluster.kube.request("POST", path, body("warm-up"))
        wait_for(lambda: "warm-up" in statuses.seen, timeout=120, what="gpupin's warm-up deployment")
        cpu0, _ = proc_stats(process.pid)
        writes0, control0 = apiserver_writes(cluster, constants.GROUP, constants.PLURAL), cluster_cpu(cluster)
        every0 = all_writes(cluster)
        metrics0 = _scrape()
        started = _burst(cluster, count, args.threads, path, body)
        wait_for(lambda: len(pods.seen) > count, timeout=900, interval=0.05, what="gpupin's pods")
        pods_s = max(pods.seen.values()) - started
        wait_for(lambda: len(statuses.seen) > count, timeout=900, interval=0.05, what="gpupin's statuses")
        status_s = max(statuses.seen.values()) - started
        first_status_s = max(written.seen.values()) - started
        control = cpu_text(control0, cluster_cpu(cluster))
        time.sleep(1.0)  # Events are posted after the writes they tell of
        cpu, peak = proc_stats(process.pid)
        writes = per_cr(writes0, apiserver_writes(cluster, constants.GROUP, constants.PLURAL), count)
        every = all_writes_text(per_cr(every0, all_writes(cluster), count))
        metrics = _scrape()
        if args.verbose:
            steps, spent = (
                metric(metrics, f"gpupin_reconcile_duration_seconds_{n}")
                - metric(metrics0, f"gpupin_reconcile_duration_seconds_{n}")
                for n in ("count", "sum")
            )
            print(
                f"  {namespace}: CPU-s since start-up {thread_cpu(process.pid)}; allocation step mean "
                f"{spent / max(steps, 1) * 1e3:.1f} ms over {steps:.0f}"
            )
            print("  API server, mean per write request:\n    " + "\n    ".join(apiserver_durations(cluster)))
    finally:
        stop(process)
        pods.stop()
        statuses.stop()
        written.stop()
    reconciles = metric(metrics, "gpupin_reconciles_total") - metric(metrics0, "gpupin_reconciles_total")
    return {
        "pods_s": pods_s,
        "status_s": status_s,
        "first_status_s": first_status_s,
        "rss_mib": peak,
        "cpu_s": cpu - cpu0,
        "writes": writes,
        "reconciles_per_cr": reconciles / count,
        "control": control,
        "every": every,
    }


def _scrape() -> str:
    return str(urllib.request.urlopen(f"http://127.0.0.1:{PORT}/metrics", timeout=10).read().decode())


@dataclass(frozen=True)
class Args:
    count: int = 1000
    nodes: int = 1000
    threads: int = 16
    verbose: bool = False
    skip_floor: bool = False
    before: Path | None = None
    profile: str | None = None

    @classmethod
    def parse(cls, argv: list[str]) -> Args:
        numbers = [int(a) for a in argv if not a.startswith("--")]
        options = dict(a.removeprefix("--").split("=", 1) for a in argv if a.startswith("--") and "=" in a)
        return cls(
            *numbers,  # type: ignore[arg-type]
            verbose="--verbose" in argv,
            skip_floor="--skip-floor" in argv,
            before=Path(options["before"]).resolve() if "before" in options else None,
            profile=options.get("profile"),
        )


def main(argv: list[str]) -> int:
    args = Args.parse(argv)
    count = args.count
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        started = time.monotonic()
        cluster = start_cluster(workdir, "gpupin-burst", extra_args=(SERVICE_RANGE,))
        try:
            add_nodes(cluster, args.nodes)
            print(
                f"cluster up and {args.nodes} nodes × 8 GPUs added in {time.monotonic() - started:.1f} s; "
                f"{count} CRs created by {args.threads} client threads"
            )
            floor = None if args.skip_floor else _run_floor(cluster, count, args.threads, workdir)
            if floor:
                print(
                    f"floor (bare kopf, one pod per CR): all pods in {floor['pods_s']:.1f} s "
                    f"({count / floor['pods_s']:.1f} CR/s), peak RSS {floor['rss_mib']:.0f} MiB, "
                    f"{floor['cpu_s']:.1f} CPU-s, {writes_text(floor['writes'])}; control plane {floor['control']}"
                )
                print(f"  every write the API server served, all clients: {floor['every']}")
            serving = (
                None if args.skip_floor else _run_floor(cluster, count, args.threads, workdir, serving=True)
            )
            if serving:
                print(
                    f"serving floor (kopf: a pod, a Service, a status per CR): every pod and status in "
                    f"{serving['pods_s']:.1f} s ({count / serving['pods_s']:.1f} CR/s), peak RSS "
                    f"{serving['rss_mib']:.0f} MiB, {serving['cpu_s']:.1f} CPU-s, {writes_text(serving['writes'])}; "
                    f"control plane {serving['control']}"
                )
                print(f"  every write the API server served, all clients: {serving['every']}")
            phases = [("before", args.before)] if args.before else []
            for label, source in [*phases, ("burst", None)]:
                gpupin = _run_gpupin(cluster, args, workdir, label, source)
                name = f"gpupin {args.before}" if source else "gpupin"
                print(
                    f"{name} (a pod and a Service per CR): all pods in {gpupin['pods_s']:.1f} s "
                    f"({count / gpupin['pods_s']:.1f} CR/s), every status current at {gpupin['status_s']:.1f} s, "
                    f"peak RSS {gpupin['rss_mib']:.0f} MiB, {gpupin['cpu_s']:.1f} CPU-s, "
                    f"{writes_text(gpupin['writes'])}, {gpupin['reconciles_per_cr']:.2f} reconciles per CR; "
                    f"control plane {gpupin['control']}"
                )
                print(f"  every write the API server served, all clients: {gpupin['every']}")
                if floor:
                    print(
                        f"  ratio {name} / floor: all pods {gpupin['pods_s'] / floor['pods_s']:.2f}, "
                        f"every status current {gpupin['status_s'] / floor['pods_s']:.2f}"
                    )
                if serving:
                    print(
                        f"  ratio {name} / serving floor: all pods and a status each "
                        f"{max(gpupin['pods_s'], gpupin['first_status_s']) / serving['pods_s']:.2f}, "
                        f"every status current {gpupin['status_s'] / serving['pods_s']:.2f}"
                    )
                if source:
                    clear(cluster, [label])
        finally:
            stop_cluster(cluster)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
