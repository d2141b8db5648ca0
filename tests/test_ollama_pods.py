"""Every Ollama pod shape gpupin renders, run on the real Ollama server.

The server is the real ``ollama`` at the pinned version, built for CPU from its Go module by
``hack/build-engines.sh`` (no GPU here: Ollama serves from the CPU, which is exactly what the
``requireGPU`` readiness rule must catch). Each test renders pods with the planner and
renderer, then plays the kubelet (``tests/ollama_server.py``): the init container's command
with its env, the server with the container's args and env, the postStart hook and the readiness
probe as exec commands (stdin /dev/null, the probe's timeout), in namespaces of their own so the
pod's literal ``0.0.0.0:11434`` and ``/models`` are used. Models are tiny GGUF files made in the
test (``write_tiny_gguf``), created under the names the pods use.

Aspects: the four start-up failures of the old pods stay fixed (postStart never fails, loading
sends no prompt, embedding models load, one missing model does not crash-loop the container);
readiness is false before loading and true after, and false *because* of the CPU when GPUs are
required, with Ollama's own figures that the operator reports; models stay loaded (keep-alive
-1); a model pull that fails names the model; every pinning mode and pod shape (several models
with an embedding model, a model spanning GPUs) behaves the same; every container, hook and probe
runs as the pod's non-root user (uid 1000, with the fsGroup the kubelet gives the volume), which
needs the HOME the pod sets.
"""

from __future__ import annotations

import re
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gpupin import reasons
from gpupin.api.v1alpha1 import LLMDeployment, ModelRef
from gpupin.controller.diagnose import diagnose
from gpupin.controller.podstate import placement_of
from gpupin.engines import ENGINES
from gpupin.engines.ollama_scripts import PRELOAD_LOG, ollama_names, parse_readiness
from gpupin.inventory import Inventory
from gpupin.pinning import PINNING_MODES, PinningModeName
from gpupin.placement import Placement
from gpupin.planner import plan
from gpupin.render import RenderConfig, render

from helpers import A10, A100_80, deployment, inventory, models, node, workstation
from ollama_server import OllamaServer, engine_problem, write_tiny_gguf

EMBEDDING_MODELS = {"nomic-embed-text"}
SEED = deployment(
    "assistant", engine="ollama", models=models("qwen2.5:14b", "llama3.1:8b", "nomic-embed-text")
)
HOOK_TIMEOUT = 30.0
"""Kubernetes gives postStart no timeout; the hook returns at once, so 30 s is generous."""
LOAD_TIMEOUT = 90.0


@pytest.fixture(scope="module", autouse=True)
def _engine() -> None:
    problem = engine_problem()
    if problem:
        pytest.skip(problem)


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """A tiny GGUF per model name: distinct weights (Ollama keys loaded models by their blob, so
    two names with one blob would be one model), an embedding model for embedding names."""
    folder = tmp_path_factory.mktemp("gguf")

    def for_name(name: str) -> Path:
        path = folder / f"{zlib.crc32(name.encode()):08x}.gguf"
        if not path.exists():
            embedding = name.split(":")[0] in EMBEDDING_MODELS
            write_tiny_gguf(path, embedding=embedding, seed=zlib.crc32(name.encode()))
        return path

    return for_name


# --- playing the kubelet ------------------------------------------------------------------------


def _pods(item: LLMDeployment, cluster: Inventory, config: RenderConfig) -> list[dict[str, Any]]:
    result = plan(item, cluster, pinning=config.pinning)
    assert result.placed, result.message
    return [o for o in render(item, result, config) if o["kind"] == "Pod"]


def _env(container: dict[str, Any]) -> dict[str, str]:
    assert all("valueFrom" not in e for e in container["env"]), "these pods take no env from the cluster"
    return {e["name"]: e["value"] for e in container["env"]}


def _exec(server: OllamaServer, handler: dict[str, Any], timeout: float) -> Any:
    return server.exec(handler["exec"]["command"], timeout=timeout)


def _probe(server: OllamaServer, container: dict[str, Any]) -> Any:
    probe = container["readinessProbe"]
    return _exec(server, probe, float(probe.get("timeoutSeconds", 1)))


def _seed_volume(models_dir: Path, names: list[str], ggufs: Callable[[str], Path]) -> None:
    """What an earlier pull left in the volume: the models, created in a throwaway server."""
    with OllamaServer(
        {"OLLAMA_HOST": "127.0.0.1:11434", "OLLAMA_MODELS": "/models"}, models_dir=models_dir
    ) as s:
        s.wait_until_up(60)
        for name in names:
            s.create_model(name, ggufs(name))


def _run_init(pod: dict[str, Any], models_dir: Path) -> tuple[int, str]:
    """The pull-models init container to completion: (exit code, its log)."""
    (init,) = pod["spec"]["initContainers"]
    runner = OllamaServer(
        _env(init), command=init["command"], models_dir=models_dir, security=pod["spec"]["securityContext"]
    )
    runner.start()
    deadline = time.monotonic() + 120
    while runner.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    code = runner.poll()
    runner.stop()
    assert code is not None, "the init container did not finish in 120 s"
    return code, runner.log


@pytest.fixture
def started(request: pytest.FixtureRequest) -> Iterator[list[OllamaServer]]:
    servers: list[OllamaServer] = []
    yield servers
    for server in servers:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(f"--- server log ---\n{server.log[-3000:]}")
        server.stop()


def _start_server(pod: dict[str, Any], models_dir: Path, started: list[OllamaServer]) -> OllamaServer:
    (container,) = pod["spec"]["containers"]
    # The image's ENTRYPOINT is /bin/ollama; the pod gives its args.
    security = pod["spec"]["securityContext"]
    server = OllamaServer(
        _env(container), command=["ollama", *container["args"]], models_dir=models_dir, security=security
    )
    started.append(server)
    server.start()
    server.wait_until_up(60)
    assert _uid(server.pid) == security["runAsUser"] != 0, "the server runs as the pod's user, not root"
    for probe in ("startupProbe", "livenessProbe"):
        status, _ = server.api("GET", container[probe]["httpGet"]["path"])
        assert status == 200, f"{probe} would fail"
    return server


def _uid(pid: int) -> int:
    """The real uid of a host process."""
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("Uid:"))
    return int(line.split()[1])


def _hooked(
    pod: dict[str, Any],
    volume: Path,
    seeded: list[str],
    ggufs: Callable[[str], Path],
    started: list[OllamaServer],
) -> tuple[OllamaServer, dict[str, Any]]:
    """The server of ``pod`` over a volume holding ``seeded`` models, after its postStart hook."""
    _seed_volume(volume, seeded, ggufs)
    server = _start_server(pod, volume, started)
    (container,) = pod["spec"]["containers"]
    assert _exec(server, container["lifecycle"]["postStart"], HOOK_TIMEOUT).returncode == 0
    return server, container


def _wait_ready(server: OllamaServer, container: dict[str, Any]) -> Any:
    deadline = time.monotonic() + LOAD_TIMEOUT
    while True:
        result = _probe(server, container)
        if result.returncode == 0 or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


def _preload_log(server: OllamaServer) -> list[str]:
    text = (server.tmp_dir / Path(PRELOAD_LOG).name).read_text()
    return text.splitlines()


def _serve_pod(
    pod: dict[str, Any], tmp_path: Path, ggufs: Callable[[str], Path], started: list[OllamaServer]
) -> OllamaServer:
    """A pod from volume to Ready: init container, server, readiness false, postStart, Ready."""
    (container,) = pod["spec"]["containers"]
    names = _placement_models(pod)
    volume = tmp_path / pod["metadata"]["name"]
    _seed_volume(volume, names, ggufs)
    code, log = _run_init(pod, volume)
    assert code == 0, log
    assert "using the copy in the cache" in log, "offline: the pull fails and the cached model is used"

    server = _start_server(pod, volume, started)
    before = _probe(server, container)
    assert before.returncode != 0, "Ready before any model is loaded"
    reports = parse_readiness(before.stdout)
    assert reports is not None and [(r.state, r.detail) for r in reports] == [
        ("pod", "the postStart hook has not run (no /tmp/gpupin-preload.log)")
    ], before.stdout

    began = time.monotonic()
    hook = _exec(server, container["lifecycle"]["postStart"], HOOK_TIMEOUT)
    assert hook.returncode == 0 and not hook.timed_out, hook.stdout + hook.stderr
    assert time.monotonic() - began < 5, "the hook must return at once: the kubelet waits for it"

    ready = _wait_ready(server, container)
    assert ready.returncode == 0, f"not Ready after {LOAD_TIMEOUT} s: {ready.stdout}"
    return server


def _placement(pod: dict[str, Any]) -> Placement:
    placement = placement_of(pod)
    assert placement is not None, "every rendered pod carries its placement"
    return placement


def _placement_models(pod: dict[str, Any]) -> list[str]:
    return list(_placement(pod).models)


def _assert_loaded_and_kept(server: OllamaServer, names: list[str]) -> None:
    status, ps = server.api("GET", "/api/ps")
    assert status == 200
    loaded = {m["name"]: m for m in ps["models"]}
    assert set(loaded) == set(ollama_names(names))
    for model in loaded.values():
        expires = datetime.fromisoformat(model["expires_at"].replace("Z", "+00:00"))
        assert expires.year > datetime.now(UTC).year + 100, f"{model['name']} will unload at {expires}"
    assert _preload_log(server) == [
        line for m in ollama_names(names) for line in (f"{m} loading", f"{m} loaded")
    ]


# --- the pods -----------------------------------------------------------------------------------


CPU_OK = RenderConfig(require_gpu=False)


def test_seed_pods_load_every_model_without_generating_and_become_ready(
    tmp_path: Path, ggufs: Callable[[str], Path], started: list[OllamaServer]
) -> None:
    """The seed's three models on its workstation: a pod with a chat and an embedding model (the
    old hook failed on both) and a pod with one chat model."""
    pods = _pods(SEED, workstation(), CPU_OK)
    assert sorted(len(_placement_models(p)) for p in pods) == [1, 2]
    for pod in pods:
        names = _placement_models(pod)
        server = _serve_pod(pod, tmp_path, ggufs, started)
        _assert_loaded_and_kept(server, names)
        status, answer = server.api("POST", "/api/embed", {"model": "nomic-embed-text", "input": "hello"})
        if "nomic-embed-text" in names:
            assert status == 200 and len(answer["embeddings"][0]) == 64, "the embedding model serves"
        server.stop()


def test_the_pod_runs_as_its_non_root_user_only_with_the_home_it_is_given(
    tmp_path: Path, ggufs: Callable[[str], Path], started: list[OllamaServer]
) -> None:
    """Ollama pods run as uid 1000 (runAsNonRoot) with HOME=/tmp: a model pulled into the volume is
    written by that user, and the server starts. The control: the same container with a HOME the
    user cannot write (the runtime gives a uid the image has no entry for HOME=/) does not start,
    as ``ollama serve`` writes its key pair there first."""
    (pod, *_) = _pods(SEED, workstation(), CPU_OK)
    security = pod["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == security["fsGroup"] == 1000
    server = _serve_pod(pod, tmp_path, ggufs, started)
    server.create_model("gpupin-written-by-the-pod:latest", ggufs("gpupin-written-by-the-pod"))
    blobs = list((server.models_dir / "blobs").iterdir())
    assert {b.stat().st_uid for b in blobs} >= {1000}, "the pod's user writes the cache"
    server.stop()

    (container,) = pod["spec"]["containers"]
    env = {**_env(container), "HOME": "/gpupin-home"}  # a folder of root's, as / is
    homeless = OllamaServer(
        env, command=["ollama", *container["args"]], models_dir=tmp_path / "homeless", security=security
    )
    started.append(homeless)
    homeless.start()
    deadline = time.monotonic() + 30
    while homeless.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert homeless.poll() not in (None, 0), homeless.log[-1000:]
    assert "could not create directory mkdir /gpupin-home/.ollama: permission denied" in homeless.log


@pytest.mark.parametrize("pinning", PINNING_MODES)
def test_every_pinning_mode_serves(
    pinning: PinningModeName, tmp_path: Path, ggufs: Callable[[str], Path], started: list[OllamaServer]
) -> None:
    """Only the pinning env differs between modes (UUIDs, or nothing for dra and device-plugin)."""
    config = RenderConfig(pinning=pinning, require_gpu=False)
    (pod, *_) = _pods(SEED, inventory(node("n", A10, A10)), config)
    server = _serve_pod(pod, tmp_path, ggufs, started)
    _assert_loaded_and_kept(server, _placement_models(pod))


def test_a_model_spanning_gpus_serves(
    tmp_path: Path, ggufs: Callable[[str], Path], started: list[OllamaServer]
) -> None:
    """Bigger than either GPU: one server over both (Ollama splits the layers)."""
    item = deployment("big", engine="ollama", models=[{"name": "qwen2.5:32b", "vram": "16Gi"}])
    (pod,) = _pods(item, workstation(), CPU_OK)
    assert len(_placement(pod).gpus) == 2, "the pod holds both GPUs"
    server = _serve_pod(pod, tmp_path, ggufs, started)
    _assert_loaded_and_kept(server, ["qwen2.5:32b"])


def test_models_on_the_cpu_are_not_ready_and_say_so(
    tmp_path: Path, ggufs: Callable[[str], Path], started: list[OllamaServer]
) -> None:
    """requireGPU (the default): loaded but served from the CPU is not Ready; the probe gives
    Ollama's figures, which the operator puts beside its estimate."""
    (pod, *_) = _pods(SEED, workstation(), RenderConfig())
    names = _placement_models(pod)
    server, container = _hooked(pod, tmp_path / "v", names, ggufs, started)
    deadline = time.monotonic() + LOAD_TIMEOUT
    while True:
        result = _probe(server, container)
        reports = parse_readiness(result.stdout) or []
        if {r.state for r in reports} == {"on-cpu"} or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert result.returncode != 0
    assert {r.model for r in reports} == set(ollama_names(names)), result.stdout
    for report in reports:
        assert report.gpu_bytes == 0 and report.total_bytes and report.total_bytes > 0
    running = {
        "phase": "Running",
        "containerStatuses": [
            {"name": "ollama", "ready": False, "restartCount": 0, "state": {"running": {}}}
        ],
    }
    estimates = {name: ENGINES.estimate(ModelRef(name=name), SEED.spec).need_on(1) for name in names}
    problem = diagnose(
        {"metadata": {"name": "p"}, "status": running}, f"Readiness probe failed: {result.stdout}", estimates
    )
    assert problem is not None and problem.reason == reasons.MODEL_ON_CPU
    for name in ollama_names(names):
        assert re.search(
            rf"{re.escape(name)} runs partly on the CPU: Ollama holds 0 B of \d+ MiB in GPU memory; "
            rf"gpupin estimated \d+\.\d GiB",
            problem.message,
        ), problem.message


def test_a_missing_model_is_reported_and_does_not_crash_loop(
    tmp_path: Path, ggufs: Callable[[str], Path], started: list[OllamaServer]
) -> None:
    """One model of the pod is not in the volume: the hook still succeeds, the server keeps
    serving the other, readiness names the missing one with Ollama's error."""
    item = deployment("two", engine="ollama", models=models("llama3.1:8b", "gone-model:7b"))
    (pod,) = _pods(item, inventory(node("n", A10)), CPU_OK)
    server, container = _hooked(pod, tmp_path / "v", ["llama3.1:8b"], ggufs, started)
    deadline = time.monotonic() + LOAD_TIMEOUT
    while True:
        result = _probe(server, container)
        reports = {r.model: r for r in parse_readiness(result.stdout) or []}
        if reports.get("gone-model:7b") and reports["gone-model:7b"].state == "failed":
            break
        assert time.monotonic() < deadline, result.stdout
        time.sleep(0.5)
    assert set(reports) == {"gone-model:7b"}, "the model that exists is loaded"
    assert "not found" in reports["gone-model:7b"].detail
    time.sleep(2)
    assert server.poll() is None, "the server keeps running"
    assert _probe(server, container).returncode != 0
    running = {
        "phase": "Running",
        "containerStatuses": [
            {"name": "ollama", "ready": False, "restartCount": 0, "state": {"running": {}}}
        ],
    }
    problem = diagnose({"metadata": {"name": "p"}, "status": running}, result.stdout)
    assert problem is not None and problem.reason == reasons.MODEL_NOT_LOADED
    assert problem.message.startswith("pod p: gone-model:7b: failed to load: ")


def test_models_that_cannot_be_pulled_fail_the_init_container_naming_them(
    tmp_path: Path, ggufs: Callable[[str], Path]
) -> None:
    """Offline (the test's network namespace has only loopback) and not in the volume: the init
    container exits 1 and its last line, which starts the termination message, names every model
    that could not be had and Ollama's error; a model already in the volume is used."""
    names = ["no-such-model:1b", "llama3.1:8b", "other-missing:2b", "third-missing:3b"]
    item = deployment("pull", engine="ollama", models=models(*names))
    (pod,) = _pods(item, inventory(node("n", A100_80)), CPU_OK)
    volume = tmp_path / "v"
    _seed_volume(volume, ["llama3.1:8b"], ggufs)
    code, log = _run_init(pod, volume)
    assert code == 1
    missing = {"no-such-model:1b", "other-missing:2b", "third-missing:3b"}
    last = log.strip().splitlines()[-1]
    named = re.match(r"gpupin: cannot pull model\(s\) (.+?): Error: ", last)
    assert named and set(named.group(1).split(", ")) == missing, last
    assert "warning: cannot pull llama3.1:8b, using the copy in the cache" in log
    status = {
        "phase": "Pending",
        "initContainerStatuses": [
            {
                "name": "pull-models",
                "restartCount": 1,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": code, "reason": "Error", "message": log[-4096:]}},
            }
        ],
    }
    problem = diagnose({"metadata": {"name": "p"}, "status": status}, None)
    assert problem is not None and problem.reason == reasons.MODEL_PULL_FAILED
    assert problem.message.startswith(
        f"pod p: pulling the models failed: {last.removeprefix('gpupin: ')[:300]}"
    )


def test_the_cli_hook_the_old_pods_used_fails_on_the_real_server(
    tmp_path: Path, ggufs: Callable[[str], Path], started: list[OllamaServer]
) -> None:
    """Why the hook speaks HTTP: on the pinned server, the old ``ollama run --keepalive -1 M ''``
    fails for every model ("missing unit in duration": cmd/cmd.go parses the flag with
    time.ParseDuration), and without the flag the CLI refuses to load an embedding model without
    input text (0.12.6 sent it to /api/generate, which answers 400 "does not support generate"). If a
    future Ollama accepts these, this test says the workaround can go."""
    item = deployment("old", engine="ollama", models=models("llama3.1:8b", "nomic-embed-text"))
    (pod,) = _pods(item, inventory(node("n", A10)), CPU_OK)
    volume = tmp_path / "v"
    _seed_volume(volume, ["llama3.1:8b", "nomic-embed-text"], ggufs)
    server = _start_server(pod, volume, started)
    old = server.exec(["/bin/sh", "-c", "ollama run --keepalive -1 llama3.1:8b '' >/dev/null"], timeout=30)
    assert old.returncode != 0 and "missing unit in duration" in old.stderr, old.stderr
    embed = server.exec(["ollama", "run", "nomic-embed-text", ""], timeout=30)
    assert embed.returncode != 0 and "embedding models require input text" in embed.stderr, embed.stderr
    status, ps = server.api("GET", "/api/ps")
    assert status == 200 and ps["models"] == [], "the old hook loaded nothing"


def test_names_as_ollama_shortens_them_and_two_names_of_one_blob(
    tmp_path: Path, ggufs: Callable[[str], Path], started: list[OllamaServer]
) -> None:
    """Ollama lists ``library/llama3`` as ``llama3:latest`` and one runner per blob under the name
    that loaded it first: the probe matches by blob, so such pods become Ready."""
    item = deployment(
        "names",
        engine="ollama",
        models=[
            {"name": n, "vram": "1Gi"} for n in ("library/llama3", "qwen:7b", "qwen:latest", "user/model")
        ],
    )
    (pod,) = _pods(item, inventory(node("n", A100_80)), CPU_OK)
    (container,) = pod["spec"]["containers"]
    volume = tmp_path / "v"
    with OllamaServer({"OLLAMA_HOST": "127.0.0.1:11434", "OLLAMA_MODELS": "/models"}, models_dir=volume) as s:
        s.wait_until_up(60)
        s.create_model("library/llama3", ggufs("llama3"))
        s.create_model("qwen:7b", ggufs("qwen"))
        s.create_model("qwen:latest", ggufs("qwen"))  # the same blob under a second tag
        s.create_model("user/model", ggufs("user/model"))
    server = _start_server(pod, volume, started)
    assert _exec(server, container["lifecycle"]["postStart"], HOOK_TIMEOUT).returncode == 0
    ready = _wait_ready(server, container)
    assert ready.returncode == 0, ready.stdout


def test_a_pod_heals_a_model_that_came_late_or_left_memory(
    tmp_path: Path, ggufs: Callable[[str], Path], started: list[OllamaServer]
) -> None:
    """The hook keeps trying a model that failed to load (here: not in the volume yet) and reloads
    a model that left memory (a client's keep_alive 0), so the pod becomes Ready again by itself."""
    item = deployment("heal", engine="ollama", models=models("llama3.1:8b", "late-model:1b"))
    (pod,) = _pods(item, inventory(node("n", A10)), CPU_OK)
    server, container = _hooked(pod, tmp_path / "v", ["llama3.1:8b"], ggufs, started)
    deadline = time.monotonic() + LOAD_TIMEOUT
    while "late-model:1b: failed to load" not in (result := _probe(server, container)).stdout:
        assert time.monotonic() < deadline, result.stdout
        time.sleep(0.5)
    server.create_model("late-model:1b", ggufs("late-model:1b"))
    ready = _wait_ready(server, container)
    assert ready.returncode == 0, ready.stdout

    status, _ = server.api("POST", "/api/generate", {"model": "llama3.1:8b", "keep_alive": 0})
    assert status == 200
    deadline = time.monotonic() + 10
    while _probe(server, container).returncode == 0:
        assert time.monotonic() < deadline, "still Ready after the model left memory"
        time.sleep(0.2)
    ready = _wait_ready(server, container)
    assert ready.returncode == 0, ready.stdout
    assert "llama3.1:8b reloading" in _preload_log(server)
