"""The engine registry, and a thought experiment: a third engine is one module.

Two engines that exist only in this file — a llama.cpp-like server placed as shared per-GPU
servers, and an SGLang-like server placed as exclusive tensor-parallel groups — are registered in
a registry of their own, planned, rendered in every pinning mode and reconciled by decide(),
without any module of gpupin knowing them. The built-in registry refuses them by name: an engine
not in the registry is an error, never a fallback to another engine.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

import kubernetes_validate
import pytest

from gpupin import constants, reasons
from gpupin.api.v1alpha1 import LLMDeployment, LLMDeploymentSpec, ModelRef, ResolvedEngine
from gpupin.controller.decide import decide
from gpupin.engines import ENGINES, EngineRegistry, UnknownEngine
from gpupin.engines.base import Engine, EnginePod, service
from gpupin.engines.ollama import Ollama
from gpupin.engines.vllm import VLLM
from gpupin.kernel.context import PlanContext
from gpupin.kernel.groups import GroupPlacer, GroupRequest
from gpupin.kernel.shared import SharedPlacer, SharedRequest
from gpupin.pinning import PINNING_MODES, PinningModeName
from gpupin.placement import LaunchSettings, Placement, Plan
from gpupin.planner import Planner
from gpupin.quantity import GiB
from gpupin.render import RenderConfig, render
from gpupin.sizing import Estimate, ModelFacts

from helpers import A10, REPO, deployment, inventory, models, node, workstation


class TinyServer(Engine):
    """Like a llama.cpp server: several GGUF models in one process per GPU, sharing it."""

    name = "tinyserver"
    display_name = "TinyServer"
    default_image = "tinyserver:test"
    port = 9000
    owns_gpus = False
    cuda_visible_uuids = True
    naming_scheme = "ollama"

    def size(self, model: ModelRef, spec: LLMDeploymentSpec, facts: ModelFacts | None) -> Estimate | None:
        return Estimate(model.name, "name", 4 * GiB, GiB, GiB // 2, "Q4_0", 4096)

    def place(
        self, ctx: PlanContext, spec: LLMDeploymentSpec, estimates: Sequence[Estimate]
    ) -> tuple[list[Placement], str, str]:
        request = SharedRequest(
            estimates=estimates,
            replicas=spec.replicas,
            engine=self.display_name,
            smaller_options=("a smaller model",),
            launch=lambda placed: LaunchSettings(context_length=4096),
            summary=lambda placements, _: f"{len(placements)} TinyServer pod(s)",
        )
        return SharedPlacer(ctx, request).run()

    def pod(self, spec: LLMDeploymentSpec, placement: Placement, image: str, require_gpu: bool) -> EnginePod:
        container = {
            "name": "server",
            "image": image,
            "args": ["--port", str(self.port), "--ctx-size", str(placement.launch.context_length)],
            "ports": [{"name": "http", "containerPort": self.port, "protocol": "TCP"}],
            "env": [{"name": "MODELS", "value": ",".join(placement.models)}],
            "volumeMounts": [{"name": "models", "mountPath": "/models"}],
        }
        return EnginePod(container=container)

    def services(
        self, deployment: LLMDeployment, labels: dict[str, str], selector: dict[str, str]
    ) -> list[dict[str, Any]]:
        return [service(deployment.metadata.name, deployment.metadata.namespace, labels, selector, self.port)]


class ShardServer(TinyServer):
    """Like SGLang: one model sharded over GPUs the pod owns, as vLLM is."""

    name = "shardserver"
    display_name = "ShardServer"
    owns_gpus = True
    cuda_visible_uuids = False

    def size(self, model: ModelRef, spec: LLMDeploymentSpec, facts: ModelFacts | None) -> Estimate | None:
        return Estimate(model.name, "name", 30 * GiB, 4 * GiB, 2 * GiB, "bfloat16", 8192)

    def place(
        self, ctx: PlanContext, spec: LLMDeploymentSpec, estimates: Sequence[Estimate]
    ) -> tuple[list[Placement], str, str]:
        request = GroupRequest(
            estimate=estimates[0],
            tensor_parallel=spec.tensor_parallel_size,
            replicas=spec.replicas,
            utilization=0.9,
            utilization_setting="memFractionStatic",
            allow_mixed=spec.allow_mixed_gpus,
            engine=self.display_name,
            preferred_min_cc=None,
            launch=lambda group: (LaunchSettings(max_model_len=8192), []),
            smaller_options=lambda: ["a quantized variant"],
            alternatives=(),
        )
        return GroupPlacer(ctx, request).run()


def _registry() -> EngineRegistry:
    return EngineRegistry([VLLM(), Ollama(), TinyServer(), ShardServer()])


def _on(engine: str, **spec: Any) -> LLMDeployment:
    """A deployment of an engine the API's enum does not list (model_copy skips validation, as a
    new engine's API change would make it valid)."""
    made = deployment("third", **spec)
    return made.model_copy(update={"spec": made.spec.model_copy(update={"engine": engine})})


def _valid(objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        kubernetes_validate.validate(obj, "1.37.0", strict=True)


@pytest.mark.parametrize("pinning", PINNING_MODES)
def test_a_shared_server_engine_registered_only_here_is_placed_and_rendered(pinning: PinningModeName) -> None:
    cluster = inventory(node("n", A10, A10))
    item = _on("tinyserver", models=models("tiny-a", "tiny-b"), replicas=2)
    plan = Planner(cluster, pinning=pinning, engines=_registry()).plan(item)
    assert plan.placed, plan.message
    assert plan.engine == "tinyserver" and plan.message == "2 TinyServer pod(s)"
    shares = pinning == "visible-devices"
    assert [p.exclusive for p in plan.placements] == [not shares] * 2, "the mode decides sharing"
    assert all(p.models == ("tiny-a", "tiny-b") and p.launch.context_length == 4096 for p in plan.placements)

    objects = render(item, plan, RenderConfig(pinning=pinning), _registry())
    _valid(objects)
    pods = [o for o in objects if o["kind"] == "Pod"]
    assert len(pods) == 2 and {o["kind"] for o in objects} == {"Pod", "Service"} | (
        {"ResourceClaimTemplate"} if pinning == "dra" else set()
    )
    pod = pods[0]
    container = pod["spec"]["containers"][0]
    assert container["image"] == "tinyserver:test" and "--ctx-size" in container["args"]
    assert pod["metadata"]["labels"][constants.ENGINE_LABEL] == "tinyserver"
    env = {e["name"]: e.get("value") for e in container["env"]}
    annotation = json.loads(pod["metadata"]["annotations"][constants.PLACEMENT_ANNOTATION])
    assert annotation["exclusive"] is (not shares)
    if pinning == "visible-devices":  # the engine accepts UUIDs: CUDA sees them by UUID
        assert env["CUDA_VISIBLE_DEVICES"] == env["NVIDIA_VISIBLE_DEVICES"] == annotation["gpus"][0]["uuid"]


def test_an_exclusive_group_engine_registered_only_here_gets_tensor_parallel_groups() -> None:
    cluster = inventory(node("a", A10, A10), node("b", A10))
    item = _on("shardserver", models=models("org/shard-model"), tensorParallelSize=2)
    plan = Planner(cluster, engines=_registry()).plan(item)
    assert plan.placed, plan.message
    (placement,) = plan.placements
    assert placement.node == "a" and len(placement.gpus) == 2 and placement.exclusive
    assert placement.launch.max_model_len == 8192
    objects = render(item, plan, RenderConfig(), _registry())
    _valid(objects)
    env = {e["name"]: e.get("value") for e in objects[0]["spec"]["containers"][0]["env"]}
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1", "an engine that takes no UUIDs gets 0..n-1"

    too_big = _on("shardserver", models=models("org/shard-model"))
    refused = Planner(cluster, engines=_registry()).plan(too_big)
    assert refused.reason == reasons.INSUFFICIENT_VRAM
    assert "gives ShardServer" in refused.message and "memFractionStatic 0.9" in refused.message, (
        refused.message
    )
    assert "a quantized variant" in refused.message


def test_a_group_engine_that_does_not_own_its_gpus_is_a_programming_error() -> None:
    class Careless(ShardServer):
        name = "careless"
        owns_gpus = False  # its ranks would leave room another pod could be planned into

    item = _on("careless", models=models("org/shard-model"))
    with pytest.raises(ValueError, match="must own its GPUs"):
        Planner(inventory(node("a", A10)), engines=EngineRegistry([Careless()])).plan(item)


def test_the_operator_reconciles_a_third_engine_with_its_registry() -> None:
    cluster = workstation()
    item = _on("tinyserver", models=models("tiny-a"))
    registry = _registry()
    plan = Planner(cluster, engines=registry).plan(item, commit=False)
    body = item.model_dump(by_alias=True, exclude_none=True) | {
        "metadata": {"name": "third", "namespace": "default", "uid": "u1", "generation": 1}
    }
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    actions = decide(body, item, None, plan, [], [], [], cluster, RenderConfig(), now, engines=registry)
    assert [o["kind"] for o in actions.create] == ["Pod", "Service"]
    assert actions.status is not None and actions.status["engine"] == "tinyserver"
    assert actions.status["placements"][0]["gpus"][0]["index"] == 1, "best fit: the 6 GiB RTX 2060"


def test_an_engine_not_in_the_registry_is_refused_by_name_never_planned_as_another() -> None:
    item = _on("tinyserver", models=models("tiny-a"))
    plan = Planner(workstation()).plan(item)
    assert not plan.placed and plan.reason == reasons.INVALID_SPEC
    assert plan.message == "engine 'tinyserver' is not one gpupin runs; the engines are ollama, vllm"
    placed = Planner(workstation(), engines=_registry()).plan(item)
    with pytest.raises(UnknownEngine, match="tinyserver"):
        render(item, Plan(**{**placed.__dict__}), RenderConfig())
    with pytest.raises(ValueError, match="registered twice"):
        EngineRegistry([TinyServer(), TinyServer()])


def test_the_registry_serves_exactly_the_engines_the_api_accepts() -> None:
    assert ENGINES.names() == sorted(get_args(ResolvedEngine))


def test_no_source_module_is_over_400_lines() -> None:
    """One room per job: a module that grows past this is doing two."""
    long = {
        str(path.relative_to(REPO)): lines
        for path in sorted((REPO / "operator" / "gpupin").rglob("*.py"))
        if (lines := len(Path(path).read_text().splitlines())) > 400
    }
    assert long == {}, f"split these modules: {long}"
