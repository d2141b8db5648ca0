"""gpupin's NetworkPolicies in the operator's cache: watched, listed at start and relisted, only when
the operator makes them (``--network-policy`` not ``none``), so an operator that makes none needs no
RBAC on them. The handlers module calls these; the objects themselves are rendered by
:func:`gpupin.render.network_policy` and created and deleted like Services.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import kopf

from gpupin import constants
from gpupin.controller.cache import ClusterCache
from gpupin.controller.config import OperatorConfig
from gpupin.kube import Kube

PATH = "/apis/networking.k8s.io/v1/networkpolicies"
MANAGED = f"{constants.MANAGED_BY_LABEL}={constants.MANAGED_BY}"
_watched: list[bool] = []

Seen = Callable[[str | None, dict[str, Any]], None]


def enabled(config: OperatorConfig | None) -> bool:
    return config is not None and config.network_policy != "none"


def watch(config: OperatorConfig, settings: kopf.OperatorSettings, handler: Any) -> None:
    """Register ``handler`` for gpupin's NetworkPolicies (once per process) when they are made.
    Called from a start-up handler: kopf's resource observer waits for those before it chooses what
    to watch, so a handler registered here is watched like one registered at import."""
    if not enabled(config) or _watched:
        return
    _watched.append(True)
    settings.watching.label_selectors["networking.k8s.io", "networkpolicies"] = MANAGED
    kopf.on.event(
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        labels={constants.MANAGED_BY_LABEL: constants.MANAGED_BY},
    )(handler)


async def initial_list(kube: Kube, cache: ClusterCache, config: OperatorConfig | None) -> None:
    """List them once before the first reconcile (when they are made)."""
    if not enabled(config):
        return
    policies = await asyncio.to_thread(kube.request, "GET", PATH, None, {"labelSelector": MANAGED})
    for policy in policies.get("items") or []:
        cache.network_policies.upsert({**policy, "kind": "NetworkPolicy"})


def relist_kinds(
    config: OperatorConfig | None, seen: Seen
) -> list[tuple[str, str, str, str, dict[str, str] | None, Seen]]:
    """Their entry in the relist's kinds (none when they are not made)."""
    if not enabled(config):
        return []
    return [
        ("network_policies", "NetworkPolicy", "networking.k8s.io/v1", PATH, {"labelSelector": MANAGED}, seen)
    ]
