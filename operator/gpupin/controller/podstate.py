"""Pure reads of a pod (or another object gpupin made) as the API server returns it: its state,
the placement it carries, its spec hash.

No kopf, no kubernetes imports, no cache: the decision, the diagnosis and the watch-fed cache all
read pods through these.
"""

from __future__ import annotations

from typing import Any

from gpupin import constants
from gpupin.placement import Placement, PlacementError


def placement_of(pod: dict[str, Any]) -> Placement | None:
    """The placement annotation a gpupin pod carries, typed (None if absent or unreadable)."""
    meta = pod["metadata"]
    text = (meta.get("annotations") or {}).get(constants.PLACEMENT_ANNOTATION)
    if not text or not isinstance(text, str):
        return None
    return Placement.from_annotation(str(meta.get("name") or ""), text)


def placement_problem(pod: dict[str, Any]) -> str | None:
    """What is wrong with a pod's placement annotation, in one sentence naming the pod, the
    annotation and the field (``pod chat-1: placement annotation gpupin.dev/placement:
    gpus[0].vramBytes is 'x', expected a byte count (integer ≥ 0)``); None when it is what gpupin
    writes. A pod with a problem still holds every GPU it names, wholly (see
    :func:`gpupin.controller.cache.ClusterCache.holds`)."""
    meta = pod["metadata"]
    name = str(meta.get("name") or "")
    text = (meta.get("annotations") or {}).get(constants.PLACEMENT_ANNOTATION)
    where = f"pod {name}: placement annotation {constants.PLACEMENT_ANNOTATION}"
    if text is None:
        return f"{where} is missing"
    if not isinstance(text, str):
        return f"{where} is not a string"
    try:
        Placement.parse(name, text)
    except PlacementError as exc:  # "is not JSON …" is about the whole annotation, else a field
        return f"{where} {exc}" if str(exc).startswith("is ") else f"{where}: {exc}"
    return None


def is_terminating(obj: dict[str, Any]) -> bool:
    return bool(obj["metadata"].get("deletionTimestamp"))


def is_finished(pod: dict[str, Any]) -> bool:
    """A pod whose containers are gone for good holds no GPU memory."""
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def is_ready(pod: dict[str, Any]) -> bool:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return False


def spec_hash_of(obj: dict[str, Any]) -> str | None:
    """The spec-hash label of a rendered or existing object."""
    return (obj["metadata"].get("labels") or {}).get(constants.SPEC_HASH_LABEL)
