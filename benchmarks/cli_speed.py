"""CLI speed benchmark: ``gpupin plan`` end to end, against libyaml merely parsing its input.

Writes (seeded, into a temporary directory) an inventory of 1,000 nodes × 8 GPUs (the node
shapes of ``plan_scaling.py``: uniform and mixed nodes of seven GPU kinds) and a file of 3,000
LLMDeployments (half Ollama with 1–3 models of gpupin's bundled model data, half vLLM with
catalog models or a fixed ``vram``, tensor parallel 1/2/4), so that nothing is read online.

Then, in the same run:

- the floor: libyaml parsing the two files (``yaml.load_all`` with ``yaml.CSafeLoader``, the
  file's bytes read included), in-process, no validation, no planning;
- ``gpupin plan -f deployments.yaml --inventory inventory.yaml -o json|yaml|table`` as a
  subprocess (``python -m gpupin``, interpreter start-up and imports included), with
  ``PYTHONUNBUFFERED=1`` as the project's image sets it and stdout to /dev/null: wall seconds,
  and CPU seconds (user + system, from ``getrusage(RUSAGE_CHILDREN)``), and each one's ratio to
  the floor's (the median of each round's ratio to that round's floor);
- where the time goes, in-process (``gpupin.cli.main`` with stdout an unbuffered /dev/null like
  the subprocess's): YAML parsing (``gpupin.safeyaml.load_all``), validating the parsed data into
  deployments and an inventory, planning (``Planner.plan``), rendering manifests (``render``),
  and the rest (mostly writing the output);
- writing the output alone, each way: ``-o json``'s indented text against ``json.dumps`` with and
  without an indent, and ``-o yaml``'s.

Each figure is the median of ``--runs`` runs (default 3), taken in rounds (the floor, then each
output) so that a drift in the machine's speed moves the floor and the rest alike. The machine's other work moves the
figures; the floor, measured in the same run, is what the ratios are against.

Run: ``make bench-cli`` (or ``python benchmarks/cli_speed.py [--runs N] [--nodes N] [--deployments N]``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
from plan_scaling import NODE_SHAPES, OLLAMA_MODELS, PRODUCTS, VLLM_MODELS, _cpu

FORMATS = ("json", "yaml", "table")


def inventory_text(nodes: int, rng: random.Random) -> str:
    """An inventory file (``nodes: [...]``) as a person or the agent's ``-o yaml`` writes it."""
    data = []
    for n in range(nodes):
        shape = NODE_SHAPES[rng.randrange(len(NODE_SHAPES))]
        gpus = []
        for i, key in enumerate(shape):
            name, mib, cc = PRODUCTS[key]
            gpus.append(
                {
                    "index": i,
                    "uuid": f"GPU-{n:08x}-{i:04x}-4000-8000-{rng.getrandbits(48):012x}",
                    "name": name,
                    "memory": f"{mib}Mi",
                    "computeCapability": cc,
                    "pciBusId": f"00000000:{i + 1:02x}:00.0",
                }
            )
        data.append({"name": f"node-{n:05d}", "gpus": gpus})
    return yaml.dump({"nodes": data}, Dumper=yaml.CSafeDumper, sort_keys=False, width=1000)


def deployments_text(count: int, rng: random.Random) -> str:
    """``count`` LLMDeployments, one YAML document each; every model's size is known without a
    network (gpupin's bundled model data, or ``vram``)."""
    documents = []
    for i in range(count):
        spec: dict[str, Any]
        if i % 2 == 0:
            spec = {
                "engine": "ollama",
                "models": [{"name": m} for m in rng.sample(OLLAMA_MODELS, rng.randint(1, 3))],
                "replicas": rng.choice([1, 1, 2]),
            }
        elif i % 6 == 1:  # a model gpupin has no data on, sized by hand
            spec = {
                "engine": "vllm",
                "models": [
                    {"name": f"example/private-model-{i % 11}", "vram": f"{rng.choice([9, 14, 20])}Gi"}
                ],
            }
        else:
            model, context = rng.choice(VLLM_MODELS)
            spec = {
                "engine": "vllm",
                "models": [{"name": model}],
                "tensorParallelSize": rng.choice([1, 1, 2, 4]),
                "vllm": {"maxModelLen": context},
            }
        documents.append(
            {
                "apiVersion": "gpupin.dev/v1alpha1",
                "kind": "LLMDeployment",
                "metadata": {"name": f"llm-{i:05d}", "namespace": f"team-{i % 7}"},
                "spec": spec,
            }
        )
    return yaml.dump_all(documents, Dumper=yaml.CSafeDumper, sort_keys=False, width=1000)


def floor(paths: list[Path]) -> tuple[float, float]:
    """Wall and CPU seconds for libyaml to read and parse the files into Python data."""
    wall, cpu = time.perf_counter(), time.process_time()
    for path in paths:
        with path.open("rb") as file:
            for _ in yaml.load_all(file.read(), Loader=yaml.CSafeLoader):
                pass
    return time.perf_counter() - wall, time.process_time() - cpu


def plan_args(deployments: Path, inventory: Path, output: str) -> list[str]:
    return ["plan", "-f", str(deployments), "--inventory", str(inventory), "-o", output]


def subprocess_run(args: list[str]) -> tuple[float, float, int]:
    """Wall and CPU seconds (user + system) of ``python -m gpupin ARGS``, and its exit status."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", GPUPIN_MODEL_METADATA="offline")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    with open(os.devnull, "w") as devnull:
        code = subprocess.run(
            [sys.executable, "-m", "gpupin", *args], stdout=devnull, stderr=subprocess.PIPE, env=env
        ).returncode
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, code


class _Stages:
    """CPU seconds per stage, each stage's own: time in a stage timed inside another (the YAML
    parsing inside loading) counts for the inner one only."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._stack: list[str] = []
        self._since = time.process_time()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self._switch()
        self._stack.append(name)
        try:
            yield
        finally:
            self._switch()
            self._stack.pop()

    def _switch(self) -> None:
        now = time.process_time()
        if self._stack:
            name = self._stack[-1]
            self.seconds[name] = self.seconds.get(name, 0.0) + now - self._since
        self._since = now

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.stage(name):
                return function(*args, **kwargs)

        return timed


def breakdown(args: list[str]) -> dict[str, float]:
    """CPU seconds per stage of ``gpupin.cli.main(args)`` in this process, stdout an unbuffered
    /dev/null (each write a system call, as with PYTHONUNBUFFERED=1). Stages are timed by wrapping
    the functions wherever gpupin's modules hold them; "other" is the rest: arguments, policy,
    and writing the output."""
    import gpupin.cli
    import gpupin.loading
    import gpupin.planner
    import gpupin.render
    import gpupin.safeyaml

    stages = _Stages()
    targets = {
        "load_all": (gpupin.safeyaml.load_all, "yaml"),
        "load_deployments": (gpupin.loading.load_deployments, "load"),
        "load_inventory": (gpupin.loading.load_inventory, "load"),
        "render": (gpupin.render.render, "render"),
    }
    patched: list[tuple[Any, str, Any]] = []
    for module in [m for name, m in sys.modules.items() if name.startswith("gpupin")]:
        for attribute, (function, stage) in targets.items():
            if getattr(module, attribute, None) is function:
                patched.append((module, attribute, function))
                setattr(module, attribute, stages.wrap(stage, function))
    plan = gpupin.planner.Planner.plan
    gpupin.planner.Planner.plan = stages.wrap("plan", plan)  # type: ignore[method-assign]
    stdout = sys.stdout
    sys.stdout = io.TextIOWrapper(io.FileIO(os.devnull, "w"), write_through=True)
    os.environ["GPUPIN_MODEL_METADATA"] = "offline"
    try:
        with stages.stage("other"):
            gpupin.cli.main(args)
    finally:
        sys.stdout.close()
        sys.stdout = stdout
        gpupin.planner.Planner.plan = plan  # type: ignore[method-assign]
        for module, attribute, function in patched:
            setattr(module, attribute, function)
    result = {name: stages.seconds.get(name, 0.0) for name in ("yaml", "load", "plan", "render", "other")}
    result["total"] = sum(result.values())
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per figure; the median is shown")
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--deployments", type=int, default=3000)
    args = parser.parse_args(argv)

    import gpupin

    print(
        f"gpupin CLI benchmark — Python {platform.python_version()} on {_cpu()}, {os.cpu_count()} CPUs; "
        f"gpupin from {Path(gpupin.__file__).parent}; libyaml {yaml.__with_libyaml__}"
    )
    with tempfile.TemporaryDirectory(prefix="gpupin-bench-") as tmp:
        rng = random.Random(15)
        inventory = Path(tmp, "inventory.yaml")
        inventory.write_text(inventory_text(args.nodes, rng))
        deployments = Path(tmp, "deployments.yaml")
        deployments.write_text(deployments_text(args.deployments, rng))
        print(
            f"input: {args.nodes:,} nodes × 8 GPUs ({inventory.stat().st_size / 2**20:.1f} MiB), "
            f"{args.deployments:,} deployments ({deployments.stat().st_size / 2**20:.1f} MiB); "
            f"{args.runs} runs each, medians"
        )

        # Round after round (the floor, then each output), so that a machine whose speed drifts (a
        # shared VM) moves the floor and what is measured against it alike.
        floors: list[tuple[float, float]] = []
        runs: dict[str, list[tuple[float, float, int]]] = {output: [] for output in FORMATS}
        for _ in range(args.runs):
            floors.append(floor([inventory, deployments]))
            for output in FORMATS:
                runs[output].append(subprocess_run(plan_args(deployments, inventory, output)))
        floor_wall = statistics.median(w for w, _ in floors)
        floor_cpu = statistics.median(c for _, c in floors)
        print()
        print("| | wall s | CPU s | wall ÷ floor | CPU ÷ floor | exit |")
        print("|---|---:|---:|---:|---:|---:|")
        print(f"| floor: libyaml parses both files | {floor_wall:.2f} | {floor_cpu:.2f} | 1.0× | 1.0× | |")
        for output in FORMATS:
            wall = statistics.median(w for w, _, _ in runs[output])
            cpu = statistics.median(c for _, c, _ in runs[output])
            codes = sorted({c for _, _, c in runs[output]})
            # each round's ratio to that round's floor, the median of those: a pair measured
            # minutes apart on a drifting machine says less than one measured together
            wall_ratio = statistics.median(r[0] / f[0] for r, f in zip(runs[output], floors, strict=True))
            cpu_ratio = statistics.median(r[1] / f[1] for r, f in zip(runs[output], floors, strict=True))
            print(
                f"| `gpupin plan -o {output}` | {wall:.2f} | {cpu:.2f} | {wall_ratio:.1f}× | "
                f"{cpu_ratio:.1f}× | {','.join(map(str, codes))} |",
                flush=True,
            )

        print()
        print("in-process CPU seconds by stage (gpupin.cli.main; start-up and imports not included):")
        print("| output | YAML parse | validate | plan | render | output and the rest | total |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        breakdown(plan_args(deployments, inventory, "json"))  # warm-up: lazy imports, the model data
        for output in FORMATS:
            stages = [breakdown(plan_args(deployments, inventory, output)) for _ in range(args.runs)]
            cells = [
                f"{statistics.median(s[k] for s in stages):.2f}"
                for k in ("yaml", "load", "plan", "render", "other", "total")
            ]
            print(f"| `-o {output}` | {' | '.join(cells)} |", flush=True)
        writers(deployments, inventory, args.runs)
    return 0


def writers(deployments: Path, inventory: Path, runs: int) -> None:
    """CPU seconds to turn the same plans and manifests into text, by each way of writing it."""
    try:
        from gpupin import planoutput
    except ImportError:  # gpupin before the output module: nothing to compare
        return
    from gpupin.loading import load_deployments, load_inventory
    from gpupin.planner import Planner
    from gpupin.render import RenderConfig, render

    items = load_deployments([deployments])
    planner = Planner(load_inventory(inventory)[0])
    results = [(item, planner.plan(item)) for item in items]
    manifests = [obj for item, result in results for obj in render(item, result, RenderConfig())]
    data = planoutput.plan_json(results, manifests)
    ways: dict[str, Callable[[], object]] = {
        "`-o json`: json_text (orjson, indent 2)": lambda: planoutput.json_text(data),
        "json.dumps(indent=2), the same text": lambda: json.dumps(data, indent=2),
        "json.dumps(), no indent": lambda: json.dumps(data),
        "`-o yaml`: yaml_text (libyaml, no anchors)": lambda: planoutput.yaml_text(manifests),
    }
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(runs):
        for name, write in ways.items():
            started = time.process_time()
            write()
            seconds[name].append(time.process_time() - started)
    print()
    print(f"writing the output alone ({len(manifests):,} manifests), CPU seconds:")
    print("| | CPU s |")
    print("|---|---:|")
    for name, values in seconds.items():
        print(f"| {name} | {statistics.median(values):.2f} |")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
