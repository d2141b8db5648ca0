"""Router benchmark: what ``gpupin router`` adds to a request, against calling the server directly.

Loopback only, bounded (about a minute). A real Ollama server (built for CPU by
``hack/build-engines.sh``, tiny random-weight models: tests/ollama_server.py) listens on the
host's loopback; ``gpupin router`` runs as its own process in front of it, as in a pod. In the
same run, alternating request by request (so a drift in the machine's speed moves both alike):

1. ``/api/embed`` of a tiny embedding model, one request at a time: latency direct and through
   the router, p50 and p99, and what the router adds;
2. ``/api/generate`` streamed (8 tokens), one at a time: time to the first chunk (TTFT) and to
   the last, direct and routed;
3. 64 streams at once, bursts alternating direct and routed (``--bursts``, 5 each): TTFT p50
   and p99 over every burst's streams.

Prints the figures and the added milliseconds beside the direct floor, and the router process's
own CPU time per request (user + system, from /proc: what sizes its pod's CPU request). Goal:
≤ 1 ms added at p50. Run: ``make bench-router`` (or ``python benchmarks/router_overhead.py [--requests N]``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from helpers import free_port  # noqa: E402
from ollama_server import OllamaServer, engine_problem, write_tiny_gguf  # noqa: E402


def _ms(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered) * 1e3, ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1e3


async def _embed(session: aiohttp.ClientSession, base: str) -> float:
    started = time.perf_counter()
    async with session.post(f"{base}/api/embed", json={"model": "embed:1b", "input": "hello"}) as answer:
        await answer.read()
        assert answer.status == 200, answer.status
    return time.perf_counter() - started


async def _stream(session: aiohttp.ClientSession, base: str) -> tuple[float, float]:
    """(seconds to the first chunk, seconds to the end) of a streamed generation."""
    body = {"model": "chat:1b", "prompt": "hello", "options": {"num_predict": 8, "temperature": 0}}
    started = time.perf_counter()
    first = 0.0
    async with session.post(f"{base}/api/generate", json=body) as answer:
        assert answer.status == 200, answer.status
        async for _ in answer.content.iter_any():
            first = first or time.perf_counter() - started
    return first, time.perf_counter() - started


async def _alternating(
    count: int, call: Callable[[str], Awaitable[object]], direct: str, routed: str
) -> dict[str, list[object]]:
    results: dict[str, list[object]] = {"direct": [], "routed": []}
    for i in range(count):
        order = (
            [("direct", direct), ("routed", routed)] if i % 2 else [("routed", routed), ("direct", direct)]
        )
        for name, base in order:
            results[name].append(await call(base))
    return results


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (``/proc/PID/stat`` fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(direct: str, routed: str, requests: int, bursts: int, router_pid: int) -> None:
    cpu_before = _cpu_seconds(router_pid)
    async with aiohttp.ClientSession() as session:
        for base in (direct, routed):  # warm: models loaded, connections open
            await _embed(session, base)
            await _stream(session, base)
        embeds = await _alternating(requests, lambda b: _embed(session, b), direct, routed)
        streams = await _alternating(requests // 3, lambda b: _stream(session, b), direct, routed)
    rows = []
    d50, d99 = _ms([float(v) for v in embeds["direct"]])  # type: ignore[arg-type]
    r50, r99 = _ms([float(v) for v in embeds["routed"]])  # type: ignore[arg-type]
    rows.append(("/api/embed, one at a time", d50, d99, r50, r99))
    for index, label in ((0, "stream TTFT, one at a time"), (1, "stream to the end, one at a time")):
        d50, d99 = _ms([s[index] for s in streams["direct"]])  # type: ignore[index]
        r50, r99 = _ms([s[index] for s in streams["routed"]])  # type: ignore[index]
        rows.append((label, d50, d99, r50, r99))
    one_by_one = requests + requests // 3 + 2  # routed requests so far, warm-up included
    cpu_one_by_one = _cpu_seconds(router_pid) - cpu_before
    ttft: dict[str, list[float]] = {"direct": [], "routed": []}
    cpu_before = _cpu_seconds(router_pid)
    for i in range(bursts):
        for label in ("direct", "routed") if i % 2 else ("routed", "direct"):
            base = direct if label == "direct" else routed
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
                burst = await asyncio.gather(*(_stream(session, base) for _ in range(64)))
            ttft[label] += [b[0] for b in burst]
    cpu_bursts = _cpu_seconds(router_pid) - cpu_before
    d50, d99 = _ms(ttft["direct"])
    r50, r99 = _ms(ttft["routed"])
    rows.append((f"stream TTFT, 64 at once ({bursts} bursts)", d50, d99, r50, r99))
    print("| | direct p50 | direct p99 | routed p50 | routed p99 | added p50 | added p99 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, d50, d99, r50, r99 in rows:
        print(f"| {label} | {d50:.2f} ms | {d99:.2f} ms | {r50:.2f} ms | {r99:.2f} ms | "
              f"**{r50 - d50:+.2f} ms** | {r99 - d99:+.2f} ms |")  # fmt: skip
    print(
        f"router CPU per request: {cpu_one_by_one / one_by_one * 1e3:.2f} ms one at a time, "
        f"{cpu_bursts / (64 * bursts) * 1e3:.2f} ms per stream in the bursts (8 tokens each)"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--requests", type=int, default=300, help="requests per way for the one-at-a-time rows"
    )
    parser.add_argument("--bursts", type=int, default=5, help="bursts of 64 streams per way")
    args = parser.parse_args(argv)
    problem = engine_problem()
    if problem:
        print(f"router benchmark: {problem}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="gpupin-router-bench-") as tmp:
        folder = Path(tmp)
        port = free_port()
        server = OllamaServer({"OLLAMA_HOST": f"127.0.0.1:{port}", "OLLAMA_MODELS": "/models",
                               "OLLAMA_KEEP_ALIVE": "10m", "OLLAMA_NUM_PARALLEL": "4"}, host_network=True)  # fmt: skip
        router: subprocess.Popen[bytes] | None = None
        try:
            server.start()
            server.wait_until_up(60)
            for name, embedding in (("chat:1b", False), ("embed:1b", True)):
                write_tiny_gguf(folder / f"{name[:-3]}.gguf", embedding=embedding)
                server.create_model(name, folder / f"{name[:-3]}.gguf")
            routes = folder / "routes.yaml"
            routes.write_text(json.dumps({"engine": "ollama", "backends": [
                {"address": f"127.0.0.1:{port}", "models": ["chat:1b", "embed:1b"]}]}))  # fmt: skip
            router_port, management = free_port(), free_port()
            router = subprocess.Popen(
                [sys.executable, "-m", "gpupin", "router", "--routes", str(routes), "--port", str(router_port),
                 "--management-port", str(management), "--log-level", "WARNING"],
                env={**os.environ, "PYTHONPATH": str(REPO / "operator")},
            )  # fmt: skip
            deadline = time.monotonic() + 30
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", router_port), timeout=1):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            print(f"router benchmark — loopback, real Ollama (tiny models, CPU), {os.cpu_count()} CPUs; "
                  f"{args.requests} requests per way, alternating")  # fmt: skip
            asyncio.run(measure(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{router_port}",
                                args.requests, args.bursts, router.pid))  # fmt: skip
        finally:
            if router is not None:
                router.terminate()
                router.wait(10)
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
