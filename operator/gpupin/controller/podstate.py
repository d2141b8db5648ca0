"""Pure reads of a pod (or another object gpupin made) as the API server returns it: its state,
the placement it carries, its spec hash.

No kopf, no kubernetes imports, no cache: the decision, the diagnosis and the watch-fed cache all
read pods through these.
"""

from __future__ import annotations

from typing import Any

from gpupin import constants
from gpupin.placement import Placement


def placement_of(pod: dict[str, Any]) -> Placement | None:
    """The placement annotation a gpupin pod carries, typed (None if absent or unreadable)."""
    meta = pod["metadata"]
    text = (meta.get("annotations") or {}).get(constants.PLACEMENT_ANNOTATION)
    if not text or not isinstance(text, str):
        return None
    return Placement.from_annotation(str(meta.get("name") or ""), text)


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
