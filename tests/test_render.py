"""Rendering plans into Pods, Services, ResourceClaimTemplates and NetworkPolicies.

Aspects: each pinning mode pins the planned GPU (env + runtime class; DRA claim by UUID;
device-plugin count); vLLM and Ollama containers (args, probes, /dev/shm, model pull and
preload, the env that keeps Ollama's memory what was planned); Services per engine; the
placement annotation and labels the operator reads back; deterministic names and spec
hashes; every example deployment placed (and rendered) or refused (with its reason) as a table
says, and every rendered object valid Kubernetes v1.37 (strict schema). What every pod gets for
the cluster admin: no service account token, Ollama as a non-root user (vLLM as its image's), a
model cache emptyDir limited by default from the pod's models, and (when configured) one
NetworkPolicy per deployment that admits only its namespace's pods to the serving port.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from typing import Any

import kubernetes_validate
import pytest

from gpupin import constants, naming, reasons
from gpupin.api.rules import reserved_env_name
from gpupin.api.v1alpha1 import EnvVar, LLMDeployment
from gpupin.inventory import Inventory, NodeInventory
from gpupin.loading import load_deployments, load_inventory
from gpupin.pinning import PINNING_MODES, PinningModeName
from gpupin.planner import Planner, plan
from gpupin.quantity import GiB
from gpupin.render import CACHE_HEADROOM, RenderConfig, auto_cache_bytes, render, spec_hash

from helpers import A10, EXAMPLES, T4, deployment, inventory, is_dns_1035_label, models, node, workstation

SEED_OLLAMA = deployment(
    "assistant", engine="ollama", models=models("qwen2.5:14b", "llama3.1:8b", "nomic-embed-text")
)
TP2 = deployment("chat", models=models("Qwen/Qwen2.5-3B-Instruct"), tensorParallelSize=2)


def _render(
    item: LLMDeployment, cluster: Inventory, pinning: PinningModeName = "visible-devices"
) -> list[dict[str, Any]]:
    result = plan(item, cluster, pinning=pinning)
    assert result.placed, result.message
    return render(item, result, RenderConfig(pinning=pinning))


def _of(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_visible_devices_pins_by_uuid_without_a_gpu_request() -> None:
    pods = _of(_render(SEED_OLLAMA, workstation()), "Pod")
    by_gpu = {
        json.loads(p["metadata"]["annotations"][constants.PLACEMENT_ANNOTATION])["gpus"][0]["index"]: p
        for p in pods
    }
    pod = by_gpu[0]
    env = _env(pod["spec"]["containers"][0])
    assert env["NVIDIA_VISIBLE_DEVICES"] == env["CUDA_VISIBLE_DEVICES"] == "GPU-workstation-0"
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert pod["spec"]["runtimeClassName"] == "nvidia"
    assert "nvidia.com/gpu" not in json.dumps(pod["spec"]["containers"][0].get("resources", {}))
    terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert terms == [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["workstation"]}]}]
    assert pod["metadata"]["labels"][naming.gpu_label_key("GPU-workstation-0")] == "true"
    assert _env(by_gpu[1]["spec"]["containers"][0])["NVIDIA_VISIBLE_DEVICES"] == "GPU-workstation-1"


def test_dra_claims_exactly_the_planned_gpus() -> None:
    objects = _render(TP2, inventory(node("n", A10, A10, A10)), pinning="dra")
    (template,) = _of(objects, "ResourceClaimTemplate")
    (pod,) = _of(objects, "Pod")
    expressions = [
        r["exactly"]["selectors"][0]["cel"]["expression"]
        for r in template["spec"]["spec"]["devices"]["requests"]
    ]
    assert expressions == [
        "device.attributes['gpu.nvidia.com'].uuid == 'GPU-n-0'",
        "device.attributes['gpu.nvidia.com'].uuid == 'GPU-n-1'",
    ]
    assert all(
        r["exactly"]["deviceClassName"] == "gpu.nvidia.com"
        for r in template["spec"]["spec"]["devices"]["requests"]
    )
    assert pod["spec"]["resourceClaims"] == [
        {"name": "gpus", "resourceClaimTemplateName": template["metadata"]["name"]}
    ]
    assert pod["spec"]["containers"][0]["resources"]["claims"] == [{"name": "gpus"}]
    assert "NVIDIA_VISIBLE_DEVICES" not in _env(pod["spec"]["containers"][0])
    assert "runtimeClassName" not in pod["spec"]


def test_device_plugin_requests_the_count() -> None:
    (pod,) = _of(_render(TP2, inventory(node("n", A10, A10)), pinning="device-plugin"), "Pod")
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert "NVIDIA_VISIBLE_DEVICES" not in _env(pod["spec"]["containers"][0])


def test_vllm_pod() -> None:
    item = deployment(
        "chat",
        models=models("Qwen/Qwen2.5-1.5B-Instruct"),
        tensorParallelSize=2,
        vllm={"args": ["--enable-prefix-caching"], "maxModelLen": 8192},
        env=[{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}],
        resources={"limits": {"memory": "32Gi"}},
    )
    objects = _render(item, inventory(node("t4", T4, T4)))
    (pod,) = _of(objects, "Pod")
    container = pod["spec"]["containers"][0]
    args = container["args"]
    assert args[0] == "Qwen/Qwen2.5-1.5B-Instruct"
    assert args[args.index("--tensor-parallel-size") + 1] == "2"
    assert args[args.index("--max-model-len") + 1] == "8192"
    assert args[args.index("--dtype") + 1] == "half", "bf16 model on compute capability 7.5"
    assert args[-1] == "--enable-prefix-caching"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}} in pod["spec"]["volumes"]
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    assert _env(container)["HF_TOKEN"] == {"secretKeyRef": {"name": "hf", "key": "token"}}
    assert container["resources"]["limits"] == {"memory": "32Gi"}
    (service,) = _of(objects, "Service")
    assert service["metadata"]["name"] == "chat"
    assert service["spec"]["selector"] == {constants.DEPLOYMENT_LABEL: "chat"}
    assert service["spec"]["ports"][0]["port"] == 8000


def test_assumed_context_is_rendered_so_vllm_runs_what_was_planned() -> None:
    (pod,) = _of(_render(deployment("x", models=models("acme/Custom-3B")), inventory(node("n", A10))), "Pod")
    args = pod["spec"]["containers"][0]["args"]
    assert args[args.index("--max-model-len") + 1] == "8192"


def test_ollama_pod_keeps_the_planned_memory_true() -> None:
    pods = _of(_render(SEED_OLLAMA, workstation()), "Pod")
    pod = next(
        p
        for p in pods
        if "qwen2.5:14b" in json.loads(p["metadata"]["annotations"][constants.PLACEMENT_ANNOTATION])["models"]
    )
    container = pod["spec"]["containers"][0]
    env = _env(container)
    assert env["OLLAMA_CONTEXT_LENGTH"] == "4096" and env["OLLAMA_NUM_PARALLEL"] == "1"
    assert env["OLLAMA_KEEP_ALIVE"] == "-1" and env["OLLAMA_MAX_LOADED_MODELS"] == "2"
    preload = container["lifecycle"]["postStart"]["exec"]["command"][-1]
    assert "qwen2.5:14b" in preload and "nomic-embed-text:latest" in preload
    ready = container["readinessProbe"]["exec"]["command"][-1]
    assert "/api/ps" in ready and "nomic-embed-text:latest" in ready
    assert "OLLAMA_FLASH_ATTENTION" not in env, "unset: Ollama enables flash attention per model"
    (pull,) = pod["spec"]["initContainers"]
    assert "ollama pull" in pull["command"][-1]
    # What these programs do is checked on the real Ollama server in test_ollama_pods.py.


@pytest.mark.parametrize(
    ("names", "context"),
    [
        (("nomic-embed-text",), "2048"),  # trained for 2048: Ollama would cap it there itself
        (("nomic-embed-text", "llama3.2:3b"), "8192"),  # one server: the longer-trained model keeps 8192
        (("nomic-embed-text", "acme/house-model:1b"), "8192"),  # unknown training context: as asked
    ],
)
def test_ollama_context_is_what_was_sized_capped_at_the_models_training(
    names: tuple[str, ...], context: str
) -> None:
    """Sizing caps each model's KV cache at the context it was trained for; the pod renders the
    same figure, so the server runs what was planned and the Placed message says so."""
    item = deployment("ctx", engine="ollama", models=models(*names), ollama={"contextLength": 8192})
    result = plan(item, inventory(node("n", A10)))
    (pod,) = _of(render(item, result, RenderConfig()), "Pod")
    assert _env(pod["spec"]["containers"][0])["OLLAMA_CONTEXT_LENGTH"] == context
    assert f"(context {context} × 1 parallel" in result.message
    assert ("capped at the longest context" in result.message) == (context != "8192"), result.message


@pytest.mark.parametrize("pinning", PINNING_MODES)
def test_model_pull_never_sees_a_gpu(pinning: PinningModeName) -> None:
    """The ollama image sets NVIDIA_VISIBLE_DEVICES=all: the init container overrides it in every mode."""
    for pod in _of(_render(SEED_OLLAMA, inventory(node("n", A10, A10, A10)), pinning=pinning), "Pod"):
        (pull,) = pod["spec"]["initContainers"]
        assert _env(pull)["NVIDIA_VISIBLE_DEVICES"] == "void", "pulling models needs no GPU"


DEFAULTS = {"HOME"}
"""Variables gpupin sets that a deployment may replace: they choose no GPU and size nothing."""


@pytest.mark.parametrize("pinning", PINNING_MODES)
def test_every_variable_gpupin_sets_is_reserved_and_wins(pinning: PinningModeName) -> None:
    """The API refuses every env name gpupin renders (rules.reserved_env_name — one rule) but the
    defaults a user may replace (HOME), and a stored object from before that rule (built here without
    validation) still cannot unpin its pod: gpupin's values come after the user's, each name once."""
    cluster = inventory(node("n", A10, A10, A10))
    for item in (SEED_OLLAMA, TP2):
        for pod in _of(_render(item, cluster, pinning=pinning), "Pod"):
            for container in [*pod["spec"]["containers"], *pod["spec"].get("initContainers", [])]:
                for var in container["env"]:
                    assert reserved_env_name(var["name"]) or var["name"] in DEFAULTS, (
                        f"{var['name']} is not reserved"
                    )
    env = [
        EnvVar.model_construct(name="HF_TOKEN", value="t", value_from=None),
        EnvVar.model_construct(name="NVIDIA_VISIBLE_DEVICES", value="all", value_from=None),
        EnvVar.model_construct(name="OLLAMA_NUM_PARALLEL", value="64", value_from=None),
    ]
    sneaky = SEED_OLLAMA.model_copy(update={"spec": SEED_OLLAMA.spec.model_copy(update={"env": env})})
    for pod in _of(_render(sneaky, cluster, pinning=pinning), "Pod"):
        for container in [*pod["spec"]["containers"], *pod["spec"]["initContainers"]]:
            names = [e["name"] for e in container["env"]]
            assert len(names) == len(set(names)), names
            first = next(n for n in names if n not in DEFAULTS)
            assert first == "HF_TOKEN", "the user's variables come before gpupin's reserved ones"
            assert _env(container).get("NVIDIA_VISIBLE_DEVICES") != "all"
        assert _env(pod["spec"]["containers"][0])["OLLAMA_NUM_PARALLEL"] == "1"


@pytest.mark.parametrize("pinning", PINNING_MODES)
def test_vllm_never_gets_a_gpu_uuid_in_cuda_visible_devices(pinning: PinningModeName) -> None:
    """vLLM before 0.33 int()s every CUDA_VISIBLE_DEVICES entry (vllm-project/vllm#20939); inside a
    container limited by NVIDIA_VISIBLE_DEVICES the planned GPUs are 0..n-1."""
    (pod,) = _of(_render(TP2, inventory(node("n", A10, A10, A10)), pinning=pinning), "Pod")
    env = _env(pod["spec"]["containers"][0])
    if pinning == "visible-devices":
        assert env["NVIDIA_VISIBLE_DEVICES"] == "GPU-n-0,GPU-n-1"
        assert env["CUDA_VISIBLE_DEVICES"] == "0,1"
    else:
        assert "CUDA_VISIBLE_DEVICES" not in env
    container = pod["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health", "/v1/* answers 401 with an API key"


def test_ollama_service_per_model_selects_only_its_pods() -> None:
    objects = _render(SEED_OLLAMA, workstation())
    services = {s["metadata"]["annotations"]["gpupin.dev/model"]: s for s in _of(objects, "Service")}
    names = {model: s["metadata"]["name"] for model, s in services.items()}
    # the names of every release: an upgrade renames no Service a client addresses
    assert names == {
        "qwen2.5:14b": "assistant-qwen2-5-14b",
        "llama3.1:8b": "assistant-llama3-1-8b",
        "nomic-embed-text": "assistant-nomic-embed-text",
    }
    selector = services["llama3.1:8b"]["spec"]["selector"]
    matching = [
        p
        for p in _of(objects, "Pod")
        if all(p["metadata"]["labels"].get(k) == v for k, v in selector.items())
    ]
    assert len(matching) == 1
    assert "llama3.1:8b" in matching[0]["metadata"]["annotations"][constants.PLACEMENT_ANNOTATION]


def test_gfd_known_gpus_are_never_pinned_by_index() -> None:
    """GFD gives no UUID and no index: visible-devices refuses such a node (0..count-1 can name the
    wrong card) and says what to do; device-plugin, where the kubelet picks among alike GPUs, uses it."""
    cluster = inventory(
        NodeInventory.model_validate(
            {
                "name": "n",
                "gpus": [
                    {
                        "index": i,
                        "uuid": f"GFD-n-{i}",
                        "name": "NVIDIA A10",
                        "memory": "23028Mi",
                        "computeCapability": "8.6",
                    }
                    for i in range(2)
                ],
            }
        )
    )
    item = deployment("x", models=models("Qwen/Qwen2.5-3B-Instruct"), tensorParallelSize=2)
    refused = plan(item, cluster, pinning="visible-devices")
    assert (refused.outcome, refused.reason) == ("Refused", reasons.PINNING_UNSUPPORTED)
    for fragment in ("known only from GFD labels", "run the gpupin agent", "device-plugin", "dra"):
        assert fragment in refused.message, (fragment, refused.message)
    pod = _of(_render(item, cluster, pinning="device-plugin"), "Pod")[0]
    env = _env(pod["spec"]["containers"][0])
    assert "NVIDIA_VISIBLE_DEVICES" not in env and "CUDA_VISIBLE_DEVICES" not in env
    assert pod["spec"]["containers"][0]["resources"]["limits"][constants.GPU_RESOURCE] == "2"


def test_spec_hash_is_stable_and_tracks_the_spec() -> None:
    first = _render(SEED_OLLAMA, workstation())
    again = _render(SEED_OLLAMA, workstation())
    assert first == again
    for obj in first:
        assert obj["metadata"]["labels"][constants.SPEC_HASH_LABEL] == spec_hash(obj)
    changed = deployment(
        "assistant",
        engine="ollama",
        models=models("qwen2.5:14b", "llama3.1:8b", "nomic-embed-text"),
        ollama={"flashAttention": True},
    )
    hashes = {o["metadata"]["name"]: o["metadata"]["labels"][constants.SPEC_HASH_LABEL] for o in first}
    new_hashes = {
        o["metadata"]["name"]: o["metadata"]["labels"][constants.SPEC_HASH_LABEL]
        for o in _render(changed, workstation())
    }
    pod_names = {o["metadata"]["name"] for o in first if o["kind"] == "Pod"}
    assert all(hashes[n] != new_hashes[n] for n in pod_names)


def _spec_hash_by_copy(obj: dict[str, Any]) -> str:
    """spec_hash as first written: a deep copy through JSON, the label popped from it, hashed."""
    body = json.loads(json.dumps(obj))
    body.get("metadata", {}).get("labels", {}).pop(constants.SPEC_HASH_LABEL, None)
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]


@pytest.mark.parametrize("pinning", PINNING_MODES)
def test_spec_hash_is_the_hash_it_always_was(pinning: PinningModeName) -> None:
    """The operator replaces a pod whose hash changed, so hashing without copying the object must
    give every object the hash it had, and leave the object as it was."""
    items = load_deployments(sorted((EXAMPLES / "seed").glob("*.yaml")))
    planner = Planner(load_inventory(EXAMPLES / "inventory" / "cluster.yaml")[0], pinning=pinning)
    objects = [
        obj
        for item in items
        for obj in render(item, planner.plan(item), RenderConfig(pinning=pinning, network_policy="namespace"))
    ]
    assert {"Pod", "Service", "NetworkPolicy"} <= {o["kind"] for o in objects}
    for obj in objects:
        before = json.dumps(obj)
        assert (
            obj["metadata"]["labels"][constants.SPEC_HASH_LABEL] == spec_hash(obj) == _spec_hash_by_copy(obj)
        )
        assert json.dumps(obj) == before
    for odd in ({"kind": "X"}, {"metadata": {}}, {"metadata": {"labels": {"a": "b"}}}):
        assert spec_hash(odd) == _spec_hash_by_copy(odd)


def test_refused_plan_renders_nothing() -> None:
    item = deployment(engine="ollama", models=models("qwen2.5:32b"))
    assert render(item, plan(item, workstation()), RenderConfig()) == []


def test_storage_options() -> None:
    cluster = inventory(node("n", A10))
    pvc = _of(
        _render(
            deployment("a", models=models("Qwen/Qwen2.5-3B-Instruct"), storage={"existingClaim": "hf-cache"}),
            cluster,
        ),
        "Pod",
    )[0]
    assert pvc["spec"]["volumes"][0] == {"name": "models", "persistentVolumeClaim": {"claimName": "hf-cache"}}
    eph = _of(
        _render(
            deployment(
                "b",
                models=models("Qwen/Qwen2.5-3B-Instruct"),
                storage={"storageClassName": "fast", "size": "50Gi"},
            ),
            cluster,
        ),
        "Pod",
    )[0]
    template = eph["spec"]["volumes"][0]["ephemeral"]["volumeClaimTemplate"]
    assert template["spec"]["resources"]["requests"]["storage"] == "50Gi"
    sized = _of(
        _render(
            deployment("c", models=models("Qwen/Qwen2.5-3B-Instruct"), storage={"size": "20Gi"}), cluster
        ),
        "Pod",
    )[0]
    assert sized["spec"]["volumes"][0] == {"name": "models", "emptyDir": {"sizeLimit": "20Gi"}}


def _example_cases() -> list[tuple[str, str]]:
    cases = [
        (str(p.relative_to(EXAMPLES)), "inventory/workstation.yaml")
        for p in sorted((EXAMPLES / "seed").glob("*.yaml"))
    ]
    cases.append(("rules/fleet.yaml", "inventory/cluster.yaml"))
    return cases


# What the planner decides for every deployment of every example, against the example's
# inventory (fleet.yaml's are planned in order, later ones seeing the GPUs earlier ones took):
# a placed plan's reason (Placed or its warning) or a refusal's. Pinning mode device-plugin
# cannot choose a card on a node with mismatched GPUs (the workstation, the gaming box): a
# deployment that only such nodes can take is refused PinningUnsupported there, whatever else
# would be said of it; _DEVICE_PLUGIN lists those.
_OUTCOMES: dict[str, dict[str, str]] = {
    "seed/1-ollama-both-gpus.yaml": {"assistant": reasons.PLACED_OK},
    "seed/2-ollama-qwen32b.yaml": {"big-assistant": reasons.INSUFFICIENT_VRAM},
    "seed/3-vllm-tp2.yaml": {"chat-tp2": reasons.HETEROGENEOUS_TENSOR_PARALLEL},
    "seed/4-vllm-tp1.yaml": {"chat": reasons.PLACED_OK},
    "seed/5-vllm-phi4.yaml": {"phi4": reasons.INSUFFICIENT_VRAM},
    "rules/fleet.yaml": {
        "coder-tp2": reasons.PLACED_OK,
        "phi4": reasons.PLACED_OK,
        "phi4-tp3": reasons.INVALID_SPEC,
        "small-chat-t4": reasons.DTYPE_FALLBACK,
        "vllm-on-pascal": reasons.UNSUPPORTED_COMPUTE_CAPABILITY,
        "ollama-on-pascal": reasons.PLACED_OK,
        "qwen14b-q8": reasons.PLACED_OK,
        "embeddings": reasons.PLACED_OK,
        "phi4-tp2": reasons.INSUFFICIENT_GPUS,
        "wants-h100": reasons.NO_MATCHING_GPU,
        "mystery": reasons.UNKNOWN_MODEL_SIZE,
    },
}
_DEVICE_PLUGIN: dict[str, dict[str, str]] = {
    **{
        example: dict.fromkeys(expected, reasons.PINNING_UNSUPPORTED)  # the seed's workstation: 4070 + 2060
        for example, expected in _OUTCOMES.items()
        if example.startswith("seed/")
    },
    "rules/fleet.yaml": {"coder-tp2": reasons.PINNING_UNSUPPORTED, "qwen14b-q8": reasons.PINNING_UNSUPPORTED},
}


def _expected(example: str, name: str, pinning: PinningModeName) -> str:
    overrides = _DEVICE_PLUGIN.get(example, {}) if pinning == "device-plugin" else {}
    return overrides.get(name, _OUTCOMES[example][name])


def test_the_outcome_table_covers_every_example() -> None:
    """A new example (or deployment in one) needs its expected outcome in _OUTCOMES."""
    assert sorted(_OUTCOMES) == sorted(example for example, _ in _example_cases())
    for example, expected in _OUTCOMES.items():
        assert sorted(expected) == sorted(d.metadata.name for d in load_deployments([EXAMPLES / example]))
        assert set(_DEVICE_PLUGIN.get(example, {})) <= set(expected)


@pytest.mark.parametrize("pinning", PINNING_MODES)
@pytest.mark.parametrize(("example", "inventory_file"), _example_cases())
def test_every_rendered_object_is_valid_kubernetes(
    example: str, inventory_file: str, pinning: PinningModeName
) -> None:
    """Each example deployment is placed or refused as _OUTCOMES says. A placed one renders its
    pods (one per placement), Services, and in mode dra a ResourceClaimTemplate per pod; a
    refused one renders nothing. Every object passes strict schema validation
    (kubernetes-validate, v1.37 OpenAPI) in every mode."""
    items = load_deployments([EXAMPLES / example])
    cluster, _ = load_inventory(EXAMPLES / inventory_file)
    planner = Planner(cluster, pinning=pinning)
    for item in items:
        name = item.metadata.name
        result = planner.plan(item)
        objects = render(item, result, RenderConfig(pinning=pinning, network_policy="namespace"))
        assert result.reason == _expected(example, name, pinning), (name, result.message)
        if result.reason in reasons.REFUSALS:
            assert not result.placed and objects == [], name
            continue
        assert result.placed, (name, result.message)
        kinds = Counter(o["kind"] for o in objects)
        assert kinds["Pod"] == len(result.placements) >= 1, (name, kinds)
        assert kinds["Service"] >= 1, (name, kinds)
        assert kinds["ResourceClaimTemplate"] == (kinds["Pod"] if pinning == "dra" else 0), (name, kinds)
        assert kinds["NetworkPolicy"] == 1, (name, kinds)
        assert set(kinds) <= {"Pod", "Service", "ResourceClaimTemplate", "NetworkPolicy"}, (name, kinds)
        for obj in objects:
            kubernetes_validate.validate(obj, "1.37.0", strict=True)
            obj_name = obj["metadata"]["name"]
            assert is_dns_1035_label(obj_name), obj_name
            for key, value in obj["metadata"]["labels"].items():
                assert len(key.split("/")[-1]) <= 63 and len(value) <= 63, key


# -- what every pod gets for the cluster admin ----------------------------------------------------


def test_no_pod_mounts_a_service_account_token_and_ollama_runs_as_non_root() -> None:
    """The servers never call the Kubernetes API. Ollama runs as uid/gid 1000 (fsGroup 1000 makes
    the models volume its group's) with HOME=/tmp in both its containers; vLLM runs as its image's
    user (root: its caches live under /root), so its pod says nothing of users."""
    (ollama, *_) = _of(_render(SEED_OLLAMA, workstation()), "Pod")
    (vllm,) = _of(
        _render(deployment("chat", models=models("Qwen/Qwen2.5-3B-Instruct")), workstation()), "Pod"
    )
    for pod in (ollama, vllm):
        assert pod["spec"]["automountServiceAccountToken"] is False
        assert pod["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in [*pod["spec"]["containers"], *pod["spec"].get("initContainers", [])]:
            assert container["securityContext"] == {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
            }
    assert ollama["spec"]["securityContext"] == {
        "seccompProfile": {"type": "RuntimeDefault"},
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "fsGroup": 1000,
        "fsGroupChangePolicy": "OnRootMismatch",
    }
    for container in [*ollama["spec"]["containers"], *ollama["spec"]["initContainers"]]:
        assert _env(container)["HOME"] == "/tmp", container["name"]
    assert vllm["spec"]["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    user_home = deployment(
        "h", engine="ollama", models=models("qwen2.5:7b"), env=[{"name": "HOME", "value": "/x"}]
    )
    (pod,) = _of(_render(user_home, workstation()), "Pod")
    homes = [e["value"] for e in pod["spec"]["containers"][0]["env"] if e["name"] == "HOME"]
    assert homes == ["/x"], "HOME is a default: a user's HOME replaces it"


def test_the_model_cache_limit_defaults_to_twice_the_pods_models_plus_headroom() -> None:
    """Without spec.storage.size the emptyDir gets a sizeLimit: auto is 2 × the plan's estimate of the
    pod's own models + 10 GiB, in whole GiB; a fixed size or none by flag; the spec's size wins,
    and a claim has no emptyDir."""
    result = plan(SEED_OLLAMA, workstation())
    sizes = {m.name: m.vram_bytes for m in result.models}
    pods = _of(render(SEED_OLLAMA, result, RenderConfig()), "Pod")
    assert len(pods) == 2
    for pod in pods:
        held = json.loads(pod["metadata"]["annotations"][constants.PLACEMENT_ANNOTATION])["models"]
        limit = 2 * sum(sizes[m] for m in held) + CACHE_HEADROOM
        expected = -(-limit // GiB)
        assert pod["spec"]["volumes"][0] == {"name": "models", "emptyDir": {"sizeLimit": f"{expected}Gi"}}
        assert expected * GiB == auto_cache_bytes(held, sizes) >= 2 * sum(sizes[m] for m in held) + 10 * GiB
    assert len({p["spec"]["volumes"][0]["emptyDir"]["sizeLimit"] for p in pods}) == 2, (
        "each pod its own models"
    )
    assert auto_cache_bytes(["unknown"], {}) == 10 * GiB
    fixed = _of(render(SEED_OLLAMA, result, RenderConfig(default_cache_size="200Gi")), "Pod")
    assert {p["spec"]["volumes"][0]["emptyDir"]["sizeLimit"] for p in fixed} == {"200Gi"}
    unlimited = _of(render(SEED_OLLAMA, result, RenderConfig(default_cache_size="none")), "Pod")
    assert [p["spec"]["volumes"][0] for p in unlimited] == [{"name": "models", "emptyDir": {}}] * 2
    cluster = inventory(node("n", A10))
    sized = deployment("s", models=models("Qwen/Qwen2.5-3B-Instruct"), storage={"size": "20Gi"})
    (pod,) = _of(_render(sized, cluster), "Pod")
    assert pod["spec"]["volumes"][0] == {"name": "models", "emptyDir": {"sizeLimit": "20Gi"}}
    claimed = deployment("c", models=models("Qwen/Qwen2.5-3B-Instruct"), storage={"existingClaim": "hf"})
    (pod,) = _of(_render(claimed, cluster), "Pod")
    assert pod["spec"]["volumes"][0] == {"name": "models", "persistentVolumeClaim": {"claimName": "hf"}}


@pytest.mark.parametrize(
    ("item", "port"),
    [(SEED_OLLAMA, 11434), (deployment("chat", models=models("Qwen/Qwen2.5-3B-Instruct")), 8000)],
)
def test_a_network_policy_admits_only_the_namespace_to_the_serving_port(
    item: LLMDeployment, port: int
) -> None:
    """--network-policy namespace: one NetworkPolicy per deployment selects all its pods and admits
    pods of its own namespace (and of namespaces with the configured labels) to the engine's port
    only; Ingress only (pulls need egress). none (the default): no NetworkPolicy."""
    result = plan(item, workstation())
    assert not _of(render(item, result, RenderConfig()), "NetworkPolicy")
    config = RenderConfig(network_policy="namespace")
    (policy,) = _of(render(item, result, config), "NetworkPolicy")
    assert re.fullmatch(rf"{item.metadata.name}-gpupin-[0-9a-f]{{6}}", policy["metadata"]["name"])
    assert policy["metadata"]["namespace"] == item.metadata.namespace
    assert policy["metadata"]["labels"][constants.MANAGED_BY_LABEL] == constants.MANAGED_BY
    assert constants.SPEC_HASH_LABEL in policy["metadata"]["labels"]
    assert policy["spec"] == {
        "podSelector": {"matchLabels": {constants.DEPLOYMENT_LABEL: item.metadata.name}},
        "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"podSelector": {}}], "ports": [{"protocol": "TCP", "port": port}]}],
    }
    pods = _of(render(item, result, config), "Pod")
    assert all(
        policy["spec"]["podSelector"]["matchLabels"].items() <= p["metadata"]["labels"].items() for p in pods
    )
    kubernetes_validate.validate(policy, "1.37.0", strict=True)
    wider = RenderConfig(
        network_policy="namespace", network_policy_namespaces=(("team", "ml"), ("monitoring", None))
    )
    first_name = policy["metadata"]["name"]
    (policy,) = _of(render(item, result, wider), "NetworkPolicy")
    assert policy["metadata"]["name"] != first_name, "other rules, another object (made before the old goes)"
    assert policy["spec"]["ingress"][0]["from"] == [
        {"podSelector": {}},
        {
            "namespaceSelector": {
                "matchLabels": {"team": "ml"},
                "matchExpressions": [{"key": "monitoring", "operator": "Exists"}],
            }
        },
    ]
    kubernetes_validate.validate(policy, "1.37.0", strict=True)


def test_a_long_deployment_name_gets_a_network_policy_name_of_its_own() -> None:
    long_a, long_b = "a" * 70 + "-one", "a" * 70 + "-two"
    names = set()
    for name in (long_a, long_b, "chat.v2"):
        item = deployment(name, engine="ollama", models=models("qwen2.5:7b"))
        (policy,) = _of(
            render(item, plan(item, workstation()), RenderConfig(network_policy="namespace")), "NetworkPolicy"
        )
        obj_name = policy["metadata"]["name"]
        assert len(obj_name) <= 63 and naming.dns_label(obj_name) == obj_name
        assert re.fullmatch(r".+-gpupin-[0-9a-f]{6}", obj_name), obj_name
        names.add(obj_name)
    assert len(names) == 3
