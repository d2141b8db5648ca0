"""What the planner decides, typed, and how it travels: the plan, each pod's placement.

Pure: no kopf, no kubernetes. A :class:`Placement` goes from the planner to the renderer, into
the pod as the ``gpupin.dev/placement`` annotation (:meth:`Placement.to_annotation`), and back
into the operator when the watch delivers the pod (:meth:`Placement.parse`, strict, raising
:class:`PlacementError` that names the field; :meth:`Placement.from_annotation`, lenient, keeping
what can be read; one parse per distinct annotation). :class:`Hold` and :class:`CurrentPod` are
what the planner reads of existing pods.

The annotation's JSON shape is public and stable (``{"exclusive", "gpus": [{"index", "name",
"uuid", "vramBytes"}], "models", "node"}``, keys sorted, compact): the pod's spec hash covers it,
so a change would replace every serving pod at upgrade. The launch settings therefore travel in
the typed object and the rendered container, not in the annotation.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

Outcome = Literal["Placed", "Refused"]


class PlacementError(ValueError):
    """A placement annotation that is not what gpupin writes; the message names the field, what
    it is and what is allowed (``gpus[0].vramBytes is 'x', expected a byte count (integer ≥ 0)``)."""


@dataclass(frozen=True)
class GPUAssignment:
    """One GPU of a placement."""

    index: int
    """The GPU's host index on its node (NVML order)."""
    uuid: str
    name: str
    """Product name, e.g. ``NVIDIA GeForce RTX 4070``."""
    vram_bytes: int | None
    """Memory this placement reserves on the GPU, in bytes; ``None`` only when read back from an
    annotation whose figure is unreadable (the GPU then counts as wholly held)."""


@dataclass(frozen=True)
class LaunchSettings:
    """Engine settings decided with the placement, so what runs is what was planned. ``None``:
    the engine's own default (nothing rendered)."""

    max_model_len: int | None = None
    """Tokens of one sequence (vLLM ``--max-model-len``)."""
    dtype: str | None = None
    """Weights and activations dtype (vLLM ``--dtype``), e.g. ``half`` where a bfloat16 model
    lands on compute capability < 8.0."""
    runner: str | None = None
    """vLLM ``--runner`` (``pooling`` for an embedding model), None: the engine's choice."""
    context_length: int | None = None
    """Tokens of context the server is started with (Ollama ``OLLAMA_CONTEXT_LENGTH``, per request
    slot; a llama.cpp server's ``--ctx-size`` would be the whole server's)."""


@dataclass(frozen=True)
class Placement:
    """One pod: the node, the GPUs it holds and the models it serves."""

    pod: str
    node: str
    models: tuple[str, ...]
    gpus: tuple[GPUAssignment, ...]
    exclusive: bool = False
    """The pod owns its GPUs: no other pod may share them (the engine or the pinning mode says so)."""
    launch: LaunchSettings = field(default_factory=LaunchSettings)

    @property
    def gpu_uuids(self) -> tuple[str, ...]:
        return tuple(gpu.uuid for gpu in self.gpus)

    def as_json(self) -> dict[str, Any]:
        """The public shape: `gpupin plan -o json` placements and LLMDeployment status.placements."""
        return {
            "pod": self.pod,
            "node": self.node,
            "models": list(self.models),
            "gpus": [
                {"index": g.index, "uuid": g.uuid, "name": g.name, "vramBytes": g.vram_bytes}
                for g in self.gpus
            ],
        }

    def to_annotation(self) -> str:
        """The pod's placement annotation: everything but the pod's name (the pod has it)."""
        body = {k: v for k, v in self.as_json().items() if k != "pod"} | {"exclusive": self.exclusive}
        return json.dumps(body, sort_keys=True, separators=(",", ":"))

    @classmethod
    def parse(cls, pod: str, text: str) -> Placement:
        """The placement a pod's annotation holds, read strictly: every field present and of the
        shape :meth:`to_annotation` writes (unknown keys are ignored). Raises :class:`PlacementError`."""
        parsed = _parse_strict(text)
        if isinstance(parsed, str):
            raise PlacementError(parsed)
        node, models, gpus, exclusive = parsed
        return cls(pod=pod, node=node, models=models, gpus=gpus, exclusive=exclusive)

    @classmethod
    def from_annotation(cls, pod: str, text: str) -> Placement | None:
        """The placement a pod's annotation holds; ``None`` when it is not one (unreadable input
        is not a placement, and never a reason to delete the pod)."""
        parsed = _parse_annotation(text)
        if parsed is None:
            return None
        node, models, gpus, exclusive = parsed
        return cls(pod=pod, node=node, models=models, gpus=gpus, exclusive=exclusive)


@lru_cache(maxsize=16384)
def _parse_annotation(
    text: str,
) -> tuple[str, tuple[str, ...], tuple[GPUAssignment, ...], bool] | None:
    """One parse per distinct annotation text (pods are re-read on every reconcile), field by
    field: what can be read is kept. A GPU entry without a readable UUID is dropped (it names no
    GPU); an unreadable ``vramBytes`` becomes ``None`` (the GPU then counts as wholly held, never
    as free); an unreadable node becomes ``""`` (GPUs are then found by UUID alone)."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("gpus"), list):
        return None
    gpus = []
    for item in data["gpus"]:
        if not isinstance(item, dict) or not isinstance(item.get("uuid"), str) or not item["uuid"]:
            continue
        gpus.append(
            GPUAssignment(
                index=_integer(item.get("index", 0)) or 0,
                uuid=item["uuid"],
                name=str(item.get("name", "")),
                vram_bytes=_integer(item.get("vramBytes", 0)),
            )
        )
    models = data.get("models")
    node = data.get("node")
    return (
        node if isinstance(node, str) else "",
        tuple(str(m) for m in models) if isinstance(models, list) else (),
        tuple(gpus),
        data.get("exclusive") is True,
    )


_Parsed = tuple[str, tuple[str, ...], tuple[GPUAssignment, ...], bool]


@lru_cache(maxsize=16384)
def _parse_strict(text: str) -> _Parsed | str:
    """The strict reading of an annotation, or what is wrong with it (cached either way)."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        return f"is not JSON ({exc})"
    if not isinstance(data, dict):
        return f"is {_show(data)}, expected a JSON object"
    try:
        node = _field(
            data, "node", "", lambda v: isinstance(v, str) and bool(v), "a node name (non-empty string)"
        )
        models = _field(
            data,
            "models",
            "",
            lambda v: isinstance(v, list) and all(isinstance(m, str) for m in v),
            "a list of model names (strings)",
        )
        exclusive = _field(data, "exclusive", "", lambda v: isinstance(v, bool), "true or false")
        items = _field(
            data, "gpus", "", lambda v: isinstance(v, list) and bool(v), "a non-empty list of GPUs"
        )
        gpus: list[GPUAssignment] = []
        for i, item in enumerate(items):
            where = f"gpus[{i}]"
            if not isinstance(item, dict):
                raise PlacementError(f"{where} is {_show(item)}, expected an object")
            uuid = _field(
                item, "uuid", where, lambda v: isinstance(v, str) and bool(v), "a GPU UUID (non-empty string)"
            )
            if uuid in (g.uuid for g in gpus):
                raise PlacementError(f"{where}.uuid {uuid!r} is listed twice, expected each GPU once")
            gpus.append(
                GPUAssignment(
                    index=_field(item, "index", where, _is_count, "a GPU index (integer ≥ 0)"),
                    uuid=uuid,
                    name=_field(item, "name", where, lambda v: isinstance(v, str), "a product name (string)"),
                    vram_bytes=_field(item, "vramBytes", where, _is_count, "a byte count (integer ≥ 0)"),
                )
            )
    except PlacementError as exc:
        return str(exc)
    return node, tuple(models), tuple(gpus), exclusive


def _field(data: dict[str, Any], key: str, where: str, valid: Callable[[Any], bool], expected: str) -> Any:
    name = f"{where}.{key}" if where else key
    if key not in data:
        raise PlacementError(f"{name} is missing, expected {expected}")
    if not valid(data[key]):
        raise PlacementError(f"{name} is {_show(data[key])}, expected {expected}")
    return data[key]


def _is_count(value: object) -> bool:
    return _integer(value) is not None


def _show(value: object) -> str:
    """A JSON value in a message: short, and saying what kind of thing it is."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    if value is None:
        return "null"
    shown = json.dumps(value) if isinstance(value, bool) else repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _integer(value: object) -> int | None:
    """A non-negative JSON integer, else None (``"1Gi"``, null, a list, a negative or bool)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


@dataclass(frozen=True)
class Plan:
    """The planner's answer for one deployment: placed (with placements) or refused (with a
    reason from :mod:`gpupin.reasons` and a message a person can act on)."""

    namespace: str
    name: str
    engine: str
    outcome: Outcome
    reason: str
    message: str
    placements: tuple[Placement, ...] = ()
    models: tuple[ModelSizing, ...] = ()
    """How each model was sized, and from what (empty when planning stopped before sizing)."""

    @property
    def placed(self) -> bool:
        return self.outcome == "Placed"

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class ModelSizing:
    """What one model was sized at and where its figures came from, for status and ``gpupin plan``."""

    name: str
    vram_bytes: int
    """The estimate on one GPU (bytes), or models[].vram."""
    source: str
    """spec, data, metadata or name (see :class:`gpupin.sizing.Estimate`)."""
    origin: str
    """Where the figures were read, in words."""
    read_at: str | None = None
    """When the metadata was read from the model's registry (RFC 3339); None for data shipped
    with gpupin or given in the cluster."""

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "vramBytes": self.vram_bytes,
            "source": self.source,
            "origin": self.origin,
            "readAt": self.read_at,
        }


@dataclass(frozen=True)
class Hold:
    """GPU memory that another deployment's pod holds."""

    uuid: str
    vram_bytes: int | None
    """Bytes held; ``None``: unknown (an unreadable annotation), so the whole GPU, exclusively."""
    exclusive: bool
    owner: str
    """namespace/name of the holding deployment, for messages."""


@dataclass(frozen=True)
class CurrentPod:
    """A pod of the deployment being planned that already exists (a re-plan keeps it in place)."""

    gpu_uuids: tuple[str, ...]
    models: tuple[str, ...]
    rank: int = 0
    """Which pods the plan keeps first when there are more than it needs (lower first): the
    operator ranks the newest first, so a rollout keeps the pods it has just made."""
