"""The GPU inventory: which GPUs each node has.

One format everywhere: the ``gpupin plan --inventory`` file, the node annotation the
agent publishes (``gpupin.dev/gpu-inventory``, one node's entry as compact JSON) and
the fake inventories of tests and demos::

    nodes:
    - name: workstation
      gpus:
      - {index: 0, uuid: GPU-…, name: NVIDIA GeForce RTX 4070, memory: 12282Mi, computeCapability: "8.9"}

This module also reads Node objects (``kubectl get nodes -o yaml``): the annotation
first, else GPU Feature Discovery labels where — and only where — they describe every
card on the node. The annotation is read forward-compatibly (fields a newer agent adds are
ignored); the file people write is read strictly, so a typo is an error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel
from pydantic.functional_validators import AfterValidator

from gpupin import constants
from gpupin.quantity import ByteQuantity, MiB, format_gib, format_quantity

_CC_RE = re.compile(r"^[0-9]+\.[0-9]+$")
_UUID_RE = re.compile(r"(GPU|MIG|GFD)-[A-Za-z0-9._-]{1,296}")  # GFD-<node>-<i>: a node name has ≤ 253
UUID_ALLOWED = "GPU-… or MIG-… as NVML reports it, or GFD-<node>-<index>; then letters, digits, '.', '_', '-' (≤ 300 in all)"
# GFD's product label for MIG devices: <model>-MIG-<profile>, e.g. NVIDIA-A100-SXM4-80GB-MIG-3g.40gb
_GFD_MIG_PRODUCT = "-MIG-"


def check_uuid(value: str) -> str:
    """``value`` if a GPU UUID as allowed, else ``ValueError`` saying what it got and what is allowed:
    the boundary where UUIDs enter, as they reach env vars, labels and CEL (no quote, comma, space)."""
    if _UUID_RE.fullmatch(value):
        return value
    shown = repr(value if len(value) <= 60 else value[:60] + "…")
    raise ValueError(f"{shown} is not a GPU UUID; allowed: {UUID_ALLOWED}")


class _InventoryModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class GPU(_InventoryModel):
    """One physical GPU as NVML reports it."""

    index: int = Field(ge=0, description="NVML index (PCI bus order).")
    uuid: Annotated[str, AfterValidator(check_uuid)] = Field(description="NVML UUID, GPU-xxxxxxxx-….")
    name: str = Field(min_length=1, description="NVML product name, e.g. NVIDIA GeForce RTX 4070.")
    memory: ByteQuantity = Field(description="Total memory in bytes (files may write 12282Mi).")
    compute_capability: str = Field(description='CUDA compute capability, e.g. "8.9".')
    pci_bus_id: str | None = None
    mig_enabled: bool = False

    @field_validator("compute_capability", mode="before")
    @classmethod
    def _cc(cls, value: Any) -> str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = f"{float(value):.1f}"
        if not isinstance(value, str) or not _CC_RE.match(value):
            raise ValueError(f'{value!r} is not a compute capability; write it as "MAJOR.MINOR", e.g. "8.9"')
        return value

    @property
    def cc(self) -> tuple[int, int]:
        major, minor = self.compute_capability.split(".")
        return int(major), int(minor)

    @property
    def pinnable_by_uuid(self) -> bool:
        """False for GPUs known only from GFD labels, which carry no UUID."""
        return self.uuid.startswith(("GPU-", "MIG-"))

    @property
    def product_key(self) -> tuple[str, int, str]:
        """GPUs with the same key are interchangeable ranks of a tensor-parallel group."""
        return (self.name, self.memory, self.compute_capability)

    def describe(self) -> str:
        return f"{short_name(self.name)} {format_gib(self.memory)}"


class NodeInventory(_InventoryModel):
    """One node's GPUs; the agent's annotation is this object without ``name``."""

    name: str = Field(default="", description="Node name (implied by the Node in the annotation).")
    gpus: list[GPU] = Field(default_factory=list)
    driver_version: str | None = None
    cuda_driver_version: str | None = None

    @model_validator(mode="after")
    def _unique(self) -> NodeInventory:
        seen_index: set[int] = set()
        seen_uuid: set[str] = set()
        for gpu in self.gpus:
            if gpu.index in seen_index:
                raise ValueError(f"GPU index {gpu.index} appears twice on node {self.name or '(this node)'}")
            if gpu.uuid in seen_uuid:
                raise ValueError(f"GPU uuid {gpu.uuid} appears twice on node {self.name or '(this node)'}")
            seen_index.add(gpu.index)
            seen_uuid.add(gpu.uuid)
        return self

    @property
    def mixed(self) -> bool:
        return len({gpu.product_key for gpu in self.gpus}) > 1

    def to_annotation(self) -> str:
        """Compact JSON for the Node annotation; stable key order so an unchanged inventory
        gives byte-identical text and the agent can skip the patch."""
        body = self.model_dump(by_alias=True, exclude_none=True, exclude={"name"})
        body["gpus"] = [{**gpu, "memory": format_quantity(gpu["memory"])} for gpu in body["gpus"]]
        return json.dumps(body, sort_keys=True, separators=(",", ":"))


class Inventory(_InventoryModel):
    """Every node gpupin can place on."""

    nodes: list[NodeInventory] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> Inventory:
        names: set[str] = set()
        uuids: dict[str, str] = {}
        for node in self.nodes:
            if not node.name:
                raise ValueError("every node needs a name")
            if node.name in names:
                raise ValueError(f"node {node.name} appears twice")
            names.add(node.name)
            for gpu in node.gpus:
                if gpu.uuid in uuids:
                    raise ValueError(
                        f"GPU uuid {gpu.uuid} is on node {uuids[gpu.uuid]} and on node {node.name}"
                    )
                uuids[gpu.uuid] = node.name
        return self


def gfd_uuid(node: str, index: int) -> str:
    """The stand-in UUID of a GPU known only from GFD labels, which carry none: ``GFD-<node>-<i>``."""
    return f"GFD-{node}-{index}"


def same_product(a: GPU, b: GPU) -> bool:
    """Do two descriptions name the same kind of card? Product names compared loosely (GFD writes
    ``NVIDIA-A100-SXM4-80GB`` where NVML says ``NVIDIA A100-SXM4-80GB``), memory in whole MiB (GFD's
    unit), compute capability exactly."""
    return (
        same_name(a.name, b.name)
        and a.memory // MiB == b.memory // MiB
        and a.compute_capability == b.compute_capability
    )


def same_name(a: str, b: str) -> bool:
    """Product names compared by letters and digits only: ``NVIDIA-A100-SXM4-80GB`` is ``NVIDIA A100-SXM4-80GB``."""
    return "".join(ch for ch in a.lower() if ch.isalnum()) == "".join(ch for ch in b.lower() if ch.isalnum())


def short_name(product: str) -> str:
    """``NVIDIA GeForce RTX 4070`` → ``RTX 4070``: what people call the card in messages."""
    for prefix in ("NVIDIA GeForce ", "NVIDIA ", "Tesla "):
        if product.startswith(prefix):
            return product[len(prefix) :]
    return product


class NodeReadError(ValueError):
    """A Node's GPU facts exist but cannot be trusted (bad annotation, GFD that cannot describe it).

    ``kind``: ``unreadable``, or ``mig`` where GFD labels describe MIG devices."""

    def __init__(self, message: str, kind: str = "unreadable") -> None:
        super().__init__(message)
        self.kind = kind


def _known_fields(model: type[BaseModel], data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` without the keys ``model`` has no field for (by alias or by name)."""
    known = {name for name, info in model.model_fields.items()} | {
        info.alias for info in model.model_fields.values() if info.alias
    }
    return {key: value for key, value in data.items() if key in known}


def node_inventory_from_annotation(node_name: str, text: str) -> NodeInventory:
    """Parse the agent's annotation; raise ``NodeReadError`` saying what is wrong with it.

    Forward-compatible: fields a newer agent writes that this version does not know, at the top
    level or per GPU, are ignored (an operator older than its agents keeps reading them); fields
    it knows are checked as strictly as in a file."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:  # RecursionError: nested beyond reading
        why = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
        raise NodeReadError(
            f"node {node_name}: annotation {constants.INVENTORY_ANNOTATION} is not JSON ({why})"
        ) from None
    if not isinstance(data, dict):
        raise NodeReadError(f"node {node_name}: annotation {constants.INVENTORY_ANNOTATION} is not an object")
    data = {**_known_fields(NodeInventory, data), "name": node_name}
    if isinstance(data.get("gpus"), list):
        data["gpus"] = [_known_fields(GPU, gpu) if isinstance(gpu, Mapping) else gpu for gpu in data["gpus"]]
    try:
        return NodeInventory.model_validate(data)
    except ValidationError as exc:
        raise NodeReadError(
            f"node {node_name}: annotation {constants.INVENTORY_ANNOTATION} is invalid: "
            f"{describe_errors(exc, data.get('gpus'))}"
        ) from exc


def describe_errors(exc: ValidationError, gpus: Any = None) -> str:
    """Pydantic's errors in one line, ``gpus.0.uuid (GPU index 3): 'x y' is not a GPU UUID; allowed: …``:
    each field's path, and for a GPU of ``gpus`` (the list as read) its NVML index where it has one."""
    lines = []
    for error in exc.errors():
        loc, item = error["loc"], None
        if len(loc) >= 2 and loc[0] == "gpus" and isinstance(gpus, list) and isinstance(loc[1], int):
            item = gpus[loc[1]] if loc[1] < len(gpus) else None
        index = item.get("index") if isinstance(item, Mapping) else None
        shown = f" (GPU index {index})" if type(index) is int else ""
        lines.append(
            f"{'.'.join(map(str, loc)) or '(top level)'}{shown}: {str(error['msg']).removeprefix('Value error, ')}"
        )
    return "; ".join(lines)


def gfd_mig_signals(labels: Mapping[str, str], status: Mapping[str, Any]) -> list[str]:
    """What on a Node says its GFD labels and ``nvidia.com/gpu`` count MIG devices, not GPUs.

    Under the device plugin's ``mig.strategy=single`` GFD rewrites the node's labels to describe
    the MIG instances: the product gains ``-MIG-<profile>`` (``-MIG-INVALID`` for a layout it
    cannot express), ``nvidia.com/gpu.slices.*`` appear, and ``gpu.count`` and the node's
    ``nvidia.com/gpu`` both count instances, so they agree and the count check alone passes.
    Under ``mixed`` each profile gets its own ``nvidia.com/mig-<profile>.*`` labels and resource.
    Index ``i`` of such a node is not the ``i``-th card, so any of these signals excludes it.

    ``nvidia.com/mig.strategy`` on its own is not a signal: GFD sets it whenever the configured
    strategy is ``single`` or ``mixed``, on nodes whose GPUs all have MIG off too (GPU Operator
    installs with ``single`` label every GPU node so); neither are ``mig.capable`` and
    ``mig.config``. A ``nvidia.com/mig-*`` resource at 0 is a leftover of an earlier layout
    (kubelet keeps extended resources it no longer serves at 0), not a MIG device.
    """
    signals: list[str] = []
    product = labels.get(constants.GFD_PRODUCT_LABEL, "")
    if _GFD_MIG_PRODUCT in product:
        signals.append(f"product {product}")
    mig_labels = sorted(
        key
        for key in labels
        if key.startswith((constants.GFD_SLICES_LABEL_PREFIX, constants.MIG_RESOURCE_PREFIX))
    )
    if mig_labels:
        signals.append("labels " + ", ".join(mig_labels))
    for field in ("capacity", "allocatable"):
        resources = status.get(field) or {}
        mig_resources = sorted(
            f"{key}={value}"
            for key, value in resources.items()
            if str(key).startswith(constants.MIG_RESOURCE_PREFIX) and str(value) not in ("", "0")
        )
        if mig_resources:
            signals.append(f"{field} " + ", ".join(mig_resources))
    return signals


def node_inventory_from_gfd(
    node_name: str, labels: Mapping[str, str], status: Mapping[str, Any]
) -> NodeInventory:
    """Build a node's GPUs from GFD labels, only where they describe every card.

    GFD keeps one label set per node; on a node with two GPU models it describes one of
    them, chosen at random, and ``nvidia.com/gpu.count`` counts only that model. So the
    labels are trusted only when that count equals the node's ``nvidia.com/gpu`` in both
    ``capacity`` (every device the plugin registered) and ``allocatable`` (the healthy ones),
    where each is stated: then every card is that model and indices 0..count-1 all exist and
    are usable. A count that matches allocatable but not capacity can be one model of a mixed
    node whose other card is unhealthy; one that matches capacity but not allocatable includes
    an unhealthy card whose index is unknown. Either way an index could name the wrong card.
    MIG and time-slicing rewrite the labels and the resource count, so they are checked
    first. Anything else raises ``NodeReadError``.
    GFD gives no UUIDs, so these GPUs are pinned by index (``uuid`` is ``GFD-<node>-<i>``).
    """
    product = labels.get(constants.GFD_PRODUCT_LABEL)
    if not product:
        raise NodeReadError(
            f"node {node_name}: no {constants.INVENTORY_ANNOTATION} annotation and no GFD labels"
        )
    mig = gfd_mig_signals(labels, status)
    if mig:
        strategy = labels.get(constants.GFD_MIG_STRATEGY_LABEL)
        raise NodeReadError(
            f"node {node_name}: GFD labels describe MIG devices, not whole GPUs ({'; '.join(mig)}"
            + (f"; {constants.GFD_MIG_STRATEGY_LABEL}={strategy}" if strategy else "")
            + "), so they do not say which GPU indices the node has; gpupin does not place on MIG "
            "slices — run the gpupin agent on the node, which reports MIG mode per GPU (GPUs with MIG "
            "off are used whole), or disable MIG on the node",
            kind="mig",
        )
    try:
        count = int(labels[constants.GFD_COUNT_LABEL])
        memory_mib = int(labels[constants.GFD_MEMORY_LABEL])
        major = int(labels[constants.GFD_CC_MAJOR_LABEL])
        minor = int(labels[constants.GFD_CC_MINOR_LABEL])
    except (KeyError, ValueError) as exc:
        raise NodeReadError(f"node {node_name}: GFD labels are incomplete ({exc})") from exc
    if product.endswith("-SHARED"):
        raise NodeReadError(
            f"node {node_name}: GPUs are time-sliced (-SHARED); GFD cannot describe each card"
        )
    advertised = {
        field: (status.get(field) or {}).get(constants.GPU_RESOURCE)
        for field in ("capacity", "allocatable")
        if status.get(field)
    }
    if not advertised or any(value is None or str(value) != str(count) for value in advertised.values()):
        said = ", ".join(f"{field} {value or 'no'}" for field, value in advertised.items()) or "no"
        raise NodeReadError(
            f"node {node_name}: GFD describes {count} × {product} but the node advertises "
            f"{said} {constants.GPU_RESOURCE}; GFD labels describe one GPU model per node, so the "
            "node is treated as unknown — run the gpupin agent there"
        )
    name = product.replace("-", " ")
    try:
        return NodeInventory(
            name=node_name,
            gpus=[
                GPU(
                    index=i,
                    uuid=gfd_uuid(node_name, i),
                    name=name,
                    memory=memory_mib * MiB,
                    compute_capability=f"{major}.{minor}",
                )
                for i in range(count)
            ],
        )
    except ValidationError as exc:  # a node name no UUID can hold (a hand-written Node file)
        raise NodeReadError(f"node {node_name}: GFD labels are unusable ({describe_errors(exc)})") from exc


Source = Literal["annotation", "slices", "gfd", ""]
"""Where a node's GPUs were read: the agent's annotation, the DRA driver's ResourceSlices, GFD
labels; ``""`` for a node with no GPU facts."""


def read_node(
    node: Mapping[str, Any], from_slices: NodeInventory | None = None
) -> tuple[NodeInventory | None, Source]:
    """A Node object's GPUs and the source they came from. Sources, first found wins: the gpupin
    agent's annotation (NVML read on the node itself, with MIG mode and driver versions); the
    NVIDIA DRA driver's ResourceSlices (``from_slices``); GFD labels where they describe every card.

    Returns ``(None, "")`` for a node with no GPU facts at all (a CPU node). Raises
    ``NodeReadError`` when facts exist but cannot be used.
    """
    metadata = node.get("metadata") or {}
    name = metadata.get("name") or ""
    annotations = metadata.get("annotations") or {}
    labels = metadata.get("labels") or {}
    text = annotations.get(constants.INVENTORY_ANNOTATION)
    if text is not None:
        return node_inventory_from_annotation(name, text), "annotation"
    if from_slices is not None:
        return from_slices, "slices"
    if constants.GFD_PRODUCT_LABEL not in labels:
        return None, ""
    return node_inventory_from_gfd(name, labels, node.get("status") or {}), "gfd"


def node_inventory_from_node(
    node: Mapping[str, Any], from_slices: NodeInventory | None = None
) -> NodeInventory | None:
    """A Node object's GPUs (see :func:`read_node`); None for a node with no GPU facts."""
    return read_node(node, from_slices)[0]


def inventory_from_nodes(nodes: Iterable[Mapping[str, Any]]) -> tuple[Inventory, list[str]]:
    """Inventory from Node objects, plus one problem line per node that had to be skipped."""
    result: list[NodeInventory] = []
    problems: list[str] = []
    for node in nodes:
        try:
            inventory = node_inventory_from_node(node)
        except NodeReadError as exc:
            problems.append(str(exc))
            continue
        if inventory is not None:
            result.append(inventory)
    return Inventory(nodes=sorted(result, key=lambda n: n.name)), problems
