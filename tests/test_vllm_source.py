"""gpupin's vLLM pods checked against the pinned vLLM release's own source (vLLM has no CPU build here).

``hack/fetch-vllm-source.sh`` downloads and extracts the pinned sdist (version and sha256 pinned
there) and prints the folder ``GPUPIN_VLLM_SOURCE`` names; without it the source checks skip.
``tests/vllm_source.py`` reads the source with ``ast`` (its docstring says where each fact lives).

Aspects: the serve parser is read whole (positional model, server flags from dataclass fields,
engine flags); ``--dtype`` choices; every flag, value, env variable and probe path gpupin renders
for every pinning mode, tensor-parallel size, dtype and compute capability is one the pinned vLLM
accepts; probes need no API key; ``CUDA_VISIBLE_DEVICES`` never holds a UUID (vLLM before 0.33
``int()``s each entry); the image's entrypoint is ``vllm serve``; the default image is the pin.
"""

from __future__ import annotations

import ast
import json
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gpupin import constants
from gpupin.engines import ENGINES
from gpupin.pinning import PINNING_MODES, PinningModeName
from gpupin.planner import plan
from gpupin.render import RenderConfig, render

from helpers import A10, T4, deployment, inventory, models, node
from vllm_source import (
    CLI_MODULES,
    SOURCE_ENV,
    ServeCli,
    SourceTree,
    _call_name,
    _method,
    check_vllm_args,
    dockerfile_entrypoints,
    pinned_version,
    vllm_api_key_check,
    vllm_env_names,
    vllm_serve_cli,
    vllm_server_routes,
)

# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def source() -> Path:
    raw = os.environ.get(SOURCE_ENV)
    if not raw:
        pytest.skip(
            f'{SOURCE_ENV} is unset: run `export {SOURCE_ENV}="$(hack/fetch-vllm-source.sh)"` to check '
            "gpupin's vLLM pods against the pinned vLLM source"
        )
    root = Path(raw)
    assert (root / "vllm" / "engine" / "arg_utils.py").is_file(), (
        f"{SOURCE_ENV}={raw} is not an extracted vLLM source (no vllm/engine/arg_utils.py); "
        "set it to what hack/fetch-vllm-source.sh prints"
    )
    version, pinned = SourceTree(root).version(), pinned_version()
    assert version == pinned, (
        f"{SOURCE_ENV} holds vLLM {version}, but hack/fetch_vllm_source.py pins {pinned}"
    )
    return root


@pytest.fixture(scope="module")
def cli(source: Path) -> ServeCli:
    return vllm_serve_cli(source)


# --------------------------------------------------------------------------- facts read from vLLM


def test_the_serve_parser_is_read_whole(cli: ServeCli) -> None:
    """Every add_argument has literal option strings, and the flags gpupin relies on are there."""
    assert not cli.unreadable, f"vLLM {cli.version}: add_argument calls not read: {cli.unreadable}"
    assert cli.positionals == ["model_tag"], (
        f"vLLM {cli.version} ({cli.files}): positionals {cli.positionals}"
    )
    assert len(cli.flags) > 300, f"only {len(cli.flags)} flags read from {cli.files}"
    for option in ("--host", "--port", "--api-key", "--served-model-name", "--tensor-parallel-size", "-tp",
                   "--gpu-memory-utilization", "--max-model-len", "--dtype", "--enforce-eager",
                   "--no-enforce-eager", "--enable-prefix-caching", "--disable-prefix-caching"):  # fmt: skip
        assert option in cli.flags, f"{option} not found in vLLM {cli.version} ({', '.join(cli.files)})"
    assert cli.flags["--max-model-len"].dest == "max_model_len"
    assert cli.flags["--enforce-eager"].nargs == "0" and cli.flags["--port"].nargs == "1"


def test_the_serve_subcommand_uses_make_arg_parser(source: Path) -> None:
    """``vllm serve`` (vllm/entrypoints/cli/serve.py) builds its parser with the make_arg_parser read here."""
    src = SourceTree(source)
    tree = src.tree("vllm.entrypoints.cli.serve")
    assert tree is not None
    imported = {
        src.absolute("vllm.entrypoints.cli.serve", n.module, n.level)
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and any(a.name == "make_arg_parser" for a in n.names)
    }
    module, _ = src.find_function(CLI_MODULES, "make_arg_parser")
    assert imported == {module}, f"vllm/entrypoints/cli/serve.py imports make_arg_parser from {imported}"
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and _call_name(n) == "make_arg_parser"]
    assert calls, "vllm/entrypoints/cli/serve.py never calls make_arg_parser"
    scripts = tomllib.loads((source / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts.get("vllm") == "vllm.entrypoints.cli.main:main", scripts


def test_no_platform_adds_flags_on_cuda(source: Path) -> None:
    """AsyncEngineArgs.add_cli_args ends with ``current_platform.pre_register_and_update(parser)``: on
    CUDA (vllm/platforms/cuda.py) nothing overrides it, so the flags read here are all of them."""
    tree = SourceTree(source).tree("vllm.platforms.cuda")
    assert tree is not None
    overriding = [
        n.name
        for n in ast.walk(tree)
        if isinstance(n, ast.ClassDef) and _method(n, "pre_register_and_update") is not None
    ]
    assert not overriding, f"vllm/platforms/cuda.py: {overriding} add flags of their own; read them too"


def test_dtype_choices(cli: ServeCli) -> None:
    """``--dtype`` takes ModelDType (vllm/config/model.py): half, float16 and bfloat16 among them."""
    flag = cli.flags["--dtype"]
    assert flag.choices is not None, f"--dtype choices not read ({flag.source})"
    assert {"auto", "half", "float16", "bfloat16", "float32"} <= set(flag.choices), flag
    assert not check_vllm_args(["--dtype", "half", "--dtype=bfloat16", "--dtype", "float16"], cli)
    assert check_vllm_args(["--dtype", "fp8"], cli), "fp8 is no ModelDType"


def test_the_checker_catches_what_vllm_would_refuse(cli: ServeCli) -> None:
    assert not check_vllm_args(["--max_model_len", "4096", "-tp", "2", "--enforce-eager", "-O3"], cli)
    assert not check_vllm_args(["--compilation-config.mode", "3", "--api-key", "a", "b"], cli)
    problems = check_vllm_args(["--no-such-flag", "--port", "--enforce-eager=1", "stray"], cli)
    assert len(problems) == 4, problems
    assert "--no-such-flag is not a `vllm serve` flag in vLLM" in problems[0]


def test_vllm_env_names(source: Path) -> None:
    names = vllm_env_names(source)
    assert {"VLLM_API_KEY", "CUDA_VISIBLE_DEVICES", "VLLM_HOST_IP"} <= names, "vllm/envs.py"
    assert len(names) > 100


def test_health_and_models_routes_are_always_registered(source: Path) -> None:
    routes = vllm_server_routes(source)
    assert "/health" in routes and "/v1/models" in routes, sorted(routes)
    assert routes["/health"].startswith("vllm/entrypoints/serve/instrumentator/health.py")
    assert routes["/v1/models"].startswith("vllm/entrypoints/openai/models/api_router.py")


def test_api_key_guards_v1_but_not_health(source: Path) -> None:
    check = vllm_api_key_check(source)
    assert "/v1" in check.guarded_prefixes, check
    assert check.guards("/v1/models") and not check.guards("/health"), check
    assert check.enabled_by == ("VLLM_API_KEY", "api_key"), (
        f"the middleware ({check.source}) is installed on {check.enabled_by}; expected --api-key or VLLM_API_KEY"
    )


def test_cuda_visible_devices_parsing(source: Path) -> None:
    """Where 0.33.0 maps CUDA_VISIBLE_DEVICES entries to GPUs (see the module docstring)."""
    src = SourceTree(source)
    interface = src.resolve("vllm.platforms.interface", "Platform")
    assert interface is not None and isinstance(interface[1], ast.ClassDef)
    base = _method(interface[1], "device_control_id_to_physical_device_id")
    assert base is not None, "vllm/platforms/interface.py: Platform.device_control_id_to_physical_device_id"
    assert "int(device_id)" in ast.unparse(base) and "Non-integer device ID" in ast.unparse(base)
    splitters = [
        name
        for name in ("device_id_to_physical_device_id", "visible_device_id_to_physical_device_id")
        if (m := _method(interface[1], name)) is not None
        and ".split(',')" in ast.unparse(m)
        and "device_control_id_to_physical_device_id" in ast.unparse(m)
    ]
    assert len(splitters) == 2, f"vllm/platforms/interface.py: {splitters}"
    cuda = src.tree("vllm.platforms.cuda")
    assert cuda is not None
    classes = {n.name: n for n in cuda.body if isinstance(n, ast.ClassDef)}
    nvml = _method(classes["NvmlCudaPlatform"], "device_control_id_to_physical_device_id")
    assert nvml is not None and "nvmlDeviceGetHandleByUUID" in ast.unparse(nvml)
    assert _method(classes["NonNvmlCudaPlatform"], "device_control_id_to_physical_device_id") is None, (
        "NonNvmlCudaPlatform keeps Platform's int()"
    )


def test_vllm_openai_image_entrypoint(source: Path) -> None:
    stages = dockerfile_entrypoints(source)
    assert stages.get("vllm-openai") == ["vllm", "serve"], f"docker/Dockerfile: {stages}"


def test_default_vllm_image_is_the_pinned_release(source: Path) -> None:
    """The flags are checked against the pinned release, so that is the image gpupin runs by default."""
    version = SourceTree(source).version()
    image = ENGINES.get("vllm").default_image
    assert image.rpartition(":")[2] == f"v{version}", (
        f"the vLLM engine's default image is {image}, but the source checked here is vLLM {version} "
        "(pinned in hack/fetch_vllm_source.py)"
    )


# --------------------------------------------------------------------------- gpupin's vLLM pods

MODEL = "Qwen/Qwen2.5-1.5B-Instruct"  # bf16 weights (gpupin/data/models.yaml)
NODES = {"cc75": (T4, 7.5), "cc86": (A10, 8.6)}


@dataclass(frozen=True)
class Case:
    gpus: str
    tp: int
    dtype: str
    pinning: PinningModeName
    max_model_len: int | None

    @property
    def id(self) -> str:
        return f"{self.gpus}-tp{self.tp}-{self.dtype}-{self.pinning}-len{self.max_model_len or 'default'}"


CASES = [
    Case(gpus, tp, dtype, pinning, max_len)
    for gpus in NODES
    for tp in (1, 2)
    for dtype in ("auto", "bfloat16", "float16")
    for pinning in PINNING_MODES
    for max_len in (None, 4096)
]
EXTRA_ARGS = ["--enforce-eager", "--enable-prefix-caching", "--max-num-seqs=32"]


def _pods(case: Case) -> list[dict[str, Any]] | None:
    """The vLLM pods gpupin renders for a case, or None when the planner refuses it."""
    product, _ = NODES[case.gpus]
    vllm: dict[str, Any] = {"dtype": case.dtype, "args": EXTRA_ARGS}
    if case.max_model_len:
        vllm["maxModelLen"] = case.max_model_len
    item = deployment("chat", models=models(MODEL), tensorParallelSize=case.tp, vllm=vllm)
    result = plan(item, inventory(node(case.gpus, product, product)), pinning=case.pinning)
    if not result.placed:
        return None
    pods = [o for o in render(item, result, RenderConfig(pinning=case.pinning)) if o["kind"] == "Pod"]
    assert pods, f"{case.id}: a placed plan rendered no pod"
    return pods


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def _probe_paths(container: dict[str, Any]) -> dict[str, str]:
    return {
        kind: probe["httpGet"]["path"]
        for kind in ("startupProbe", "livenessProbe", "readinessProbe")
        if (probe := container.get(kind)) and "httpGet" in probe
    }


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_rendered_vllm_pod_matches_the_pinned_vllm(case: Case, source: Path, cli: ServeCli) -> None:
    pods = _pods(case)
    if pods is None:
        assert case.dtype == "bfloat16" and NODES[case.gpus][1] < 8.0, f"{case.id}: refused unexpectedly"
        return  # bf16 needs compute capability 8.0: gpupin refuses, it renders nothing vLLM would reject
    entrypoint = dockerfile_entrypoints(source)["vllm-openai"]
    routes = vllm_server_routes(source)
    for pod in pods:
        (container,) = pod["spec"]["containers"]
        where = f"{case.id}, pod {pod['metadata']['name']}, vs vLLM {cli.version}"
        command, args = container.get("command"), container["args"]
        assert command in (None, entrypoint), (
            f"{where}: command {command} is not the vllm-openai image's ENTRYPOINT {entrypoint} (docker/Dockerfile)"
        )
        assert args[0] == MODEL, (
            f"{where}: `vllm serve` takes the model first (positional model_tag), got {args[:2]}"
        )
        problems = check_vllm_args(args[1:], cli)
        assert not problems, f"{where}:\n  " + "\n  ".join(problems)
        assert args[-len(EXTRA_ARGS) :] == EXTRA_ARGS, f"{where}: vllm.args not passed through as written"
        for kind, path in _probe_paths(container).items():
            assert path in routes, (
                f"{where}: {kind} {path} is no route of the vLLM server (routes: {sorted(routes)})"
            )


def test_the_matrix_renders_every_dtype_vllm_must_accept(cli: ServeCli) -> None:
    """--dtype half (bf16 model on CC 7.5), float16 and bfloat16 are all rendered by the matrix above."""
    rendered: set[str] = set()
    for case in CASES:
        for pod in _pods(case) or []:
            args = pod["spec"]["containers"][0]["args"]
            rendered |= {args[i + 1] for i, a in enumerate(args) if a == "--dtype"}
    assert rendered == {"half", "float16", "bfloat16"}, rendered
    assert rendered <= set(cli.flags["--dtype"].choices or ()), cli.flags["--dtype"]


@pytest.mark.parametrize("pinning", PINNING_MODES)
def test_probes_answer_without_the_api_key(pinning: PinningModeName, source: Path) -> None:
    """A user may set VLLM_API_KEY (env) or --api-key (vllm.args); the kubelet sends no key, so every
    probe must hit a path the API-key middleware leaves open."""
    check = vllm_api_key_check(source)
    for case in (c for c in CASES if c.pinning == pinning and c.gpus == "cc86" and c.dtype == "auto"):
        for pod in _pods(case) or []:
            for kind, path in _probe_paths(pod["spec"]["containers"][0]).items():
                assert not check.guards(path), (
                    f"{case.id}: {kind} {path} needs the API key once one is set "
                    f"(vLLM {SourceTree(source).version()} guards {check.guarded_prefixes}, {check.source})"
                )


def test_rendered_vllm_env_is_known_to_vllm(source: Path) -> None:
    """Every VLLM_* variable gpupin renders is one vLLM reads (vllm/envs.py); user env is the user's."""
    known = vllm_env_names(source)
    for case in CASES:
        for pod in _pods(case) or []:
            for name in _env(pod["spec"]["containers"][0]):
                if name.startswith("VLLM_"):
                    assert name in known, f"{case.id}: {name} is not read by vLLM ({source}/vllm/envs.py)"


@pytest.mark.parametrize("pinning", PINNING_MODES)
def test_cuda_visible_devices_holds_only_indices(pinning: PinningModeName) -> None:
    """vLLM before 0.33 int()s every CUDA_VISIBLE_DEVICES entry, and 0.33.0 still does without NVML
    (``Platform.device_control_id_to_physical_device_id`` in vllm/platforms/interface.py; only
    ``NvmlCudaPlatform`` in vllm/platforms/cuda.py looks UUIDs up). So gpupin sets it, if at all, to
    container-local indices 0..n-1, and names the GPUs by UUID in NVIDIA_VISIBLE_DEVICES, which the
    NVIDIA container toolkit reads to expose exactly those GPUs."""
    for case in (c for c in CASES if c.pinning == pinning and c.max_model_len is None):
        for pod in _pods(case) or []:
            env = _env(pod["spec"]["containers"][0])
            placement = json.loads(pod["metadata"]["annotations"][constants.PLACEMENT_ANNOTATION])
            uuids = [g["uuid"] for g in placement["gpus"]]
            cuda = env.get("CUDA_VISIBLE_DEVICES")
            if cuda is not None:
                entries = cuda.split(",")
                assert all(re.fullmatch(r"\d+", e) for e in entries), (
                    f"{case.id}: CUDA_VISIBLE_DEVICES={cuda}: vLLM int()s each entry"
                )
                assert sorted(int(e) for e in entries) == list(range(len(uuids))), (
                    f"{case.id}: CUDA_VISIBLE_DEVICES={cuda}: inside the container the {len(uuids)} GPUs are 0..n-1"
                )
            if pinning == "visible-devices":
                assert env.get("NVIDIA_VISIBLE_DEVICES") == ",".join(uuids), f"{case.id}: {env}"
