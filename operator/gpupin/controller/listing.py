"""LISTs of gpupin's namespaced objects, cluster-wide or per served namespace (start-up and relist)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog

from gpupin.kube import ApiError, Kube

log = structlog.get_logger("gpupin.operator")

# store, kind, apiVersion, plural, label-selected, the event path a listed or vanished object takes
Lister = tuple[str, str, str, str, bool, Callable[[str | None, dict[str, Any]], None]]


def path(group_version: str, plural: str, namespace: str | None) -> str:
    """The collection's URL, cluster-wide or of one namespace (``v1``: the core group)."""
    base = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    return f"{base}/namespaces/{namespace}/{plural}" if namespace else f"{base}/{plural}"


async def list_objects(
    kube: Kube, lister: Lister, namespace: str | None, selector: str
) -> tuple[list[dict[str, Any]], str | None]:
    """One LIST: its items (with kind and apiVersion, which a LIST leaves out) and resourceVersion."""
    _, kind, api_version, plural, selected, _ = lister
    query = {"labelSelector": selector} if selected else None
    body = await asyncio.to_thread(kube.request, "GET", path(api_version, plural, namespace), None, query)
    items = [{**item, "kind": kind, "apiVersion": api_version} for item in body.get("items") or []]
    return items, (body.get("metadata") or {}).get("resourceVersion")


def unlisted(namespace: str, lister: Lister, exc: ApiError) -> None:
    """Log a served namespace that could not be listed (the others are)."""
    log.warning(
        "Cannot list a served namespace (deleted, or no RoleBinding there); the others are listed",
        namespace=namespace,
        kind=lister[1],
        status=exc.status,
    )


def list_nodes(kube: Kube) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every Node, and every DRA ResourceSlice (none in a cluster without DRA, or where the
    operator may not read them): the GPUs' sources, listed together."""
    nodes = kube.request("GET", "/api/v1/nodes").get("items") or []
    try:
        slices = kube.request("GET", "/apis/resource.k8s.io/v1/resourceslices").get("items") or []
    except ApiError as exc:  # GPUs then come from annotations and GFD labels
        if exc.status not in (403, 404):
            raise
        slices = []
    return nodes, slices
