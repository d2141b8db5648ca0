"""Where the node agent reads GPUs from: NVML on a GPU host, or a fake inventory file.

NVML sits behind :class:`NvmlSource`, which takes the NVML module as an argument: the
real ``pynvml`` (package nvidia-ml-py) in production, a stand-in built from a real
capture or from inventory data in tests. So every line but NVML's own C calls runs
without a GPU.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from gpupin.inventory import GPU, NodeInventory
from gpupin.loading import InputError, load_inventory


class GPUReadError(Exception):
    """The GPUs could not be read; the message says why in words a person can act on."""


@dataclass(frozen=True)
class Reading:
    inventory: NodeInventory
    seconds: float
    """How long the read took (NVML init and enumeration)."""


class GPUSource(Protocol):
    def read(self, node_name: str) -> Reading: ...


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class NvmlSource:
    """Every GPU NVML reports: index, UUID, name, total memory, compute capability, PCI bus id,
    MIG mode; and the driver and CUDA driver versions."""

    def __init__(self, nvml: Any = None) -> None:
        if nvml is None:
            import pynvml  # nvidia-ml-py: NVIDIA's own bindings (the PyPI project `pynvml` is deprecated)

            nvml = pynvml
        self.nvml = nvml

    def read(self, node_name: str) -> Reading:
        nvml = self.nvml
        started = time.perf_counter()
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            raise GPUReadError(_explain(nvml, exc)) from exc
        try:
            gpus = [self._gpu(index) for index in range(nvml.nvmlDeviceGetCount())]
            driver = _text(nvml.nvmlSystemGetDriverVersion())
            cuda = _cuda_version(nvml)
        except nvml.NVMLError as exc:
            raise GPUReadError(_explain(nvml, exc)) from exc
        finally:
            with contextlib.suppress(nvml.NVMLError):
                nvml.nvmlShutdown()
        inventory = NodeInventory(name=node_name, gpus=gpus, driver_version=driver, cuda_driver_version=cuda)
        return Reading(inventory, time.perf_counter() - started)

    def _gpu(self, index: int) -> GPU:
        nvml = self.nvml
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
        try:
            current, _pending = nvml.nvmlDeviceGetMigMode(handle)
            mig = bool(current)
        except nvml.NVMLError_NotSupported:
            mig = False  # GPUs without MIG (every consumer card) answer NotSupported
        return GPU(
            index=index,
            uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
            name=_text(nvml.nvmlDeviceGetName(handle)),
            memory=int(nvml.nvmlDeviceGetMemoryInfo(handle).total),
            compute_capability=f"{major}.{minor}",
            pci_bus_id=_text(nvml.nvmlDeviceGetPciInfo(handle).busId),
            mig_enabled=mig,
        )


def _cuda_version(nvml: Any) -> str | None:
    try:
        version = int(nvml.nvmlSystemGetCudaDriverVersion())
    except nvml.NVMLError:
        return None
    return f"{version // 1000}.{(version % 1000) // 10}"


def _explain(nvml: Any, exc: Exception) -> str:
    name = type(exc).__name__
    if name == "NVMLError_LibraryNotFound":
        return (
            "NVML library not found (libnvidia-ml.so.1): no NVIDIA driver on this host, or the container does not "
            "get it — run the agent with the NVIDIA runtime class and NVIDIA_VISIBLE_DEVICES=all"
        )
    if name == "NVMLError_DriverNotLoaded":
        return (
            "NVIDIA driver not loaded: the kernel module is missing or failed to load (see dmesg, nvidia-smi)"
        )
    if name == "NVMLError_NoPermission":
        return "no permission to query NVML: the agent needs access to /dev/nvidiactl and /dev/nvidia*"
    if name == "NVMLError_GpuIsLost":
        return "a GPU fell off the bus (GpuIsLost): the node needs attention; nvidia-smi shows which"
    return f"NVML failed: {name} ({exc})"


class FakeSource:
    """The node's GPUs from an inventory file: for clusters without GPUs (kind, KWOK, demos)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self, node_name: str) -> Reading:
        started = time.perf_counter()
        try:
            inventory, _ = load_inventory(self.path)
        except InputError as exc:
            raise GPUReadError(f"fake inventory: {exc}") from exc
        for node in inventory.nodes:
            if node.name == node_name:
                return Reading(node, time.perf_counter() - started)
        names = ", ".join(n.name for n in inventory.nodes) or "none"
        raise GPUReadError(f"fake inventory {self.path} has no node named {node_name} (it has: {names})")
