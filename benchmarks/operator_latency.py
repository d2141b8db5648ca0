"""Operator benchmark: CR created → its pods created and status written, against a real API server.

Starts a kwokctl cluster (the binaries of ``make cluster-tools``) with 100 KWOK nodes of
8 GPUs each, then, in the same run and on the same cluster:

1. the floor: a minimal kopf operator (benchmarks/floor_operator.py) that creates one
   owned pod per CR of its own small CRD, serving one namespace; then the serving floor, the same
   operator writing what any operator serving a model must (a pod, a Service, one status patch),
   timed until its pod and status are seen, in another namespace;
2. gpupin: ``gpupin operator`` serving one namespace (and those of step 3), placing 200
   LLMDeployments (vLLM, one GPU each: a pod and a Service).

Each operator is warmed up with one CR first. CRs are then created one after another, 50 ms
apart; a watch on pods (and, for gpupin, on LLMDeployments) timestamps when each CR's pod exists
and its status is written. Prints p50/p99 latency and their ratio to the floor, the operators' CPU
seconds over the paced run and the control plane's (kwokctl's processes), API writes per CR as the
API server counts them (both operators alike), the API server's own mean time per pod create
(from its request-duration histogram: how much of the latency is the server's, loaded by the
writes around it) and RSS; then, for gpupin, ``kubectl apply`` of 1, 10 and 100 LLMDeployments
at once, timed until every pod is Running, and its writes per reconcile.

``--before=DIR``: first run gpupin from the checkout DIR (e.g. a worktree of main) the same way,
in its own namespaces, for a before/after in one run; ``--interval=SECONDS`` between creates
(0.05); ``--verbose``: where gpupin's CPU went.

Run: ``make bench-operator`` (or ``python benchmarks/operator_latency.py [COUNT] [NODES] [--before=DIR]``).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import urllib.request
from collections import Counter
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
    mean_ms,
    metric,
    per_cr,
    percentiles,
    pod_create_seconds,
    proc_stats,
    start_floor,
    start_gpupin,
    stop,
    thread_cpu,
    writes_text,
)

from gpupin import constants

from kwok import Cluster, start_cluster, stop_cluster, wait_for

PORT = 9799
APPLY_SIZES = (1, 10, 100)


INTERVAL = 0.05
"""Seconds between two creates (``--interval=``)."""


def _paced(cluster: Cluster, path: str, count: int, body: dict[str, object]) -> dict[str, float]:
    """Create ``count`` CRs INTERVAL apart; returns name → time.monotonic() the create returned."""
    created: dict[str, float] = {}
    for i in range(count):
        name = f"llm-{i:04d}"
        cluster.kube.request("POST", path, {**body, "metadata": {"name": name}})
        created[name] = time.monotonic()
        time.sleep(INTERVAL)
    return created


def _run_floor(cluster: Cluster, count: int, workdir: Path, serving: bool = False) -> dict[str, Any]:
    """The bare floor, or (``serving``) the second one: a pod, a Service and a status per CR,
    timed until both the pod and the status are seen."""
    namespace = SERVING_FLOOR if serving else "floor"
    path = f"/apis/bench.gpupin.dev/v1/namespaces/{namespace}/floors"
    process = start_floor(cluster, workdir / f"{namespace}.log", namespace)
    watch = PodWatch(
        cluster, f"/api/v1/namespaces/{namespace}/pods", lambda o: o["metadata"]["name"].removesuffix("-pod")
    )
    statuses = PodWatch(
        cluster, path, lambda o: o["metadata"]["name"] if (o.get("status") or {}).get("create_pod") else None
    )
    body: dict[str, object] = {
        "apiVersion": "bench.gpupin.dev/v1",
        "kind": "Floor",
        "spec": {"service": serving},
    }
    seen = [watch.seen, statuses.seen] if serving else [watch.seen]
    try:
        cluster.kube.request("POST", path, {**body, "metadata": {"name": "warm-up"}})
        wait_for(lambda: all("warm-up" in s for s in seen), timeout=120, what="the floor's warm-up")
        cpu0, _ = proc_stats(process.pid)
        writes0, control0 = apiserver_writes(cluster, "bench.gpupin.dev", "floors"), cluster_cpu(cluster)
        every0, served0 = all_writes(cluster), pod_create_seconds(cluster)
        created = _paced(cluster, path, count, body)
        wait_for(lambda: all(len(s) > count for s in seen), timeout=120, what="the floor's pods")
        served = mean_ms(served0, pod_create_seconds(cluster))
        time.sleep(1.0)  # kopf's own writes after the handler
        cpu, rss = proc_stats(process.pid)
        control = cpu_text(control0, cluster_cpu(cluster))
        writes = per_cr(writes0, apiserver_writes(cluster, "bench.gpupin.dev", "floors"), count)
        every = all_writes_text(per_cr(every0, all_writes(cluster), count))
    finally:
        stop(process)
        watch.stop()
        statuses.stop()
    p50, p99 = percentiles([max(s[n] for s in seen) - t for n, t in created.items()])
    return {
        "p50_ms": p50,
        "p99_ms": p99,
        "rss_mib": rss,
        "cpu_s": cpu - cpu0,
        "writes": writes,
        "control": control,
        "every": every,
        "pod_create_ms": served,
    }


def _serving() -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{PORT}/metrics", timeout=2).read()
    except OSError:
        return False
    return True


def _run_gpupin(
    cluster: Cluster, count: int, workdir: Path, verbose: bool, namespace: str, source: Path | None
) -> dict[str, Any]:
    applied = [f"{namespace}-apply-{size}" for size in APPLY_SIZES]
    process = start_gpupin(cluster, workdir / f"{namespace}.log", PORT, [namespace, *applied], source)
    path = f"/apis/{constants.API_VERSION}/namespaces/{namespace}/{constants.PLURAL}"
    body: dict[str, object] = {
        "apiVersion": constants.API_VERSION,
        "kind": constants.KIND,
        "spec": {"engine": "vllm", "models": [{"name": "Qwen/Qwen2.5-3B-Instruct"}]},
    }
    pods = PodWatch(
        cluster,
        f"/api/v1/namespaces/{namespace}/pods",
        lambda o: (o["metadata"].get("labels") or {}).get(constants.DEPLOYMENT_LABEL),
    )
    statuses = PodWatch(
        cluster,
        path,
        lambda o: o["metadata"]["name"] if (o.get("status") or {}).get("observedGeneration") else None,
    )
    try:
        wait_for(_serving, timeout=120, what="gpupin's /metrics")
        cluster.kube.request("POST", path, {**body, "metadata": {"name": "warm-up"}})
        wait_for(
            lambda: "warm-up" in statuses.seen and "warm-up" in pods.seen, timeout=120, what="the warm-up"
        )
        cpu0, _ = proc_stats(process.pid)
        writes0, control0 = apiserver_writes(cluster, constants.GROUP, constants.PLURAL), cluster_cpu(cluster)
        every0, served0 = all_writes(cluster), pod_create_seconds(cluster)
        created = _paced(cluster, path, count, body)
        wait_for(
            lambda: len(pods.seen) > count and len(statuses.seen) > count,
            timeout=180,
            what="gpupin's pods and statuses",
        )
        served = mean_ms(served0, pod_create_seconds(cluster))
        time.sleep(1.0)  # Events are posted after the writes they tell of
        cpu, _ = proc_stats(process.pid)
        control = cpu_text(control0, cluster_cpu(cluster))
        writes = per_cr(writes0, apiserver_writes(cluster, constants.GROUP, constants.PLURAL), count)
        every = all_writes_text(per_cr(every0, all_writes(cluster), count))
        if verbose:
            print(f"  gpupin CPU-s: {thread_cpu(process.pid)}")
            print("  API server, mean per write request:\n    " + "\n    ".join(apiserver_durations(cluster)))
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{PORT}/metrics", timeout=10).read().decode()
        running = {
            size: _apply_until_running(cluster, size, ns)
            for size, ns in zip(APPLY_SIZES, applied, strict=True)
        }
        _, rss = proc_stats(process.pid)
    finally:
        stop(process)
        pods.stop()
        statuses.stop()
    done = {n: max(pods.seen[n], statuses.seen[n]) for n in created}
    p50, p99 = percentiles([done[n] - t for n, t in created.items()])
    pod_p50, pod_p99 = percentiles([pods.seen[n] - t for n, t in created.items()])
    reconciles = metric(metrics, "gpupin_reconciles_total")
    requests = metric(metrics, "gpupin_api_requests_total")
    reads = sum(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("gpupin_api_requests_total{") and 'verb="GET"' in line
    )
    return {
        "p50_ms": p50,
        "p99_ms": p99,
        "pods_p50_ms": pod_p50,
        "pods_p99_ms": pod_p99,
        "rss_mib": rss,
        "cpu_s": cpu - cpu0,
        "writes": writes,
        "control": control,
        "every": every,
        "pod_create_ms": served,
        "reconciles": reconciles,
        "requests_per_reconcile": (requests - reads) / max(reconciles, 1),
        "startup_reads": reads,
        **{f"running_{size}_s": seconds for size, seconds in running.items()},
    }


def _apply_until_running(cluster: Cluster, size: int, namespace: str) -> float:
    """`kubectl apply` of ``size`` LLMDeployments at once → every pod Running (KWOK marks them)."""
    docs = [
        json.dumps(
            {
                "apiVersion": constants.API_VERSION,
                "kind": constants.KIND,
                "metadata": {"name": f"m{i:03d}", "namespace": namespace},
                "spec": {"engine": "ollama", "models": [{"name": "llama3.2:3b"}]},
            }
        )
        for i in range(size)
    ]
    started = time.monotonic()
    cluster.apply("\n---\n".join(docs))

    def all_running() -> bool:
        items = cluster.kube.request("GET", f"/api/v1/namespaces/{namespace}/pods").get("items") or []
        return len(items) == size and all((p.get("status") or {}).get("phase") == "Running" for p in items)

    try:
        wait_for(all_running, timeout=300, interval=0.05, what=f"{size} deployments running")
    except AssertionError as exc:
        pods = cluster.kube.request("GET", f"/api/v1/namespaces/{namespace}/pods").get("items") or []
        path = f"/apis/{constants.API_VERSION}/namespaces/{namespace}/{constants.PLURAL}"
        reasons = Counter(
            (d.get("status") or {}).get("reason") for d in cluster.kube.request("GET", path)["items"]
        )
        phases = Counter((p.get("status") or {}).get("phase") for p in pods)
        events = cluster.kube.request("GET", f"/api/v1/namespaces/{namespace}/events").get("items") or []
        warnings = [
            f"{e['involvedObject'].get('name')}: {e['message']}" for e in events if e.get("type") == "Warning"
        ]
        raise AssertionError(
            f"{size} deployments not all running: pods {dict(phases)}, reasons {dict(reasons)}; {warnings[:3]}"
        ) from exc
    return time.monotonic() - started


def main(argv: list[str]) -> int:
    numbers = [int(a) for a in argv if not a.startswith("--")]
    count = numbers[0] if numbers else 200
    nodes = numbers[1] if len(numbers) > 1 else 100
    before = next((Path(a.split("=", 1)[1]).resolve() for a in argv if a.startswith("--before=")), None)
    global INTERVAL
    INTERVAL = next((float(a.split("=", 1)[1]) for a in argv if a.startswith("--interval=")), INTERVAL)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        started = time.monotonic()
        cluster = start_cluster(workdir, "gpupin-bench", extra_args=(SERVICE_RANGE,))
        print(
            f"cluster up in {time.monotonic() - started:.1f} s; {nodes} nodes × 8 GPUs, {count} CRs "
            f"{INTERVAL * 1e3:.0f} ms apart"
        )
        try:
            add_nodes(cluster, nodes)
            floor = _run_floor(cluster, count, workdir)
            print(
                f"floor (bare kopf, one pod per CR): p50 {floor['p50_ms']:.0f} ms, p99 {floor['p99_ms']:.0f} ms, "
                f"RSS {floor['rss_mib']:.0f} MiB, {floor['cpu_s']:.1f} CPU-s, {writes_text(floor['writes'])}; "
                f"control plane {floor['control']}"
            )
            print(f"  every write the API server served, all clients: {floor['every']}")
            print(f"  the API server's own time per pod create: {floor['pod_create_ms']:.1f} ms")
            serving = _run_floor(cluster, count, workdir, serving=True)
            print(
                f"serving floor (kopf: a pod, a Service, a status per CR; pod and status seen): "
                f"p50 {serving['p50_ms']:.0f} ms, p99 {serving['p99_ms']:.0f} ms, RSS {serving['rss_mib']:.0f} MiB, "
                f"{serving['cpu_s']:.1f} CPU-s, {writes_text(serving['writes'])}; control plane {serving['control']}"
            )
            print(f"  every write the API server served, all clients: {serving['every']}")
            print(f"  the API server's own time per pod create: {serving['pod_create_ms']:.1f} ms")
            for namespace, source in [*([("before", before)] if before else []), ("bench", None)]:
                gpupin = _run_gpupin(cluster, count, workdir, "--verbose" in argv, namespace, source)
                name = f"gpupin {source}" if source else "gpupin"
                print(
                    f"{name} (pods created and status written): p50 {gpupin['p50_ms']:.0f} ms, "
                    f"p99 {gpupin['p99_ms']:.0f} ms (pods alone p50 {gpupin['pods_p50_ms']:.0f} ms, "
                    f"p99 {gpupin['pods_p99_ms']:.0f} ms), RSS {gpupin['rss_mib']:.0f} MiB, "
                    f"{gpupin['cpu_s']:.1f} CPU-s, {writes_text(gpupin['writes'])}; control plane {gpupin['control']}"
                )
                print(f"  every write the API server served, all clients: {gpupin['every']}")
                print(
                    f"  the API server's own time per pod create: {gpupin['pod_create_ms']:.1f} ms "
                    f"(the floor's: {floor['pod_create_ms']:.1f} ms)"
                )
                print(
                    f"  ratio {name} / floor: p50 {gpupin['p50_ms'] / floor['p50_ms']:.2f}, "
                    f"p99 {gpupin['p99_ms'] / floor['p99_ms']:.2f}; / serving floor: "
                    f"p50 {gpupin['p50_ms'] / serving['p50_ms']:.2f}, p99 {gpupin['p99_ms'] / serving['p99_ms']:.2f}"
                )
                print(
                    "  kubectl apply of N LLMDeployments → all pods Running: "
                    + ", ".join(f"{n}: {gpupin[f'running_{n}_s']:.2f} s" for n in APPLY_SIZES)
                )
                print(
                    f"  API writes per reconcile: {gpupin['requests_per_reconcile']:.2f} over "
                    f"{gpupin['reconciles']:.0f} reconciles; reads: {gpupin['startup_reads']:.0f}, all at start-up "
                    "(the watches deliver the rest)"
                )
                if source:
                    clear(cluster, [namespace, *(f"{namespace}-apply-{size}" for size in APPLY_SIZES)])
        finally:
            stop_cluster(cluster)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
