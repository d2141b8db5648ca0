"""Planner scaling benchmark: planning time and memory against cluster size.

Clusters of 100, 1,000 and 5,000 nodes with 8 GPUs each (a deterministic mix of uniform
and mixed nodes), and as many LLMDeployments as nodes: half Ollama (1–3 models), half
vLLM (tensor parallel 1, 2 or 4). Deployments are planned one after another against one
cluster state (``Planner``), as ``gpupin plan`` and the operator's allocation step do.

Prints, per size: time per deployment, the cost of building the cluster state, the
one-shot ``plan()`` (state built from scratch, as a single reconcile would), and peak
memory (tracemalloc, in a separate pass so it does not distort the timings).

Run: ``make bench`` (or ``python benchmarks/plan_scaling.py [SIZES…]``).
"""

from __future__ import annotations

import os
import platform
import random
import statistics
import sys
import time
import tracemalloc

from gpupin.api.v1alpha1 import LLMDeployment
from gpupin.inventory import GPU, Inventory, NodeInventory
from gpupin.planner import Planner, plan

PRODUCTS = {
    "a100": ("NVIDIA A100-SXM4-80GB", 81920, "8.0"),
    "l4": ("NVIDIA L4", 23034, "8.9"),
    "t4": ("Tesla T4", 15360, "7.5"),
    "4090": ("NVIDIA GeForce RTX 4090", 24564, "8.9"),
    "3060": ("NVIDIA GeForce RTX 3060", 12288, "8.6"),
    "4070": ("NVIDIA GeForce RTX 4070", 12282, "8.9"),
    "2060": ("NVIDIA GeForce RTX 2060", 6144, "7.5"),
}
NODE_SHAPES = [
    ["a100"] * 8,
    ["l4"] * 8,
    ["t4"] * 4 + ["l4"] * 4,
    ["4090"] * 4 + ["3060"] * 4,
    ["4070", "2060"] * 4,
    ["4090", "4090", "3060", "3060", "4070", "4070", "2060", "2060"],
]
OLLAMA_MODELS = [
    "qwen2.5:14b",
    "llama3.1:8b",
    "nomic-embed-text",
    "qwen2.5:7b",
    "llama3.2:3b",
    "phi4:14b",
    "mistral:7b",
]
VLLM_MODELS = [
    ("Qwen/Qwen2.5-7B-Instruct", 8192),
    ("Qwen/Qwen2.5-3B-Instruct", 8192),
    ("meta-llama/Llama-3.1-8B-Instruct", 8192),
    ("microsoft/phi-4", 16384),
]


def cluster(nodes: int, rng: random.Random) -> Inventory:
    result = []
    for n in range(nodes):
        shape = NODE_SHAPES[rng.randrange(len(NODE_SHAPES))]
        gpus = []
        for i, key in enumerate(shape):
            name, mib, cc = PRODUCTS[key]
            gpus.append(
                GPU(index=i, uuid=f"GPU-{n:06d}-{i}", name=name, memory=mib * 2**20, compute_capability=cc)
            )
        result.append(NodeInventory(name=f"node-{n:05d}", gpus=gpus))
    return Inventory(nodes=result)


def deployments(count: int, rng: random.Random) -> list[LLMDeployment]:
    items = []
    for i in range(count):
        if i % 2 == 0:
            spec = {
                "engine": "ollama",
                "models": [{"name": m} for m in rng.sample(OLLAMA_MODELS, rng.randint(1, 3))],
                "replicas": rng.choice([1, 1, 2]),
            }
        else:
            model, context = rng.choice(VLLM_MODELS)
            spec = {
                "engine": "vllm",
                "models": [{"name": model}],
                "tensorParallelSize": rng.choice([1, 1, 2, 4]),
                "vllm": {"maxModelLen": context},
            }
        items.append(
            LLMDeployment.model_validate(
                {
                    "apiVersion": "gpupin.dev/v1alpha1",
                    "kind": "LLMDeployment",
                    "metadata": {"name": f"llm-{i:05d}", "namespace": f"team-{i % 7}"},
                    "spec": spec,
                }
            )
        )
    return items


def run(nodes: int, per_node: int = 1) -> dict[str, float]:
    rng = random.Random(nodes)
    inventory = cluster(nodes, rng)
    items = deployments(nodes * per_node, rng)

    started = time.perf_counter()
    planner = Planner(inventory)
    build_s = time.perf_counter() - started
    per_deployment = []
    placed = 0
    for item in items:
        t0 = time.perf_counter()
        result = planner.plan(item)
        per_deployment.append(time.perf_counter() - t0)
        placed += result.placed
    total_s = sum(per_deployment)

    # one reconcile's cost: build the state from the inventory and plan one deployment
    one_shot = []
    for item in items[:20]:
        t0 = time.perf_counter()
        plan(item, inventory)
        one_shot.append(time.perf_counter() - t0)

    tracemalloc.start()
    memory_planner = Planner(inventory)
    for item in items:
        memory_planner.plan(item)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    ordered = sorted(per_deployment)
    return {
        "nodes": nodes,
        "gpus": nodes * 8,
        "deployments": len(items),
        "placed": placed,
        "build_ms": build_s * 1e3,
        "mean_ms": total_s / len(items) * 1e3,
        "p99_ms": ordered[int(len(ordered) * 0.99) - 1] * 1e3,
        "one_shot_ms": statistics.median(one_shot) * 1e3,
        "peak_mib": peak / 2**20,
    }


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _print_row(row: dict[str, float], note: str = "") -> None:
    cells = [
        f"{row['nodes']:.0f}",
        f"{row['gpus']:.0f}",
        f"{row['deployments']:.0f}{note}",
        f"{row['placed']:.0f}",
        f"{row['build_ms']:.1f}",
        f"{row['mean_ms']:.3f}",
        f"{row['p99_ms']:.3f}",
        f"{row['one_shot_ms']:.1f}",
        f"{row['peak_mib']:.1f}",
    ]
    print(" | ".join(cells), flush=True)


def main(argv: list[str]) -> int:
    sizes = [int(a) for a in argv] or [100, 1000, 5000]
    print(f"gpupin planner benchmark — Python {platform.python_version()} on {_cpu()}, {os.cpu_count()} CPUs")
    header = (
        "nodes",
        "GPUs",
        "deploys",
        "placed",
        "state build ms",
        "plan ms/deploy (mean)",
        "p99 ms",
        "one-shot plan() ms",
        "peak MiB",
    )
    print(" | ".join(header))
    rows = []
    for size in sizes:
        row = run(size)
        rows.append(row)
        _print_row(row)
    # the same 1,000 nodes asked for 8× as many deployments: the cluster fills up and the
    # refusal path (which explains why, scanning the eligible GPUs) is measured too
    if not argv:
        row = run(1000, per_node=8)
        _print_row(row, " (8×)")
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        growth = (last["mean_ms"] / first["mean_ms"]) / (last["nodes"] / first["nodes"])
        print(
            f"per-deployment time grew {last['mean_ms'] / first['mean_ms']:.2f}× for {last['nodes'] / first['nodes']:.0f}× "
            f"the nodes (≤ 1.0 means no worse than linear: {growth:.2f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
