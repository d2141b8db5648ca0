"""The planner's rules as a table of (inventory, deployments) → expected outcome.

Aspects: the seed's four outcomes; tensor-parallel grouping (matching subsets, mixed
groups refused or allowed, one node only, heads divisibility); compute capability and
the bf16 → float16 fallback; Ollama one-GPU placement, spanning, sharing and replicas;
exclusivity per pinning mode; selectors; MIG; refusal reasons (InsufficientVRAM vs
InsufficientGPUs vs TooFewGPUs); stability of existing pods; names; Ollama pods of different
namespaces on different GPUs (the admin's flag allows sharing).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from gpupin import reasons
from gpupin.api.v1alpha1 import LLMDeployment
from gpupin.inventory import Inventory, NodeInventory
from gpupin.pinning import PinningModeName
from gpupin.placement import CurrentPod, Hold, Plan
from gpupin.planner import Planner, plan
from gpupin.policy import DEFAULT_POLICY, Policy
from gpupin.quantity import GiB

from helpers import (
    A10,
    A100_80,
    GTX_1080TI,
    RTX_3060,
    RTX_4090,
    T4,
    deployment,
    gpu,
    inventory,
    layout,
    models,
    node,
    workstation,
)

QWEN3B = "Qwen/Qwen2.5-3B-Instruct"


@dataclass
class Case:
    description: str
    inventory: Callable[[], Inventory]
    deployments: list[LLMDeployment]
    """Planned in order; the last one is checked."""
    outcome: str
    reason: str
    layout: list[tuple[str, tuple[int, ...], tuple[str, ...]]] | None = None
    message: list[str] = field(default_factory=list)
    pinning: PinningModeName = "visible-devices"
    holds: list[Hold] = field(default_factory=list)
    check: Callable[[Plan], Any] | None = None

    def __str__(self) -> str:
        return self.description


def _mixed_box() -> Inventory:
    return inventory(node("box", RTX_4090, RTX_4090, RTX_3060))


CASES = [
    # --- the seed's four outcomes ------------------------------------------------------
    Case(
        "seed: Ollama with qwen2.5:14b, llama3.1:8b, nomic-embed-text uses both cards, one pod per GPU",
        workstation,
        [deployment(engine="ollama", models=models("qwen2.5:14b", "llama3.1:8b", "nomic-embed-text"))],
        "Placed",
        reasons.PLACED_OK,
        layout=[
            ("workstation", (0,), ("nomic-embed-text", "qwen2.5:14b")),
            ("workstation", (1,), ("llama3.1:8b",)),
        ],
    ),
    Case(
        "seed: qwen2.5:32b (~20 GiB) fits neither card nor both together",
        workstation,
        [deployment(engine="ollama", models=models("qwen2.5:32b"))],
        "Refused",
        reasons.INSUFFICIENT_VRAM,
        message=["qwen2.5:32b needs ~19.9 GiB", "RTX 4070 12.0 GiB", "18.0 GiB"],
    ),
    Case(
        "seed: vLLM tensor parallel 2 over RTX 4070 + RTX 2060 is refused, the waste quantified",
        workstation,
        [deployment(engine="vllm", models=models(QWEN3B), tensorParallelSize=2, vllm={"maxModelLen": 8192})],
        "Refused",
        reasons.HETEROGENEOUS_TENSOR_PARALLEL,
        message=[
            "RTX 4070 12.0 GiB + RTX 2060 6.0 GiB gives 2 × 6.0 GiB usable",
            "no more than the RTX 4070 alone",
            "tensorParallelSize: 1 on the 12.0 GiB RTX 4070",
            "engine: ollama",
            "allowMixedGPUs: true",
        ],
    ),
    Case(
        "seed: vLLM tensor parallel 1 goes on the RTX 4070",
        workstation,
        [deployment(engine="vllm", models=models(QWEN3B))],
        "Placed",
        reasons.PLACED_OK,
        layout=[("workstation", (0,), (QWEN3B,))],
    ),
    Case(
        "seed notes' mistake: microsoft/phi-4 in bf16 (29.3 GB) fits neither the 12 GB card nor 12 + 6 GB",
        workstation,
        [deployment(models=models("microsoft/phi-4"))],
        "Refused",
        reasons.INSUFFICIENT_VRAM,
        message=["29.3 GB", "phi4:14b"],
    ),
    # --- tensor parallel ------------------------------------------------------------------
    Case(
        "allowMixedGPUs places TP over mismatched GPUs, sized to the smallest, and says so",
        workstation,
        [
            deployment(
                engine="vllm",
                models=models(QWEN3B),
                tensorParallelSize=2,
                allowMixedGPUs=True,
                vllm={"maxModelLen": 8192},
            )
        ],
        "Placed",
        reasons.MIXED_GPUS_ALLOWED,
        layout=[("workstation", (0, 1), (QWEN3B,))],
        message=["2 × 6.0 GiB usable", "6.0 GiB stranded", "--dtype half"],
        check=lambda p: p.placements[0].launch.dtype == "half",
    ),
    Case(
        "TP 2 on 2 × RTX 4090 + RTX 3060 uses the matching pair",
        _mixed_box,
        [
            deployment(
                models=models("Qwen/Qwen2.5-7B-Instruct"), tensorParallelSize=2, vllm={"maxModelLen": 16384}
            )
        ],
        "Placed",
        reasons.PLACED_OK,
        layout=[("box", (0, 1), ("Qwen/Qwen2.5-7B-Instruct",))],
    ),
    Case(
        "TP 2 on a uniform 4 × A100 node: one pod holding two GPUs",
        lambda: inventory(node("a100", A100_80, A100_80, A100_80, A100_80)),
        [deployment(models=models(QWEN3B), tensorParallelSize=2)],
        "Placed",
        reasons.PLACED_OK,
        layout=[("a100", (0, 1), (QWEN3B,))],
    ),
    Case(
        "a TP group never spans nodes: two nodes with one A10 each cannot form TP 2",
        lambda: inventory(node("n1", A10), node("n2", A10)),
        [deployment(models=models(QWEN3B), tensorParallelSize=2)],
        "Refused",
        reasons.TOO_FEW_GPUS,
        message=["needs 2 GPUs on one node", "is 1"],
    ),
    Case(
        "TP size must divide the attention heads (phi-4 has 40)",
        lambda: inventory(node("a100", A100_80, A100_80, A100_80, A100_80)),
        [deployment(models=models("microsoft/phi-4"), tensorParallelSize=3)],
        "Refused",
        reasons.INVALID_SPEC,
        message=["does not divide the 40 attention heads", "Use one of 1, 2"],
    ),
    Case(
        "a model too big for any group of matching GPUs is InsufficientVRAM, with a TP size that would fit",
        lambda: inventory(node("n", A10, A10)),
        [deployment(models=models("microsoft/phi-4"))],
        "Refused",
        reasons.INSUFFICIENT_VRAM,
        message=["tensorParallelSize 2 over matching GPUs"],
    ),
    # --- compute capability --------------------------------------------------------------
    Case(
        "vLLM needs compute capability 7.5: a Pascal GPU is refused",
        lambda: inventory(node("old", GTX_1080TI)),
        [deployment(models=models("Qwen/Qwen2.5-1.5B-Instruct"))],
        "Refused",
        reasons.UNSUPPORTED_COMPUTE_CAPABILITY,
        message=["7.5", "CC 6.1", "engine: ollama"],
    ),
    Case(
        "Ollama runs on the Pascal GPU",
        lambda: inventory(node("old", GTX_1080TI)),
        [deployment(engine="ollama", models=models("llama3.2:3b"))],
        "Placed",
        reasons.PLACED_OK,
        layout=[("old", (0,), ("llama3.2:3b",))],
    ),
    Case(
        "a bf16 model on a T4 (7.5) is served as float16 and the plan says so",
        lambda: inventory(node("t4", T4)),
        [deployment(models=models("Qwen/Qwen2.5-1.5B-Instruct"))],
        "Placed",
        reasons.DTYPE_FALLBACK,
        message=["--dtype half"],
        check=lambda p: p.placements[0].launch.dtype == "half",
    ),
    Case(
        "vllm.dtype bfloat16 restricts to compute capability ≥ 8.0",
        lambda: inventory(node("t4", T4)),
        [deployment(models=models("Qwen/Qwen2.5-1.5B-Instruct"), vllm={"dtype": "bfloat16"})],
        "Refused",
        reasons.UNSUPPORTED_COMPUTE_CAPABILITY,
        message=["bfloat16 needs compute capability 8.0"],
    ),
    Case(
        "a bf16 model prefers a GPU that runs bf16 natively over a smaller float16 fallback",
        lambda: inventory(node("n", T4, A10)),
        [deployment(models=models("Qwen/Qwen2.5-1.5B-Instruct"))],
        "Placed",
        reasons.PLACED_OK,
        layout=[("n", (1,), ("Qwen/Qwen2.5-1.5B-Instruct",))],
        check=lambda p: p.placements[0].launch.dtype is None,
    ),
    # --- Ollama ------------------------------------------------------------------------------
    Case(
        "Ollama: best fit puts a small model on the smallest GPU that fits",
        workstation,
        [deployment(engine="ollama", models=models("llama3.2:3b"))],
        "Placed",
        reasons.PLACED_OK,
        layout=[("workstation", (1,), ("llama3.2:3b",))],
    ),
    Case(
        "Ollama: a model larger than every GPU spans GPUs of one node in one server",
        workstation,
        [deployment(engine="ollama", models=models("qwen2.5:14b-instruct-q8_0"))],
        "Placed",
        reasons.PLACED_OK,
        layout=[("workstation", (0, 1), ("qwen2.5:14b-instruct-q8_0",))],
    ),
    Case(
        "Ollama never spans nodes: 12 GiB on each of two nodes cannot hold a 16 GiB model",
        lambda: inventory(node("n1", RTX_3060), node("n2", RTX_3060)),
        [deployment(engine="ollama", models=models("qwen2.5:14b-instruct-q8_0"))],
        "Refused",
        reasons.INSUFFICIENT_VRAM,
    ),
    Case(
        "Ollama replicas put each model on distinct GPUs",
        lambda: inventory(node("n", RTX_3060, RTX_3060, RTX_3060)),
        [deployment(engine="ollama", models=models("llama3.1:8b"), replicas=2)],
        "Placed",
        reasons.PLACED_OK,
        layout=[("n", (0,), ("llama3.1:8b",)), ("n", (1,), ("llama3.1:8b",))],
    ),
    Case(
        "more Ollama replicas than GPUs big enough: TooFewGPUs",
        workstation,
        [deployment(engine="ollama", models=models("llama3.1:8b"), replicas=3)],
        "Refused",
        reasons.TOO_FEW_GPUS,
        message=["3 distinct GPUs", "2 eligible GPU(s)"],
    ),
    Case(
        "two Ollama deployments share a GPU by memory budget",
        lambda: inventory(node("n", RTX_4090)),
        [
            deployment("a", engine="ollama", models=models("qwen2.5:14b")),
            deployment("b", engine="ollama", models=models("qwen2.5:14b")),
        ],
        "Placed",
        reasons.PLACED_OK,
        layout=[("n", (0,), ("qwen2.5:14b",))],
    ),
    Case(
        "a third one finds the memory held: InsufficientGPUs naming the holders",
        lambda: inventory(node("n", RTX_4090)),
        [
            deployment("a", engine="ollama", models=models("qwen2.5:14b")),
            deployment("b", engine="ollama", models=models("qwen2.5:14b")),
            deployment("c", engine="ollama", models=models("qwen2.5:14b")),
        ],
        "Refused",
        reasons.INSUFFICIENT_GPUS,
        message=["default/a holds", "default/b holds"],
    ),
    Case(
        "vLLM owns its GPU: a GPU with any Ollama memory on it is not free for vLLM",
        lambda: inventory(node("n", A10)),
        [
            deployment("a", engine="ollama", models=models("llama3.2:3b")),
            deployment("b", models=models(QWEN3B)),
        ],
        "Refused",
        reasons.INSUFFICIENT_GPUS,
        message=["default/a holds"],
    ),
    Case(
        "Ollama cannot share a GPU that vLLM owns",
        lambda: inventory(node("n", A100_80)),
        [
            deployment("a", models=models(QWEN3B)),
            deployment("b", engine="ollama", models=models("llama3.2:3b")),
        ],
        "Refused",
        reasons.INSUFFICIENT_GPUS,
    ),
    Case(
        "in dra pinning mode a GPU goes to one pod only, even for Ollama",
        lambda: inventory(node("n", RTX_4090)),
        [
            deployment("a", engine="ollama", models=models("llama3.2:3b")),
            deployment("b", engine="ollama", models=models("llama3.2:3b")),
        ],
        "Refused",
        reasons.INSUFFICIENT_GPUS,
        pinning="dra",
    ),
    Case(
        "device-plugin pinning cannot choose a card on a mixed node",
        workstation,
        [deployment(engine="ollama", models=models("llama3.1:8b"))],
        "Refused",
        reasons.PINNING_UNSUPPORTED,
        message=["mismatched GPUs", "visible-devices or dra"],
        pinning="device-plugin",
    ),
    Case(
        "device-plugin pinning works on a uniform node",
        lambda: inventory(node("n", A10, A10)),
        [deployment(models=models(QWEN3B), tensorParallelSize=2)],
        "Placed",
        reasons.PLACED_OK,
        pinning="device-plugin",
    ),
    # --- selectors and eligibility ------------------------------------------------------
    Case(
        "gpuSelector.products with a product no node has: NoMatchingGPU",
        workstation,
        [deployment(models=models("llama3.1:8b"), gpuSelector={"products": ["NVIDIA H100 80GB HBM3"]})],
        "Refused",
        reasons.NO_MATCHING_GPU,
        message=["gpuSelector matches none of the 2 GPUs"],
    ),
    Case(
        "gpuSelector.products accepts the short name (RTX 4070)",
        workstation,
        [deployment(engine="ollama", models=models("llama3.2:3b"), gpuSelector={"products": ["RTX 4070"]})],
        "Placed",
        reasons.PLACED_OK,
        layout=[("workstation", (0,), ("llama3.2:3b",))],
    ),
    Case(
        "gpuSelector.minMemory and minComputeCapability narrow the choice",
        lambda: inventory(node("n", T4, RTX_3060, A10)),
        [
            deployment(
                engine="ollama",
                models=models("llama3.2:3b"),
                gpuSelector={"minMemory": "13Gi", "minComputeCapability": "8.0"},
            )
        ],
        "Placed",
        reasons.PLACED_OK,
        layout=[("n", (2,), ("llama3.2:3b",))],
    ),
    Case(
        "gpuSelector.nodes restricts to the named nodes",
        lambda: inventory(node("a", A10), node("b", A10)),
        [deployment(models=models(QWEN3B), gpuSelector={"nodes": ["b"]})],
        "Placed",
        reasons.PLACED_OK,
        layout=[("b", (0,), (QWEN3B,))],
    ),
    Case(
        "MIG-enabled GPUs are not placed on",
        lambda: inventory(
            NodeInventory(
                name="n", gpus=[gpu(0, A100_80, uuid="GPU-mig", migEnabled=True), gpu(1, A10, uuid="GPU-a10")]
            )
        ),
        [deployment(models=models(QWEN3B))],
        "Placed",
        reasons.PLACED_OK,
        layout=[("n", (1,), (QWEN3B,))],
    ),
    Case(
        "an empty inventory is NoMatchingGPU with a hint about the agent",
        lambda: inventory(),
        [deployment(models=models(QWEN3B))],
        "Refused",
        reasons.NO_MATCHING_GPU,
        message=["agent"],
    ),
    # --- sizing sources ---------------------------------------------------------------------
    Case(
        "a model gpupin cannot size is refused with a hint to set vram",
        workstation,
        [deployment(engine="ollama", models=models("acme/house-model:latest"))],
        "Refused",
        reasons.UNKNOWN_MODEL_SIZE,
        message=["spec.models[0].vram"],
    ),
    Case(
        "vram makes an unknown model placeable, and is what the plan reserves",
        workstation,
        [deployment(engine="ollama", models=[{"name": "acme/house-model:latest", "vram": "7Gi"}])],
        "Placed",
        reasons.PLACED_OK,
        layout=[("workstation", (0,), ("acme/house-model:latest",))],
        check=lambda p: p.placements[0].gpus[0].vram_bytes == 7 * GiB,
    ),
    Case(
        "with tensor parallelism vram is divided over the ranks",
        lambda: inventory(node("n", T4, T4)),
        [deployment(models=[{"name": "org/private-model", "vram": "26Gi"}], tensorParallelSize=2)],
        "Placed",
        reasons.DTYPE_FALLBACK,
        layout=[("n", (0, 1), ("org/private-model",))],
    ),
    # --- replicas -----------------------------------------------------------------------------
    Case(
        "vLLM replicas with TP 2 take disjoint pairs",
        lambda: inventory(node("a100", A100_80, A100_80, A100_80, A100_80)),
        [deployment(models=models(QWEN3B), tensorParallelSize=2, replicas=2)],
        "Placed",
        reasons.PLACED_OK,
        layout=[("a100", (0, 1), (QWEN3B,)), ("a100", (2, 3), (QWEN3B,))],
    ),
    Case(
        "more vLLM replicas than GPU groups: TooFewGPUs",
        lambda: inventory(node("n", A10, A10)),
        [deployment(models=models(QWEN3B), tensorParallelSize=2, replicas=2)],
        "Refused",
        reasons.TOO_FEW_GPUS,
    ),
    Case(
        "held GPUs (from the cluster) are InsufficientGPUs, not InsufficientVRAM",
        lambda: inventory(node("n", A10)),
        [deployment(models=models(QWEN3B))],
        "Refused",
        reasons.INSUFFICIENT_GPUS,
        holds=[Hold(uuid="GPU-n-0", vram_bytes=20 * GiB, exclusive=True, owner="other/chat")],
        message=["other/chat holds"],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_planner_table(case: Case) -> None:
    planner = Planner(case.inventory(), case.holds, case.pinning)
    result = None
    for item in case.deployments:
        result = planner.plan(item)
    assert result is not None
    assert (result.outcome, result.reason) == (case.outcome, case.reason), result.message
    if case.layout is not None:
        assert layout(result) == case.layout
    for fragment in case.message:
        assert fragment in result.message
    assert result.message, "every plan explains itself"
    if case.check is not None:
        assert case.check(result), result
    if result.outcome == "Refused":
        assert result.placements == ()
        assert result.reason in reasons.REFUSALS


def test_refused_plan_takes_nothing() -> None:
    """A refused deployment leaves the cluster state as it found it."""
    planner = Planner(inventory(node("n", RTX_4090)))
    big = planner.plan(deployment("big", engine="ollama", models=models("qwen2.5:32b", "llama3.1:70b")))
    assert big.outcome == "Refused"
    small = planner.plan(deployment("small", engine="ollama", models=models("qwen2.5:14b", "qwen2.5:7b")))
    assert layout(small) == [("n", (0,), ("qwen2.5:14b", "qwen2.5:7b"))]


def test_existing_pods_stay_where_they_are() -> None:
    """A re-plan keeps a valid existing pod on its GPUs instead of moving it to the best fit."""
    cluster = inventory(node("a100", A100_80, A100_80, A100_80, A100_80))
    spec = deployment(models=models(QWEN3B))
    fresh = plan(spec, cluster)
    assert layout(fresh) == [("a100", (0,), (QWEN3B,))]
    kept = plan(spec, cluster, current=[CurrentPod(gpu_uuids=("GPU-a100-2",), models=(QWEN3B,))])
    assert layout(kept) == [("a100", (2,), (QWEN3B,))]
    assert kept.placements[0].pod != fresh.placements[0].pod


def test_existing_ollama_pod_kept_and_invalid_one_replanned() -> None:
    cluster = workstation()
    spec = deployment(engine="ollama", models=models("llama3.2:3b"))
    kept = plan(
        spec, cluster, current=[CurrentPod(gpu_uuids=("GPU-workstation-0",), models=("llama3.2:3b",))]
    )
    assert layout(kept) == [("workstation", (0,), ("llama3.2:3b",))]
    gone = plan(spec, cluster, current=[CurrentPod(gpu_uuids=("GPU-vanished",), models=("llama3.2:3b",))])
    assert layout(gone) == [("workstation", (1,), ("llama3.2:3b",))]


def test_same_inputs_same_plan() -> None:
    spec = deployment(engine="ollama", models=models("qwen2.5:14b", "llama3.1:8b", "nomic-embed-text"))
    assert plan(spec, workstation()) == plan(spec, workstation())


def test_pod_names_are_dns_labels_even_for_long_deployment_names() -> None:
    long_name = "a-very-long-deployment-name-" + "x" * 200
    result = plan(deployment(long_name, models=models(QWEN3B)), inventory(node("n", A10)))
    pod = result.placements[0].pod
    assert len(pod) <= 63
    assert pod[0].isalpha() and pod.replace("-", "").isalnum() and pod == pod.lower()


def test_unknown_pinning_mode_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="visible-devices"):
        Planner(workstation(), pinning="magic")  # type: ignore[arg-type]


def test_a_gpu_a_vllm_pod_owns_is_said_to_be_held_exclusively() -> None:
    # a vLLM pod takes its whole GPU whatever its gpuMemoryUtilization: a refusal that followed
    # must not describe that GPU as partly used (issue 12)
    planner = Planner(inventory(node("box", RTX_4090)))
    small = deployment(
        "small-vllm",
        engine="vllm",
        models=models("Qwen/Qwen2.5-0.5B-Instruct"),
        vllm={"gpuMemoryUtilization": 0.3, "maxModelLen": 4096},
    )
    assert planner.plan(small).placed
    refused = planner.plan(deployment("chat", engine="ollama", models=models("qwen2.5:7b")))
    assert refused.reason == reasons.INSUFFICIENT_GPUS
    assert "default/small-vllm holds RTX 4090 24.0 GiB (GPU 0 on box) exclusively (it uses" in refused.message


# -- GPUs are not shared across namespaces (unless the admin allows it) --------------------------


def _two_tenants(policy: Policy = DEFAULT_POLICY) -> tuple[Planner, Plan]:
    """Tenant a's Ollama model on GPU 0 of a node with two A100s (the best fit for both models)."""
    planner = Planner(inventory(node("n", A100_80, A100_80)), policy=policy)
    first = planner.plan(deployment("chat", namespace="a", engine="ollama", models=models("llama3.1:8b")))
    assert layout(first) == [("n", (0,), ("llama3.1:8b",))]
    return planner, first


def test_ollama_pods_of_another_namespace_go_on_another_gpu() -> None:
    planner, _ = _two_tenants()
    other = planner.plan(deployment("chat", namespace="b", engine="ollama", models=models("qwen2.5:7b")))
    assert layout(other) == [("n", (1,), ("qwen2.5:7b",))], "not beside tenant a's model on GPU 0"
    same = planner.plan(
        deployment("embed", namespace="a", engine="ollama", models=models("nomic-embed-text"))
    )
    assert layout(same) == [("n", (0,), ("nomic-embed-text",))], (
        "the same namespace still shares (GPU 1 is b's)"
    )


def test_a_gpu_held_by_another_namespace_is_a_wait_that_says_so() -> None:
    planner = Planner(inventory(node("n", A100_80)))
    planner.plan(deployment("chat", namespace="a", engine="ollama", models=models("llama3.1:8b")))
    refused = planner.plan(deployment("chat", namespace="b", engine="ollama", models=models("qwen2.5:7b")))
    assert not refused.placed and refused.reason == reasons.INSUFFICIENT_GPUS
    assert "A100-SXM4-80GB 80.0 GiB (GPU 0 on n) has room but holds pods of namespace a;" in refused.message
    assert (
        "GPUs are not shared across namespaces (operator flag --allow-cross-namespace-sharing). "
        "It is placed when a GPU is free"
    ) in refused.message


def test_the_flag_allows_sharing_across_namespaces_as_before() -> None:
    planner, _ = _two_tenants(Policy(cross_namespace_sharing=True))
    other = planner.plan(deployment("chat", namespace="b", engine="ollama", models=models("qwen2.5:7b")))
    assert layout(other) == [("n", (0,), ("qwen2.5:7b",))], "best fit: beside tenant a's model"


def test_pods_already_sharing_a_gpu_across_namespaces_stay_and_take_no_new_model() -> None:
    """Placed before the rule (or under the flag): the pod keeps its GPU; a model added to the
    deployment goes to a GPU of its own."""
    cluster = inventory(node("n", A100_80, A100_80))
    holds = [Hold(uuid="GPU-n-0", vram_bytes=10 * GiB, exclusive=False, owner="a/chat")]
    current = [CurrentPod(gpu_uuids=("GPU-n-0",), models=("qwen2.5:7b",))]
    item = deployment("chat", namespace="b", engine="ollama", models=models("qwen2.5:7b"))
    kept = Planner(cluster, holds).plan(item, current)
    assert layout(kept) == [("n", (0,), ("qwen2.5:7b",))]
    grown = deployment("chat", namespace="b", engine="ollama", models=models("qwen2.5:7b", "llama3.2:3b"))
    placed = Planner(cluster, holds).plan(grown, current)
    assert layout(placed) == [("n", (0,), ("qwen2.5:7b",)), ("n", (1,), ("llama3.2:3b",))]
    shared = Planner(cluster, holds, policy=Policy(cross_namespace_sharing=True)).plan(grown, current)
    assert layout(shared) == [("n", (0,), ("llama3.2:3b", "qwen2.5:7b"))]
