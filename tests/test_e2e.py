"""End to end on the real control plane (kube-apiserver, scheduler, garbage collector v1.37,
KWOK fake GPU nodes), with `gpupin operator` as a process. Marker: e2e.

Aspects: malformed LLMDeployments rejected by the API server itself (schema and CEL), each
naming the field, nothing created; lifecycle (scale up and down, an edit replaces pods without
duplicates, delete collects children, a deployment deleted while the operator is stopped);
crash safety (kill -9 at random points while children are created, 20 times: never a duplicate
pod, an orphan or a GPU given twice); contention (50 deployments at once onto 10 nodes: no GPU
double-booked, every refusal explained); DRA pinning (the ResourceClaim the real scheduler
allocates names exactly the device of the GPU gpupin planned).
"""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from typing import Any

import pytest

from gpupin import constants, reasons

from helpers import A10, A100_80, L4, RTX_2060, RTX_4070, T4
from kwok import Env, resource_slice, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

QWEN3B = "Qwen/Qwen2.5-3B-Instruct"

MALFORMED = [
    ({"models": []}, "spec.models"),
    ({"models": [{"name": "a"}], "tensorParallelSize": 0}, "spec.tensorParallelSize"),
    ({"models": [{"name": "a"}], "engine": "tgi"}, "spec.engine"),
    ({"models": [{"name": "a", "vram": "lots"}]}, "spec.models[0].vram"),
    ({"models": [{"name": "a b"}]}, "spec.models[0].name"),
    ({"models": [{"name": "a"}], "replicas": -1}, "spec.replicas"),
    ({"engine": "vllm", "models": [{"name": "a/b"}, {"name": "c/d"}]}, "vLLM serves exactly one model"),
    (
        {"engine": "ollama", "models": [{"name": "a"}], "tensorParallelSize": 2},
        "tensorParallelSize is for vLLM only",
    ),
    ({"engine": "ollama", "models": [{"name": "a"}], "vllm": {}}, "vllm settings need engine: vllm"),
    ({"models": [{"name": "a"}, {"name": "a"}]}, "spec.models[1]"),
    ({"models": [{"name": "a"}], "vllm": {"gpuMemoryUtilization": 1.5}}, "spec.vllm.gpuMemoryUtilization"),
    (
        {"models": [{"name": "a"}], "resources": {"limits": {"nvidia.com/gpu": 1}}},
        "nvidia.com/gpu is gpupin's to set",
    ),
    ({"models": [{"name": "a"}], "ollama": {"kvCacheType": "q8_0"}}, "needs flashAttention"),
    (
        {"models": [{"name": "org/m"}], "vllm": {"args": ["--enforce-eager", "--max_model_len=4096"]}},
        "vllm.args must not repeat a flag gpupin sets",
    ),
    (
        {"models": [{"name": "a"}], "gpuSelector": {"minComputeCapability": "eight"}},
        "spec.gpuSelector.minComputeCapability",
    ),
]


def test_the_api_server_rejects_malformed_deployments(env: Env) -> None:
    for i, (spec, fragment) in enumerate(MALFORMED):
        body = {
            "apiVersion": constants.API_VERSION,
            "kind": constants.KIND,
            "metadata": {"name": f"bad-{i}", "namespace": env.namespace},
            "spec": spec,
        }
        result = env.cluster.kubectl("apply", "-f", "-", input=json.dumps(body), check=False)
        assert result.returncode != 0, f"accepted: {spec}"
        assert fragment in result.stderr, f"{spec}: {result.stderr}"
    assert (
        env.cluster.get(f"/apis/{constants.API_VERSION}/namespaces/{env.namespace}/{constants.PLURAL}")[
            "items"
        ]
        == []
    )


def _ready(env: Env, name: str, count: int) -> Any:
    def check() -> Any:
        body = env.cluster.deployment(env.namespace, name)
        status = body.get("status") or {}
        pods = [p for p in env.pods() if p["metadata"]["name"].startswith(name + "-")]
        return (
            status.get("observedGeneration") == body["metadata"]["generation"]
            and status.get("ready") == f"{count}/{count}"
            and len(pods) == count
            and pods
        )

    return check


def test_lifecycle_scale_edit_delete(env: Env) -> None:
    env.node("box", A10, A10, A10, A10)
    operator = env.operator()
    env.apply("chat", models=[{"name": QWEN3B}])
    wait_for(_ready(env, "chat", 1), what="1 replica")
    env.cluster.kubectl("scale", "llmd", "chat", "-n", env.namespace, "--replicas=3")
    pods = wait_for(_ready(env, "chat", 3), what="scaled to 3")
    assert len({p["metadata"]["annotations"][constants.PLACEMENT_ANNOTATION] for p in pods}) == 3
    env.cluster.kubectl("scale", "llmd", "chat", "-n", env.namespace, "--replicas=2")
    wait_for(_ready(env, "chat", 2), what="scaled down to 2")
    before = {p["metadata"]["name"]: p["metadata"]["uid"] for p in env.pods()}
    env.apply("chat", models=[{"name": QWEN3B}], replicas=2, vllm={"maxModelLen": 8192})
    pods = wait_for(
        lambda: (
            (ps := _ready(env, "chat", 2)())
            and all(p["metadata"]["uid"] not in before.values() for p in ps)
            and ps
        ),
        what="both pods replaced by the edit",
    )
    assert len(pods) == 2, "replaced, not duplicated"
    assert all("8192" in p["spec"]["containers"][0]["args"] for p in pods)
    env.delete("chat")
    wait_for(lambda: env.pods() == [], timeout=60, what="children collected by the garbage collector")
    # a deployment deleted while the operator is down: nothing left behind when it returns
    env.apply("gone", models=[{"name": QWEN3B}])
    wait_for(_ready(env, "gone", 1), what="gone placed")
    operator.stop()
    env.delete("gone")
    wait_for(lambda: env.pods() == [], timeout=60, what="collected while the operator is stopped")
    env.operator()
    env.apply("after", models=[{"name": QWEN3B}])
    wait_for(_ready(env, "after", 1), what="the restarted operator places new work on the freed GPU")


def test_kill_9_while_creating_children_twenty_times(env: Env) -> None:
    env.node("box", A100_80, A100_80, A100_80, A100_80, A100_80, A100_80, A100_80, A100_80)
    rng = random.Random(7)
    operator = env.operator()
    for i in range(4):
        env.apply(
            f"ollama-{i}",
            engine="ollama",
            models=[{"name": "llama3.2:3b"}, {"name": "qwen2.5:7b"}],
            replicas=2,
        )
    env.apply("vllm", models=[{"name": QWEN3B}], replicas=2)
    for round_ in range(20):
        time.sleep(rng.uniform(0.05, 0.8))  # a random point of its start-up or its writes
        operator.kill()
        if round_ % 5 == 4:  # change what is wanted while it is down
            env.apply("vllm", models=[{"name": QWEN3B}], replicas=1 + round_ % 3)
        operator = env.operator()
    for name in [f"ollama-{i}" for i in range(4)] + ["vllm"]:
        wait_for(env.placed(name), timeout=60, what=f"{name} placed after 20 kills")

    def converged() -> list[dict[str, Any]] | None:
        pods = env.pods()
        wanted = 4 * 2 + (
            1 + 19 % 3
        )  # each Ollama deployment: 2 pods (both models fit one GPU); vLLM replicas
        return pods if len(pods) == wanted else None

    pods = wait_for(converged, timeout=60, what="converged pod count")
    names = [p["metadata"]["name"] for p in pods]
    assert len(names) == len(set(names)), "no duplicate pod"
    owners = {p["metadata"]["ownerReferences"][0]["name"] for p in pods}
    assert owners <= {f"ollama-{i}" for i in range(4)} | {"vllm"}, "no orphan"
    _assert_no_gpu_given_twice(pods)


def _assert_no_gpu_given_twice(pods: list[dict[str, Any]], memory: dict[str, int] | None = None) -> None:
    used: dict[str, int] = defaultdict(int)
    holders: dict[str, set[str]] = defaultdict(set)
    exclusive: set[str] = set()
    for pod in pods:
        placement = json.loads(pod["metadata"]["annotations"][constants.PLACEMENT_ANNOTATION])
        owner = pod["metadata"]["ownerReferences"][0]["name"]
        for gpu in placement["gpus"]:
            used[gpu["uuid"]] += gpu["vramBytes"]
            holders[gpu["uuid"]].add(owner)
            if placement["exclusive"]:
                exclusive.add(gpu["uuid"])
    for uuid in exclusive:
        assert len(holders[uuid]) == 1, f"{uuid} owned exclusively but held by {holders[uuid]}"
    for uuid, total in used.items():
        if memory is not None:
            assert total <= memory[uuid], f"{uuid} oversubscribed"


def test_fifty_deployments_at_once_onto_ten_nodes(env: Env) -> None:
    shapes = [(RTX_4070, RTX_2060), (A10, A10), (L4, L4, T4), (A100_80,), (T4, T4)]
    nodes = [env.node(f"n{i}", *shapes[i % len(shapes)]) for i in range(10)]
    memory = {g.uuid: g.memory for n in nodes for g in n.gpus}
    env.operator()
    rng = random.Random(3)
    manifests = []
    for i in range(50):
        if i % 2:
            spec: dict[str, Any] = {
                "engine": "ollama",
                "models": [
                    {"name": m}
                    for m in rng.sample(
                        ["llama3.2:3b", "qwen2.5:7b", "llama3.1:8b", "qwen2.5:14b", "nomic-embed-text"],
                        rng.randint(1, 2),
                    )
                ],
            }
        else:
            spec = {
                "engine": "vllm",
                "models": [{"name": rng.choice([QWEN3B, "Qwen/Qwen2.5-1.5B-Instruct"])}],
                "tensorParallelSize": rng.choice([1, 1, 2]),
                "vllm": {"maxModelLen": 8192},
            }
        manifests.append(
            json.dumps(
                {
                    "apiVersion": constants.API_VERSION,
                    "kind": constants.KIND,
                    "metadata": {"name": f"d{i:02d}", "namespace": env.namespace},
                    "spec": spec,
                }
            )
        )
    env.cluster.apply("\n---\n".join(manifests))

    def all_decided() -> list[dict[str, Any]] | None:
        items = env.cluster.get(
            f"/apis/{constants.API_VERSION}/namespaces/{env.namespace}/{constants.PLURAL}"
        )["items"]
        decided = [
            i
            for i in items
            if (i.get("status") or {}).get("observedGeneration") == i["metadata"]["generation"]
        ]
        return items if len(decided) == 50 else None

    items = wait_for(all_decided, timeout=120, what="all 50 planned")
    placed = [i for i in items if i["status"]["reason"] in reasons.WARNINGS | {reasons.PLACED_OK}]
    refused = [i for i in items if i not in placed]
    assert placed and refused, "the cluster is meant to be over-asked"
    for item in refused:
        assert item["status"]["reason"] in reasons.REFUSALS and item["status"]["message"], item["status"]
    expected = sum(len(i["status"]["placements"]) for i in placed)

    def every_pod() -> list[dict[str, Any]] | None:
        pods = env.pods()
        return pods if len(pods) == expected else None

    pods = wait_for(every_pod, timeout=60, what="every planned pod")
    _assert_no_gpu_given_twice(pods, memory)


def test_dra_claims_name_exactly_the_planned_device(env: Env) -> None:
    box = env.node("dra", A10, A10, A10)
    kube = env.cluster.kube
    class_name = constants.DRA_DEVICE_CLASS
    if not any(
        c["metadata"]["name"] == class_name
        for c in kube.request("GET", "/apis/resource.k8s.io/v1/deviceclasses")["items"]
    ):
        kube.request(
            "POST",
            "/apis/resource.k8s.io/v1/deviceclasses",
            {
                "apiVersion": "resource.k8s.io/v1",
                "kind": "DeviceClass",
                "metadata": {"name": class_name},
                "spec": {
                    "selectors": [{"cel": {"expression": f"device.driver == '{constants.DRA_DRIVER}'"}}]
                },
            },
        )
    item = resource_slice(box)
    slice_name = item["metadata"]["name"]
    kube.request("POST", "/apis/resource.k8s.io/v1/resourceslices", item)
    try:
        env.operator("--pinning", "dra")
        # take GPU 0 with a first deployment so the second is planned onto a GPU the scheduler
        # would not pick by default
        env.apply("first", models=[{"name": QWEN3B}])
        env.apply("second", models=[{"name": QWEN3B}], tensorParallelSize=2)
        for name in ("first", "second"):
            wait_for(env.placed(name), what=f"{name} placed")

        def allocated() -> list[dict[str, Any]] | None:
            claims = env.cluster.get(f"/apis/resource.k8s.io/v1/namespaces/{env.namespace}/resourceclaims")[
                "items"
            ]
            done = [c for c in claims if (c.get("status") or {}).get("allocation")]
            return done if len(done) == 2 else None

        claims = wait_for(allocated, timeout=60, what="the scheduler allocating both claims")
        by_pod = {
            c["metadata"]["annotations"].get("resource.kubernetes.io/pod-claim-name")
            and c["metadata"]["ownerReferences"][0]["name"]: c
            for c in claims
        }
        for deployment in ("first", "second"):
            status = env.cluster.deployment(env.namespace, deployment)["status"]
            (placement,) = status["placements"]
            planned = {f"gpu-{g['index']}" for g in placement["gpus"]}
            claim = by_pod[placement["pod"]]
            devices = {r["device"] for r in claim["status"]["allocation"]["devices"]["results"]}
            assert devices == planned, (
                f"{deployment}: scheduler allocated {devices}, gpupin planned {planned}"
            )

        def running() -> list[dict[str, Any]] | None:
            pods = env.pods()
            return (
                pods if len(pods) == 2 and all(p["status"].get("phase") == "Running" for p in pods) else None
            )

        pods = wait_for(running, timeout=60, what="both pods running")
        assert all(p["spec"]["nodeName"] == box.name for p in pods)
    finally:
        kube.request("DELETE", f"/apis/resource.k8s.io/v1/resourceslices/{slice_name}")
