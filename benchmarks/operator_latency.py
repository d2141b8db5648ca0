"""Operator benchmark: CR created → its pods created and status written, against a real API server.

Starts a kwokctl cluster (the binaries of ``make cluster-tools``) with 100 KWOK nodes of
8 GPUs each, then, in the same run and on the same cluster:

1. the floor: a minimal kopf operator (benchmarks/floor_operator.py) that creates one
   owned pod per CR of its own small CRD;
2. gpupin: ``gpupin operator`` placing 200 LLMDeployments (vLLM, one GPU each).

CRs are created one after another, 50 ms apart; a watch on pods (and, for gpupin, on
LLMDeployments) timestamps when each CR's pod exists and its status is written. Prints
p50/p99 latency, the ratio to the floor, API requests per reconcile and operator RSS.

Run: ``make bench-operator`` (or ``python benchmarks/operator_latency.py [COUNT] [NODES]``).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from gpupin import constants  # noqa: E402
from gpupin.inventory import GPU, NodeInventory  # noqa: E402

from kwok import Cluster, start_cluster, stop_cluster, wait_for  # noqa: E402

FLOOR_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "floors.bench.gpupin.dev"},
    "spec": {
        "group": "bench.gpupin.dev",
        "names": {"kind": "Floor", "plural": "floors", "singular": "floor"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                },
            }
        ],
    },
}


class PodWatch:
    """Timestamps the first sighting of each pod (and optionally of each CR's written status)."""

    def __init__(self, cluster: Cluster, path: str, key: Any) -> None:
        self.cluster, self.path, self.key = cluster, path, key
        self.seen: dict[str, float] = {}
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        kube = self.cluster.kube
        url = kube.configuration.host + self.path + "?watch=true&allowWatchBookmarks=false"
        while not self._stop:
            response = kube.api.rest_client.pool_manager.request(
                "GET", url, preload_content=False, timeout=None
            )
            buffer = b""
            for chunk in response.stream(4096):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    event = json.loads(line)
                    name = self.key(event["object"])
                    if name and name not in self.seen:
                        self.seen[name] = time.monotonic()
                if self._stop:
                    break

    def stop(self) -> None:
        self._stop = True


def _nodes(cluster: Cluster, count: int) -> None:
    for n in range(count):
        gpus = [
            GPU(
                index=i,
                uuid=f"GPU-bench-{n:04d}-{i}",
                name="NVIDIA A10",
                memory=23028 * 2**20,
                compute_capability="8.6",
            )
            for i in range(8)
        ]
        cluster.add_node(NodeInventory(name=f"bench-{n:04d}", gpus=gpus))


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered) * 1e3, ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1e3


def _run_floor(cluster: Cluster, count: int, workdir: Path) -> dict[str, float]:
    cluster.kube.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", FLOOR_CRD)
    cluster.kubectl("wait", "--for=condition=Established", "crd/floors.bench.gpupin.dev", "--timeout=60s")
    cluster.create_namespace("floor")
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    log = (workdir / "floor.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kopf",
            "run",
            "--standalone",
            "-n",
            "floor",
            str(REPO / "benchmarks" / "floor_operator.py"),
        ],
        env=env,
        stdout=log,
        stderr=log,
    )
    time.sleep(4)
    watch = PodWatch(
        cluster, "/api/v1/namespaces/floor/pods", lambda o: o["metadata"]["name"].removesuffix("-pod")
    )
    created: dict[str, float] = {}
    for i in range(count):
        name = f"f-{i:04d}"
        cluster.kube.request(
            "POST",
            "/apis/bench.gpupin.dev/v1/namespaces/floor/floors",
            {"apiVersion": "bench.gpupin.dev/v1", "kind": "Floor", "metadata": {"name": name}},
        )
        created[name] = time.monotonic()
        time.sleep(0.05)
    wait_for(lambda: len(watch.seen) >= count, timeout=120, what="the floor's pods")
    rss = _rss_mib(process.pid)
    process.terminate()
    process.wait(15)
    watch.stop()
    p50, p99 = _percentiles([watch.seen[n] - t for n, t in created.items()])
    return {"p50_ms": p50, "p99_ms": p99, "rss_mib": rss}


def _metric(text: str, name: str) -> float:
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


def _run_gpupin(cluster: Cluster, count: int, workdir: Path) -> dict[str, float]:
    cluster.kubectl("apply", "-f", str(REPO / "crds" / "llmdeployments.gpupin.dev.yaml"))
    cluster.kubectl("wait", "--for=condition=Established", "crd/llmdeployments.gpupin.dev", "--timeout=60s")
    cluster.create_namespace("bench")
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    log = (workdir / "gpupin.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gpupin",
            "operator",
            "--metrics-port",
            "9799",
            "--health-port",
            "0",
            "--runtime-class",
            "",
            "--log-level",
            "WARNING",
        ],
        env=env,
        stdout=log,
        stderr=log,
    )
    time.sleep(4)
    pods = PodWatch(
        cluster,
        "/api/v1/namespaces/bench/pods",
        lambda o: (o["metadata"].get("labels") or {}).get(constants.DEPLOYMENT_LABEL),
    )
    statuses = PodWatch(
        cluster,
        f"/apis/{constants.API_VERSION}/namespaces/bench/{constants.PLURAL}",
        lambda o: o["metadata"]["name"] if (o.get("status") or {}).get("observedGeneration") else None,
    )
    created: dict[str, float] = {}
    for i in range(count):
        name = f"llm-{i:04d}"
        cluster.kube.request(
            "POST",
            f"/apis/{constants.API_VERSION}/namespaces/bench/{constants.PLURAL}",
            {
                "apiVersion": constants.API_VERSION,
                "kind": constants.KIND,
                "metadata": {"name": name},
                "spec": {"engine": "vllm", "models": [{"name": "Qwen/Qwen2.5-3B-Instruct"}]},
            },
        )
        created[name] = time.monotonic()
        time.sleep(0.05)
    wait_for(
        lambda: len(pods.seen) >= count and len(statuses.seen) >= count,
        timeout=180,
        what="gpupin's pods and statuses",
    )
    metrics = urllib.request.urlopen("http://127.0.0.1:9799/metrics", timeout=10).read().decode()
    running = {size: _apply_until_running(cluster, size) for size in (1, 10, 100)}
    rss = _rss_mib(process.pid)
    process.terminate()
    process.wait(15)
    pods.stop()
    statuses.stop()
    done = {n: max(pods.seen[n], statuses.seen[n]) for n in created}
    p50, p99 = _percentiles([done[n] - t for n, t in created.items()])
    pod_p50, _ = _percentiles([pods.seen[n] - t for n, t in created.items()])
    reconciles = _metric(metrics, "gpupin_reconciles_total")
    requests = _metric(metrics, "gpupin_api_requests_total")
    reads = sum(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("gpupin_api_requests_total{") and 'verb="GET"' in line
    )
    return {
        "p50_ms": p50,
        "p99_ms": p99,
        "pods_p50_ms": pod_p50,
        "rss_mib": rss,
        "reconciles": reconciles,
        "requests_per_reconcile": (requests - reads) / max(reconciles, 1),
        "startup_reads": reads,
        **{f"running_{size}_s": seconds for size, seconds in running.items()},
    }


def _apply_until_running(cluster: Cluster, size: int) -> float:
    """`kubectl apply` of ``size`` LLMDeployments at once → every pod Running (KWOK marks them)."""
    namespace = f"apply-{size}"
    cluster.create_namespace(namespace)
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

    wait_for(all_running, timeout=300, interval=0.05, what=f"{size} deployments running")
    return time.monotonic() - started


def main(argv: list[str]) -> int:
    count = int(argv[0]) if argv else 200
    nodes = int(argv[1]) if len(argv) > 1 else 100
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        started = time.monotonic()
        cluster = start_cluster(workdir, "gpupin-bench")
        print(
            f"cluster up in {time.monotonic() - started:.1f} s; {nodes} nodes × 8 GPUs, {count} CRs 50 ms apart"
        )
        try:
            _nodes(cluster, nodes)
            floor = _run_floor(cluster, count, workdir)
            print(
                f"floor (bare kopf, one pod per CR): p50 {floor['p50_ms']:.0f} ms, p99 {floor['p99_ms']:.0f} ms, "
                f"RSS {floor['rss_mib']:.0f} MiB"
            )
            gpupin = _run_gpupin(cluster, count, workdir)
            print(
                f"gpupin (pods created and status written): p50 {gpupin['p50_ms']:.0f} ms, p99 {gpupin['p99_ms']:.0f} ms "
                f"(pods alone p50 {gpupin['pods_p50_ms']:.0f} ms), RSS {gpupin['rss_mib']:.0f} MiB"
            )
            print(f"ratio p50 gpupin / floor: {gpupin['p50_ms'] / floor['p50_ms']:.2f}")
            print(
                "kubectl apply of N LLMDeployments → all pods Running: "
                + ", ".join(f"{n}: {gpupin[f'running_{n}_s']:.2f} s" for n in (1, 10, 100))
            )
            print(
                f"API writes per reconcile: {gpupin['requests_per_reconcile']:.2f} over {gpupin['reconciles']:.0f} "
                f"reconciles; reads: {gpupin['startup_reads']:.0f}, all at start-up (the watches deliver the rest)"
            )
        finally:
            stop_cluster(cluster)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
