"""What the operator benchmarks share: the fake GPU nodes, the floor operator, a watch that
timestamps first sightings, and what a process and the API server say about the work done.

Not a benchmark itself; ``operator_latency.py`` and ``operator_burst.py`` import it.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from gpupin.inventory import GPU, NodeInventory  # noqa: E402
from gpupin.kube import ApiError  # noqa: E402

from kwok import Cluster, wait_for  # noqa: E402

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
SERVICE_RANGE = "kube-apiserver=service-cluster-ip-range=10.0.0.0/16"
"""kwokctl's ``--extra-args`` for 65,534 Service IPs: its default (the API server's 10.0.0.0/24) holds
253 Services, and each LLMDeployment has one (a create past that fails with 500, retried)."""
FLOOR_PATH = "/apis/bench.gpupin.dev/v1/namespaces/floor/floors"
SERVING_FLOOR = "floor-svc"
"""The namespace of the second floor: CRs with ``spec.service: true`` (a pod, a Service, a status)."""
OPERATOR_WRITES = {("POST", "", "pods", ""), ("POST", "", "services", ""), ("POST", "", "events", "")}
"""(verb, group, resource, subresource) of the writes an operator makes besides those to its CRs."""


class PodWatch:
    """Timestamps (time.monotonic()) the first time ``key`` names each object seen on a watch."""

    def __init__(self, cluster: Cluster, path: str, key: Callable[[dict[str, Any]], str | None]) -> None:
        self.cluster, self.path, self.key = cluster, path, key
        self.seen: dict[str, float] = {}
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        kube = self.cluster.kube
        url = kube.configuration.host + self.path + "?watch=true&allowWatchBookmarks=false"
        while not self._stop:
            try:
                response = kube.api.rest_client.pool_manager.request(
                    "GET", url, preload_content=False, timeout=None
                )
                buffer = b""
                for chunk in response.stream(65536):
                    buffer += chunk
                    while b"\n" in buffer:
                        line, buffer = buffer.split(b"\n", 1)
                        name = self.key(json.loads(line)["object"])
                        if name and name not in self.seen:
                            self.seen[name] = time.monotonic()
                    if self._stop:
                        break
            except Exception:  # the cluster going away at the end of a run: not news
                if not self._stop:
                    time.sleep(0.1)

    def stop(self) -> None:
        self._stop = True


def add_nodes(cluster: Cluster, count: int, prefix: str = "bench") -> None:
    """``count`` KWOK nodes of 8 A10 GPUs each (the agent's annotation), added by 16 threads; returns
    once none is tainted any more (the node lifecycle controller taints a fresh node not-ready until
    KWOK's first heartbeat: a pod planned there would wait out the scheduler's back-off)."""

    def add(n: int) -> None:
        gpus = [
            GPU(index=i, uuid=f"GPU-{prefix}-{n:05d}-{i}", name="NVIDIA A10", memory=23028 * 2**20,
                compute_capability="8.6")
            for i in range(8)
        ]  # fmt: skip
        cluster.add_node(NodeInventory(name=f"{prefix}-{n:05d}", gpus=gpus))

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(add, range(count)))

    def untainted() -> bool:
        nodes = cluster.kube.request("GET", "/api/v1/nodes").get("items") or []
        return len(nodes) >= count and not any((n.get("spec") or {}).get("taints") for n in nodes)

    wait_for(untainted, timeout=600, interval=1.0, what="every node untainted")


def start_floor(cluster: Cluster, log: Path, namespace: str = "floor") -> subprocess.Popen[bytes]:
    """The floor operator (benchmarks/floor_operator.py) on its CRD, serving ``namespace``."""
    try:
        cluster.kube.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", FLOOR_CRD)
    except ApiError as exc:
        if exc.status != 409:  # the other floor made it
            raise
    cluster.kubectl("wait", "--for=condition=Established", "crd/floors.bench.gpupin.dev", "--timeout=60s")
    cluster.create_namespace(namespace)
    return start(
        cluster,
        [sys.executable, "-m", "kopf", "run", "--standalone", "-n", namespace,
         str(REPO / "benchmarks" / "floor_operator.py")],
        log,
    )  # fmt: skip


def start_gpupin(
    cluster: Cluster,
    log: Path,
    metrics_port: int,
    namespaces: list[str],
    source: Path | None = None,
    profile: str | None = None,
) -> subprocess.Popen[bytes]:
    """``gpupin operator`` serving ``namespaces`` (as the floor serves its one), from this tree or
    from the checkout ``source`` (its ``operator/``: ``--before``); ``profile``: under cProfile,
    written there at exit."""
    cluster.kubectl("apply", "-f", str(REPO / "crds" / "llmdeployments.gpupin.dev.yaml"))
    cluster.kubectl("wait", "--for=condition=Established", "crd/llmdeployments.gpupin.dev", "--timeout=60s")
    for namespace in namespaces:
        cluster.create_namespace(namespace)
    runner = [sys.executable, "-m", "cProfile", "-o", profile] if profile else [sys.executable]
    served = [arg for namespace in namespaces for arg in ("--namespace", namespace)]
    env = (
        {"PYTHONPATH": os.pathsep.join([str(source / "operator"), os.environ.get("PYTHONPATH", "")])}
        if source
        else {}
    )
    return start(
        cluster,
        [*runner, "-m", "gpupin", "operator", "--metrics-port", str(metrics_port), "--health-port", "0",
         "--runtime-class", "", "--log-level", "WARNING", *served],
        log,
        env,
    )  # fmt: skip


def clear(cluster: Cluster, namespaces: list[str]) -> None:
    """Delete these namespaces and wait until they are gone with everything in them: the next
    operator starts on nodes without their pods (it serves other namespaces and would not see them;
    its plans would stack pods on the same nodes past their pod capacity)."""
    for namespace in namespaces:
        cluster.delete_namespace(namespace)

    def gone() -> bool:
        names = {n["metadata"]["name"] for n in cluster.kube.request("GET", "/api/v1/namespaces")["items"]}
        return not names & set(namespaces)

    wait_for(gone, timeout=900, interval=1.0, what=f"namespaces {', '.join(namespaces)} deleted")
    time.sleep(5)  # the controllers' last deletes (endpoints of the Services gone) are not the next phase's


def start(
    cluster: Cluster, command: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), **(env or {})}
    return subprocess.Popen(command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def proc_stats(pid: int) -> tuple[float, float]:
    """(CPU seconds so far, peak RSS in MiB) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    peak = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    return cpu, peak


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far of a process's main thread (an operator's event loop) and of the others."""
    found: Counter[str] = Counter()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = "main thread" if task.name == str(pid) else "other threads"
        found[name] += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return dict(found)


def cluster_cpu(cluster: Cluster) -> dict[str, float]:
    """CPU seconds so far of each control-plane process kwokctl started (its pid files)."""
    found = {}
    for pid_file in sorted((cluster.workdir / "clusters" / cluster.name / "pids").glob("*.pid")):
        try:
            found[pid_file.stem] = proc_stats(int(pid_file.read_text().strip()))[0]
        except (OSError, ValueError):
            continue
    return found


def cpu_text(before: dict[str, float], after: dict[str, float]) -> str:
    spent = {k: after[k] - before.get(k, 0.0) for k in after}
    return f"{sum(spent.values()):.1f} CPU-s (" + ", ".join(f"{k} {v:.1f}" for k, v in spent.items()) + ")"


def percentiles(values: list[float]) -> tuple[float, float]:
    """(p50, p99) in milliseconds of durations in seconds."""
    ordered = sorted(values)
    return statistics.median(ordered) * 1e3, ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1e3


def metric(text: str, name: str) -> float:
    """The sum over every label set of a Prometheus metric in ``text``."""
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


def _apiserver_samples(cluster: Cluster, name: str) -> list[tuple[dict[str, str], float]]:
    kube = cluster.kube
    text = kube.api.rest_client.pool_manager.request(
        "GET", kube.configuration.host + "/metrics", timeout=30
    ).data.decode()
    samples = []
    for line in text.splitlines():
        if line.startswith(name + "{"):
            pairs = (p.split("=", 1) for p in line[line.index("{") + 1 : line.rindex("}")].split(","))
            samples.append(({k: v.strip('"') for k, v in pairs}, float(line.split()[-1])))
    return samples


def apiserver_writes(cluster: Cluster, group: str, plural: str) -> Counter[str]:
    """Writes so far that an operator makes, by kind (``POST pods``, ``PATCH llmdeployments/status``),
    as the API server counts them: pods, Services and core Events created, and any write to the CRs
    of ``group``/``plural`` and their subresources (the benchmark's own writes are creates of CRs)."""
    found: Counter[str] = Counter()
    for labels, value in _apiserver_samples(cluster, "apiserver_request_total"):
        verb, resource, sub = (
            labels.get("verb", ""),
            labels.get("resource", ""),
            labels.get("subresource", ""),
        )
        own = labels.get("group") == group and resource == plural and verb in ("PATCH", "PUT", "UPDATE")
        if (verb, labels.get("group", ""), resource, sub) in OPERATOR_WRITES or own:
            found[f"{verb} {resource}{'/' + sub if sub else ''}"] += value
    return found


def all_writes(cluster: Cluster) -> Counter[str]:
    """Every write the API server has served so far, from any client, by kind (``POST core/pods``):
    the operator's and those its objects cause (the scheduler's bindings, KWOK's pod statuses, the
    endpoints controllers' writes for a Service, its ClusterIP's IPAddress)."""
    found: Counter[str] = Counter()
    for labels, value in _apiserver_samples(cluster, "apiserver_request_total"):
        if labels.get("verb") in ("POST", "PUT", "PATCH", "DELETE", "APPLY"):
            sub = labels.get("subresource", "")
            found[
                f"{labels['verb']} {labels.get('group') or 'core'}/{labels.get('resource')}{'/' + sub if sub else ''}"
            ] += value
    return found


def all_writes_text(found: dict[str, float], count: int = 6) -> str:
    """``found`` per CR, less the leases every component renews: the total and the biggest kinds."""
    found = {k: v for k, v in found.items() if "/leases" not in k}
    top = sorted(found.items(), key=lambda kv: -kv[1])[:count]
    return f"{sum(found.values()):.1f} per CR (" + ", ".join(f"{k} {v:.2f}" for k, v in top) + ", …)"


def per_cr(before: Counter[str], after: Counter[str], count: int) -> dict[str, float]:
    return {k: (after[k] - before[k]) / count for k in sorted(after) if after[k] > before[k]}


def writes_text(found: dict[str, float]) -> str:
    return (
        f"{sum(found.values()):.2f} API writes per CR ({', '.join(f'{k} {v:.2f}' for k, v in found.items())})"
    )


def pod_create_seconds(cluster: Cluster) -> tuple[float, float]:
    """(seconds, count) the API server has spent so far serving pod creates (``POST pods``, no
    subresource), from its own request-duration histogram: two readings give the mean server-side
    time of the creates between them."""
    total = {"_sum": 0.0, "_count": 0.0}
    for suffix in total:
        for labels, value in _apiserver_samples(cluster, "apiserver_request_duration_seconds" + suffix):
            if (labels.get("verb"), labels.get("resource"), labels.get("subresource", "")) == (
                "POST",
                "pods",
                "",
            ):
                total[suffix] += value
    return total["_sum"], total["_count"]


def mean_ms(before: tuple[float, float], after: tuple[float, float]) -> float:
    """Mean milliseconds per request between two :func:`pod_create_seconds` readings."""
    count = after[1] - before[1]
    return (after[0] - before[0]) / count * 1e3 if count else float("nan")


def apiserver_durations(cluster: Cluster, top: int = 10) -> list[str]:
    """The API server's mean time per write request so far, slowest in total first."""
    sums: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    for suffix, into in (("_sum", sums), ("_count", counts)):
        for labels, value in _apiserver_samples(cluster, "apiserver_request_duration_seconds" + suffix):
            if labels.get("verb") not in ("WATCH", "LIST", "GET"):
                sub = labels.get("subresource", "")
                into[f"{labels.get('verb')} {labels.get('resource')}{'/' + sub if sub else ''}"] += value
    ranked = sorted(counts, key=lambda k: -sums[k])[:top]
    return [f"{k}: {counts[k]:.0f} requests, mean {sums[k] / counts[k] * 1e3:.1f} ms" for k in ranked]
