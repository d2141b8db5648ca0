"""The node agent: reading GPUs through NVML, publishing them on the Node, fake mode, DRA slices.

Aspects: NVML read from a real H100 capture (tests/fixtures/nvml, copied from a real host) comes out exactly as
captured; a stand-in NVML built from inventory data round-trips; every NVML error path
says why and publishes nothing misleading; the Node patch is computed only from what
differs (no writes in steady state) — checked against a real API server by counting
requests; fake mode end to end as a process; `gpupin inventory`; NVIDIA DRA ResourceSlices
read as an inventory, and the operator placing on a node known only from them. On a host
with an NVIDIA driver, `gpupin inventory -o json` is compared with nvidia-smi (skipped
elsewhere, with the reason).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpupin import constants
from gpupin.agent.gpus import FakeSource, GPUReadError, NvmlSource, Reading
from gpupin.agent.publish import ERROR_ANNOTATION, Agent, metadata_patch
from gpupin.inventory import UUID_ALLOWED, NodeInventory
from gpupin.resourceslices import inventory_from_resource_slices

from faultproxy import FaultProxy
from helpers import A10, EXAMPLES, FIXTURES, RTX_2060, RTX_4070, free_port, node
from kwok import Cluster, Operator, wait_for

CAPTURE = FIXTURES / "nvml" / "h100-80gb-hbm3.json"


class StandInNVML:
    """NVML's Python API with answers from data: a real capture, or an inventory.

    Only the calls gpupin makes exist, so a new call in the agent fails the tests loudly.
    Error classes are pynvml's own, so `except nvml.NVMLError_NotSupported` works as on a host.
    """

    import pynvml as _real

    NVMLError = _real.NVMLError
    NVMLError_NotSupported = _real.NVMLError_NotSupported

    def __init__(
        self, devices: list[dict[str, Any]], driver: str, cuda: int, fail: dict[str, Exception] | None = None
    ):
        self.devices = devices
        self.driver = driver
        self.cuda = cuda
        self.fail = fail or {}
        self.initialized = 0

    @classmethod
    def from_capture(cls, path: Path) -> StandInNVML:
        data = json.loads(path.read_text())
        return cls(data["devices"], data["driver_version"], data["cuda_driver_version"])

    @classmethod
    def from_inventory(cls, inventory: NodeInventory, mig_supported: bool = False) -> StandInNVML:
        devices = [
            {
                "index": g.index,
                "name": g.name,
                "uuid": g.uuid,
                "pci_bus_id": g.pci_bus_id or f"00000000:0{g.index}:00.0",
                "compute_capability": [int(x) for x in g.compute_capability.split(".")],
                "memory_total_bytes": g.memory,
                "mig_mode": [0, 0] if mig_supported else None,
            }
            for g in inventory.gpus
        ]
        return cls(devices, "580.0", 12080)

    def _maybe_fail(self, call: str) -> None:
        if call in self.fail:
            raise self.fail[call]

    def nvmlInit(self) -> None:
        self._maybe_fail("nvmlInit")
        self.initialized += 1

    def nvmlShutdown(self) -> None:
        self.initialized -= 1

    def nvmlDeviceGetCount(self) -> int:
        self._maybe_fail("nvmlDeviceGetCount")
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> dict[str, Any]:
        self._maybe_fail("nvmlDeviceGetHandleByIndex")
        return self.devices[index]

    def nvmlDeviceGetName(self, handle: dict[str, Any]) -> str:
        return str(handle["name"])

    def nvmlDeviceGetUUID(self, handle: dict[str, Any]) -> str:
        return str(handle["uuid"])

    def nvmlDeviceGetMemoryInfo(self, handle: dict[str, Any]) -> Any:
        return type("Memory", (), {"total": handle["memory_total_bytes"]})()

    def nvmlDeviceGetCudaComputeCapability(self, handle: dict[str, Any]) -> tuple[int, int]:
        return tuple(handle["compute_capability"])  # type: ignore[return-value]

    def nvmlDeviceGetPciInfo(self, handle: dict[str, Any]) -> Any:
        return type("Pci", (), {"busId": handle["pci_bus_id"]})()

    def nvmlDeviceGetMigMode(self, handle: dict[str, Any]) -> list[int]:
        if handle.get("mig_mode") is None:
            raise self._real.NVMLError_NotSupported(self._real.NVML_ERROR_NOT_SUPPORTED)
        return list(handle["mig_mode"])

    def nvmlSystemGetDriverVersion(self) -> str:
        return self.driver

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return self.cuda


def test_h100_capture_comes_out_exactly() -> None:
    nvml = StandInNVML.from_capture(CAPTURE)
    reading = NvmlSource(nvml).read("h100-host")
    (gpu,) = reading.inventory.gpus
    assert gpu.memory == 85_520_809_984
    assert gpu.compute_capability == "9.0"
    assert gpu.uuid == "GPU-fb05d912-f869-e10e-78d7-dc7634975bba"
    assert gpu.pci_bus_id == "00000000:00:06.0"
    assert gpu.name == "NVIDIA H100 80GB HBM3" and gpu.index == 0 and not gpu.mig_enabled
    assert (reading.inventory.driver_version, reading.inventory.cuda_driver_version) == ("580.159.04", "13.0")
    assert nvml.initialized == 0, "nvmlShutdown after every read"
    # nvidia-smi on the same host printed 81559 MiB: NVML's total, in MiB, rounded down
    assert gpu.memory // 2**20 == 81559


def test_stand_in_built_from_inventory_round_trips() -> None:
    inventory = node("workstation", RTX_4070, RTX_2060)
    inventory = NodeInventory(
        name=inventory.name,
        gpus=[g.model_copy(update={"pci_bus_id": f"00000000:0{g.index}:00.0"}) for g in inventory.gpus],
    )
    reading = NvmlSource(StandInNVML.from_inventory(inventory)).read("workstation")
    assert reading.inventory.gpus == inventory.gpus, "consumer cards answer NotSupported for MIG: not enabled"


@pytest.mark.parametrize(
    ("call", "error", "fragment"),
    [
        ("nvmlInit", "NVMLError_LibraryNotFound", "libnvidia-ml.so.1"),
        ("nvmlInit", "NVMLError_DriverNotLoaded", "driver not loaded"),
        ("nvmlInit", "NVMLError_NoPermission", "/dev/nvidiactl"),
        ("nvmlDeviceGetHandleByIndex", "NVMLError_GpuIsLost", "fell off the bus"),
        ("nvmlDeviceGetCount", "NVMLError_Unknown", "NVMLError_Unknown"),
    ],
)
def test_nvml_errors_say_why(call: str, error: str, fragment: str) -> None:
    import pynvml

    exc_class = getattr(pynvml, error)
    nvml = StandInNVML.from_capture(CAPTURE)
    nvml.fail = {call: exc_class()}
    with pytest.raises(GPUReadError) as info:
        NvmlSource(nvml).read("n")
    assert fragment in str(info.value)
    assert nvml.initialized == 0


def test_the_real_library_missing_here_is_reported(tmp_path: Path) -> None:
    """This machine has no NVIDIA driver: the real pynvml fails, and says so in words."""
    try:
        NvmlSource().read("here")
    except GPUReadError as exc:
        assert "NVML" in str(exc) or "driver" in str(exc)
    else:
        pytest.skip("an NVIDIA driver is present here")


def test_metadata_patch_only_for_differences() -> None:
    inventory = node("n", RTX_4070, RTX_2060)
    empty: dict[str, Any] = {"metadata": {"name": "n"}}
    patch = metadata_patch(empty, inventory, None)
    assert patch is not None
    assert patch["metadata"]["annotations"][constants.INVENTORY_ANNOTATION] == inventory.to_annotation()
    assert patch["metadata"]["labels"] == {constants.GPU_COUNT_LABEL: "2", constants.MIXED_LABEL: "true"}
    applied = {
        "metadata": {
            "name": "n",
            "annotations": patch["metadata"]["annotations"],
            "labels": patch["metadata"]["labels"],
        }
    }
    assert metadata_patch(applied, inventory, None) is None, "steady state: nothing to write"
    failing = metadata_patch(applied, inventory, "NVML failed")
    assert failing == {"metadata": {"annotations": {ERROR_ANNOTATION: "NVML failed"}}}
    recovered = {
        "metadata": {
            **applied["metadata"],
            "annotations": {**applied["metadata"]["annotations"], ERROR_ANNOTATION: "x"},
        }
    }
    assert metadata_patch(recovered, inventory, None) == {
        "metadata": {"annotations": {ERROR_ANNOTATION: None}}
    }
    assert metadata_patch(empty, None, "no driver") == {
        "metadata": {"annotations": {ERROR_ANNOTATION: "no driver"}}
    }


def test_fake_source_names_the_missing_node(tmp_path: Path) -> None:
    source = FakeSource(EXAMPLES / "inventory" / "cluster.yaml")
    assert len(source.read("a100-node").inventory.gpus) == 4
    with pytest.raises(GPUReadError, match="has no node named elsewhere"):
        source.read("elsewhere")
    with pytest.raises(GPUReadError, match="no such file"):
        FakeSource(tmp_path / "missing.yaml").read("x")


# --- against a real API server ----------------------------------------------------------------


class FlakySource:
    """A source whose answer the test changes between steps."""

    def __init__(self, inventory: NodeInventory | None) -> None:
        self.inventory = inventory
        self.error: str | None = None

    def read(self, node_name: str) -> Reading:
        if self.error or self.inventory is None:
            raise GPUReadError(self.error or "NVML library not found")
        return Reading(self.inventory, 0.001)


def test_publishes_on_change_only(cluster: Cluster, bare_node: str, tmp_path: Path) -> None:
    from gpupin.kube import Kube, load_configuration

    proxy = FaultProxy(cluster.kubeconfig).start()
    try:
        kube = Kube(load_configuration(str(proxy.kubeconfig(tmp_path / "proxy.kubeconfig"))))
        source = FlakySource(None)
        agent = Agent(kube, source, bare_node, interval=60)
        patches = rf"/api/v1/nodes/{bare_node}$"

        agent.step()  # NVML missing from the start: nothing but the reason
        meta = cluster.get(f"/api/v1/nodes/{bare_node}")["metadata"]
        assert constants.INVENTORY_ANNOTATION not in meta["annotations"]
        assert "NVML library not found" in meta["annotations"][ERROR_ANNOTATION]

        first = node(bare_node, RTX_4070, RTX_2060)
        source.inventory = first
        agent.step()
        meta = cluster.get(f"/api/v1/nodes/{bare_node}")["metadata"]
        assert (
            NodeInventory.model_validate(
                {**json.loads(meta["annotations"][constants.INVENTORY_ANNOTATION]), "name": bare_node}
            )
            == first
        )
        assert (
            meta["labels"][constants.GPU_COUNT_LABEL] == "2"
            and meta["labels"][constants.MIXED_LABEL] == "true"
        )
        assert ERROR_ANNOTATION not in meta["annotations"]
        before = proxy.count("PATCH", patches)

        for _ in range(3):
            agent.step()
        assert proxy.count("PATCH", patches) == before, "no writes in steady state"

        source.error = "a GPU fell off the bus (GpuIsLost)"
        agent.step()  # failing after a good read: the last inventory stays, the error is shown
        meta = cluster.get(f"/api/v1/nodes/{bare_node}")["metadata"]
        assert meta["annotations"][constants.INVENTORY_ANNOTATION] == first.to_annotation()
        assert "GpuIsLost" in meta["annotations"][ERROR_ANNOTATION]

        source.error = None
        source.inventory = node(bare_node, A10)
        agent.step()
        meta = cluster.get(f"/api/v1/nodes/{bare_node}")["metadata"]
        assert (
            meta["labels"][constants.GPU_COUNT_LABEL] == "1"
            and meta["labels"][constants.MIXED_LABEL] == "false"
        )
        assert ERROR_ANNOTATION not in meta["annotations"]
        assert agent.healthy()

        def sample(name: str, **labels: str) -> float | None:
            return agent.metrics.registry.get_sample_value(name, labels)

        assert (
            sample("gpupin_agent_reads_total", result="ok"),
            sample("gpupin_agent_reads_total", result="error"),
        ) == (5, 2)
        assert sample("gpupin_agent_publishes_total", result="unchanged") == 3, "the steady state"
        assert sample("gpupin_agent_publishes_total", result="updated") == 4
        assert sample("gpupin_agent_gpus", node=bare_node) == 1
        last = sample("gpupin_agent_last_publish_timestamp_seconds", node=bare_node)
        assert last is not None and abs(last - time.time()) < 60

        proxy.inject("GET", patches, status=503, times=1)
        agent.step()
        assert sample("gpupin_agent_publishes_total", result="error") == 1
        assert sample("gpupin_agent_last_publish_timestamp_seconds", node=bare_node) == last, "not a publish"
    finally:
        proxy.stop()


def test_fake_mode_end_to_end(cluster: Cluster, bare_node: str, tmp_path: Path) -> None:
    """`gpupin agent --fake-inventory` as a process publishes; the operator places on it."""
    fake = tmp_path / "fake.yaml"
    fake.write_text(
        yaml.safe_dump({"nodes": [node(bare_node, RTX_4070, RTX_2060).model_dump(by_alias=True)]})
    )
    env = {"KUBECONFIG": str(cluster.kubeconfig), "NODE_NAME": bare_node, "GPUPIN_FAKE_INVENTORY": str(fake)}
    metrics_port = free_port()
    agent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gpupin",
            "agent",
            "--health-port",
            "0",
            "--interval",
            "1",
            "--metrics-port",
            str(metrics_port),
        ],
        env={**__import__("os").environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    namespace = f"agent-{bare_node[-6:]}"
    cluster.create_namespace(namespace)
    operator = Operator(cluster.operator_kubeconfig or cluster.kubeconfig, tmp_path / "operator.log").start()
    try:
        wait_for(
            lambda: (
                constants.INVENTORY_ANNOTATION
                in (cluster.get(f"/api/v1/nodes/{bare_node}")["metadata"].get("annotations") or {})
            ),
            what="the agent's annotation",
        )
        cluster.apply(
            json.dumps(
                {
                    "apiVersion": constants.API_VERSION,
                    "kind": constants.KIND,
                    "metadata": {"name": "chat", "namespace": namespace},
                    "spec": {"engine": "vllm", "models": [{"name": "Qwen/Qwen2.5-3B-Instruct"}]},
                }
            )
        )
        wait_for(
            lambda: (c := cluster.condition(namespace, "chat", "Placed")) and c["status"] == "True",
            what="placed on the fake node",
        )
        # the status and the pod are written concurrently: Placed can be seen before the pod
        (pod,) = wait_for(
            lambda: [p for p in cluster.pods(namespace) if p["spec"].get("nodeName")],
            what="the pod, scheduled",
        )
        assert pod["spec"]["nodeName"] == bare_node
        scraped = (
            urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        )
        assert f'gpupin_agent_gpus{{node="{bare_node}"}} 2.0' in scraped, scraped
        assert f'gpupin_agent_last_publish_timestamp_seconds{{node="{bare_node}"}}' in scraped
    finally:
        operator.stop()
        agent.terminate()
        agent.wait(10)
        cluster.kubectl("delete", "llmd", "--all", "-n", namespace, "--wait=true", check=False)
        cluster.delete_namespace(namespace)


def test_inventory_command(capsys: pytest.CaptureFixture[str]) -> None:
    from gpupin.cli import main

    assert (
        main(
            [
                "inventory",
                "--fake-inventory",
                str(EXAMPLES / "inventory" / "workstation.yaml"),
                "--node-name",
                "workstation",
                "-o",
                "json",
            ]
        )
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert [g["name"] for g in data["gpus"]] == ["NVIDIA GeForce RTX 4070", "NVIDIA GeForce RTX 2060"]
    assert (
        main(
            [
                "inventory",
                "--fake-inventory",
                str(EXAMPLES / "inventory" / "workstation.yaml"),
                "--node-name",
                "workstation",
            ]
        )
        == 0
    )
    assert "12282 MiB" in capsys.readouterr().out


# --- DRA ResourceSlices ------------------------------------------------------------------------


def _slice(node_name: str, devices: list[tuple[int, str, str, str, str]]) -> dict[str, Any]:
    """A ResourceSlice as the NVIDIA DRA driver publishes it (attribute names as in its README)."""
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"name": f"{node_name}-gpu.nvidia.com-abc"},
        "spec": {
            "driver": "gpu.nvidia.com",
            "nodeName": node_name,
            "pool": {"name": node_name, "generation": 1, "resourceSliceCount": 1},
            "devices": [
                {
                    "name": f"gpu-{minor}",
                    "attributes": {
                        "type": {"string": "gpu"},
                        "uuid": {"string": uuid},
                        "productName": {"string": product},
                        "cudaComputeCapability": {"version": cc},
                        "architecture": {"string": "Ada Lovelace"},
                        "resource.kubernetes.io/pciBusID": {"string": f"0000:0{minor + 1}:00.0"},
                    },
                    "capacity": {"memory": {"value": memory}},
                }
                for minor, uuid, product, cc, memory in devices
            ],
        },
    }


def test_resource_slices_read_as_inventory() -> None:
    slices = [
        _slice(
            "w",
            [
                (0, "GPU-a", "NVIDIA GeForce RTX 4070", "8.9.0", "12282Mi"),
                (1, "GPU-b", "NVIDIA GeForce RTX 2060", "7.5.0", "6Gi"),
            ],
        ),
        {"spec": {"driver": "other.example.com", "nodeName": "w", "devices": [{"name": "x"}]}},
    ]
    mig = _slice("m", [(0, "MIG-1", "NVIDIA A100", "8.0.0", "10Gi")])
    mig["spec"]["devices"][0]["attributes"]["type"] = {"string": "mig"}
    nodes, problems = inventory_from_resource_slices([*slices, mig])
    assert problems == [] and set(nodes) == {"w"}
    gpus = nodes["w"].gpus
    assert [(g.index, g.uuid, g.compute_capability, g.memory) for g in gpus] == [
        (0, "GPU-a", "8.9", 12282 * 2**20),
        (1, "GPU-b", "7.5", 6 * 2**30),
    ]
    assert gpus[1].pci_bus_id == "0000:02:00.0"


def test_a_resource_slice_device_with_a_bad_uuid_is_a_one_line_problem() -> None:
    slices = [
        _slice(
            "w",
            [
                (0, "GPU-a", "NVIDIA GeForce RTX 4070", "8.9.0", "12282Mi"),
                (1, "GPU-b' || true || 'c", "NVIDIA GeForce RTX 2060", "7.5.0", "6Gi"),
            ],
        )
    ]
    del slices[0]["spec"]["devices"][0]["attributes"]["uuid"]  # no UUID at all is no "None" either
    nodes, problems = inventory_from_resource_slices(slices)
    assert nodes == {}
    assert problems == [
        "node w: DRA device gpu-0 unreadable (uuid: 'None' is not a GPU UUID; allowed: " + UUID_ALLOWED + ")",
        "node w: DRA device gpu-1 unreadable (uuid: \"GPU-b' || true || 'c\" is not a GPU UUID; allowed: "
        + UUID_ALLOWED
        + ")",
    ]


def test_operator_places_on_a_node_known_only_from_resource_slices(
    cluster: Cluster, bare_node: str, tmp_path: Path
) -> None:
    namespace = f"dra-{bare_node[-6:]}"
    cluster.create_namespace(namespace)
    item = _slice(bare_node, [(0, f"GPU-{bare_node}-0", "NVIDIA A10", "8.6.0", "23028Mi")])
    cluster.kube.request("POST", "/apis/resource.k8s.io/v1/resourceslices", item)
    operator = Operator(cluster.operator_kubeconfig or cluster.kubeconfig, tmp_path / "operator.log").start()
    try:
        cluster.apply(
            json.dumps(
                {
                    "apiVersion": constants.API_VERSION,
                    "kind": constants.KIND,
                    "metadata": {"name": "chat", "namespace": namespace},
                    "spec": {"models": [{"name": "Qwen/Qwen2.5-3B-Instruct"}]},
                }
            )
        )
        wait_for(
            lambda: (c := cluster.condition(namespace, "chat", "Placed")) and c["status"] == "True",
            what="placed from the ResourceSlice",
        )
        # the status and the pod are written concurrently: Placed can be seen before the pod
        (pod,) = wait_for(lambda: cluster.pods(namespace), what="the pod")
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        assert env["NVIDIA_VISIBLE_DEVICES"] == f"GPU-{bare_node}-0"
    finally:
        operator.stop()
        cluster.kubectl("delete", "llmd", "--all", "-n", namespace, "--wait=true", check=False)
        cluster.delete_namespace(namespace)
        cluster.kube.request("DELETE", f"/apis/resource.k8s.io/v1/resourceslices/{item['metadata']['name']}")


# --- on a real GPU ------------------------------------------------------------------------------


@pytest.mark.nvml
def test_inventory_matches_nvidia_smi_on_a_real_gpu() -> None:
    """Runs where an NVIDIA driver is; compares `gpupin inventory -o json` with nvidia-smi field by field."""
    try:
        NvmlSource().read("here")
    except GPUReadError as exc:
        pytest.skip(f"no NVIDIA GPU here: {exc}")
    if shutil.which("nvidia-smi") is None:
        pytest.skip("NVML works but nvidia-smi is not on PATH")
    ours = json.loads(
        subprocess.run(
            [sys.executable, "-m", "gpupin", "inventory", "-o", "json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )["gpus"]
    smi = subprocess.run(
        [
            "nvidia-smi",
            "--query-gpu=index,name,uuid,memory.total,compute_cap,pci.bus_id",
            "--format=csv,noheader,nounits",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [[c.strip() for c in line.split(",")] for line in smi.strip().splitlines()]
    assert len(rows) == len(ours)
    for gpu, (index, name, uuid, memory_mib, cc, bus) in zip(ours, rows, strict=True):
        assert (str(gpu["index"]), gpu["name"], gpu["uuid"], gpu["computeCapability"]) == (
            index,
            name,
            uuid,
            cc,
        )
        assert gpu["memory"] // 2**20 == int(memory_mib)
        assert gpu["pciBusId"].lower() == bus.lower()
