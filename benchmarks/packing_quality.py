"""Packing benchmark: how many deployments gpupin places against the most any layout can place.

60 seeded mixed fleets (``tests/packing_model.py``: 5–40 nodes of 13 shapes from RTX 2060 to
H100, 10–150 deployments, about half Ollama with 1–3 models and half vLLM with tensor parallel
1–8, fixed sizes via ``models[].vram``). For each fleet, in the same run:

- the optimum: OR-Tools CP-SAT maximising deployments placed, under the rules gpupin enforces,
  started from gpupin's layout (a hint), with a time limit; where it does not prove optimality
  the ratio is taken against its proven upper bound, so the figure can only understate gpupin;
- ``gpupin plan``: :func:`gpupin.packing.plan_all` on the file as listed and in two shuffled
  orders (the placed count must not change with the order; the lowest is reported);
- first come, first served: :meth:`Planner.plan` one deployment after another in file order, as
  the operator places deployments as they arrive (and as ``gpupin plan`` did before);
- every layout is checked against the rules independently (``violations``).

Prints the mean and worst ratio to the optimum, the plan time, and the fleets furthest from it.

Run: ``make bench-packing`` (or ``python benchmarks/packing_quality.py [--fleets N]
[--time-limit S] [--workers W]``). Needs OR-Tools (in the test extras).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from gpupin.packing import plan_all  # noqa: E402
from gpupin.planner import Planner  # noqa: E402

from packing_model import exact, fleet, shuffled, violations  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fleets", type=int, default=60)
    parser.add_argument("--time-limit", type=float, default=20.0, help="CP-SAT seconds per fleet")
    parser.add_argument("--workers", type=int, default=2, help="CP-SAT search workers")
    args = parser.parse_args()
    print(
        f"packing: {args.fleets} fleets, CP-SAT {args.time_limit:g} s × {args.workers} workers per fleet; "
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}"
    )
    rows = []
    for seed in range(args.fleets):
        case = fleet(seed)
        started = time.perf_counter()
        planner = Planner(case.inventory)
        sequential = [planner.plan(item) for item in case.deployments]
        first_come = time.perf_counter() - started
        counts = []
        seconds = []
        layouts = []
        for order in range(3):
            items = list(case.deployments) if order == 0 else shuffled(case.deployments, order)
            started = time.perf_counter()
            plans = plan_all(Planner(case.inventory), items)
            seconds.append(time.perf_counter() - started)
            counts.append(sum(p.placed for p in plans))
            layouts.append(plans)
        for plans in [sequential, *layouts]:
            broken = violations(case, plans)
            if broken:
                print(f"fleet {seed}: RULE BROKEN: {broken[:3]}")
                return 1
        optimum = exact(case, args.time_limit, args.workers, hint=layouts[0])
        best = max(optimum.placed, max(counts))
        bound = max(optimum.bound, best)
        rows.append(
            {
                "seed": seed,
                "nodes": len(case.inventory.nodes),
                "gpus": sum(len(n.gpus) for n in case.inventory.nodes),
                "deployments": len(case.deployments),
                "optimum": best,
                "bound": bound,
                "proven": optimum.optimal or best == bound,
                "gpupin": min(counts),
                "orders_agree": len(set(counts)) == 1,
                "first_come": sum(p.placed for p in sequential),
                "plan_s": statistics.median(seconds),
                "first_come_s": first_come,
                "solver_s": optimum.seconds,
            }
        )
        row = rows[-1]
        print(
            f"  fleet {seed:2d}: {row['nodes']:2d} nodes {row['gpus']:3d} GPUs {row['deployments']:3d} deployments"
            f" | optimum {best:3d}{'' if row['proven'] else f' (bound {bound})'}"
            f" | gpupin {row['gpupin']:3d}{'' if row['orders_agree'] else f' (orders: {counts})'}"
            f" {row['gpupin'] / bound:.3f} in {row['plan_s'] * 1e3:.0f} ms"
            f" | first come {row['first_come']:3d} {row['first_come'] / bound:.3f}",
            flush=True,
        )
    _summary(rows)
    return 0


def _summary(rows: list[dict[str, float]]) -> None:
    ratio = [r["gpupin"] / r["bound"] for r in rows]
    first = [r["first_come"] / r["bound"] for r in rows]
    proven = sum(1 for r in rows if r["proven"])
    print()
    print(f"fleets: {len(rows)} (optimum proven on {proven}; elsewhere against CP-SAT's upper bound)")
    print("| | mean of optimum | worst | plan time (median, max) |")
    print("|---|---:|---:|---:|")
    print(
        f"| gpupin plan (plan_all), any order | {statistics.mean(ratio):.3f} | {min(ratio):.3f} | "
        f"{statistics.median(r['plan_s'] for r in rows) * 1e3:.0f} ms, {max(r['plan_s'] for r in rows) * 1e3:.0f} ms |"
    )
    print(
        f"| first come, first served (file order) | {statistics.mean(first):.3f} | {min(first):.3f} | "
        f"{statistics.median(r['first_come_s'] for r in rows) * 1e3:.0f} ms, "
        f"{max(r['first_come_s'] for r in rows) * 1e3:.0f} ms |"
    )
    print(
        f"| optimum: CP-SAT | 1 | 1 | {statistics.median(r['solver_s'] for r in rows):.1f} s, "
        f"{max(r['solver_s'] for r in rows):.1f} s |"
    )
    if not all(r["orders_agree"] for r in rows):
        print("input order changed the count on some fleets (see above)")
    worst = sorted(rows, key=lambda r: r["gpupin"] / r["bound"])[:5]
    print(
        "furthest from the optimum: "
        + ", ".join(f"fleet {r['seed']} ({r['gpupin']}/{r['bound']})" for r in worst)
    )


if __name__ == "__main__":
    sys.exit(main())
