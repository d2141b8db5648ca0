"""The NVIDIA DRA driver's ResourceSlices as GPU inventory: a node's GPUs where no agent annotation is.

Pure: no kopf, no kubernetes. The operator watches the slices and reads them with
:func:`inventory_from_resource_slices`; :mod:`gpupin.inventory` says which source wins per node.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from gpupin import constants
from gpupin.inventory import GPU, NodeInventory, describe_errors


def _attribute(attributes: Mapping[str, Any], name: str, driver: str) -> Any:
    """A DRA device attribute's value, by short or fully qualified name (``uuid`` or ``gpu.nvidia.com/uuid``)."""
    value = attributes.get(name) or attributes.get(f"{driver}/{name}")
    if not isinstance(value, Mapping):
        return None
    for kind in ("string", "version", "int", "bool"):
        if kind in value:
            return value[kind]
    return None


def inventory_from_resource_slices(
    slices: Iterable[Mapping[str, Any]],
) -> tuple[dict[str, NodeInventory], list[str]]:
    """Whole GPUs per node from the NVIDIA DRA driver's ResourceSlices (driver ``gpu.nvidia.com``).

    Reads attributes ``uuid``, ``productName``, ``cudaComputeCapability`` (a version, ``9.0.0``),
    ``resource.kubernetes.io/pciBusID`` and capacity ``memory``; the index is the minor in the device
    name ``gpu-<minor>``. MIG devices (``type: mig``) are skipped. Returns the nodes and one problem
    line per device that could not be read.
    """
    per_node: dict[str, list[GPU]] = {}
    problems: list[str] = []
    for item in slices:
        spec = item.get("spec") or {}
        driver = spec.get("driver")
        node_name = spec.get("nodeName")
        if driver != constants.DRA_DRIVER or not node_name:
            continue
        for position, device in enumerate(spec.get("devices") or []):
            attributes = device.get("attributes") or {}
            kind = _attribute(attributes, "type", driver)
            if kind not in (None, "gpu"):
                continue
            device_name = str(device.get("name", ""))
            try:
                cc_parts = str(_attribute(attributes, "cudaComputeCapability", driver)).split(".")
                memory = (device.get("capacity") or {}).get("memory") or {}
                index = (
                    int(device_name.rsplit("-", 1)[-1])
                    if device_name.rsplit("-", 1)[-1].isdigit()
                    else position
                )
                gpu = GPU(
                    index=index,
                    uuid=str(_attribute(attributes, "uuid", driver)),
                    name=str(_attribute(attributes, "productName", driver)),
                    memory=memory.get("value") if isinstance(memory, Mapping) else memory,
                    compute_capability=f"{cc_parts[0]}.{cc_parts[1]}",
                    pci_bus_id=_attribute(attributes, "resource.kubernetes.io/pciBusID", driver),
                )
            except (ValueError, IndexError, TypeError) as exc:  # a UUID that is none (check_uuid) too
                problems.append(f"node {node_name}: DRA device {device_name} unreadable ({_why(exc)})")
                continue
            per_node.setdefault(str(node_name), []).append(gpu)
    result = {}
    for node_name, gpus in per_node.items():
        try:
            result[node_name] = NodeInventory(name=node_name, gpus=sorted(gpus, key=lambda g: g.index))
        except ValueError as exc:
            problems.append(f"node {node_name}: DRA devices inconsistent ({_why(exc)})")
    return result, problems


def _why(exc: Exception) -> str:
    """An error in one line: pydantic's field by field (``uuid: 'x y' is not a GPU UUID; allowed: …``)."""
    return describe_errors(exc) if isinstance(exc, ValidationError) else str(exc)
