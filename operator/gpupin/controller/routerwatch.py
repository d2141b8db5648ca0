"""The objects of deployments' endpoints in the operator's cache — the routers' ConfigMaps and
Deployments (``--router-image``), the HTTPRoutes (``--gateway``): watched, listed at start-up and
relisted (the handlers module's listers) only when the operator makes them, so an operator that
makes none needs no RBAC on them. The objects themselves are rendered by
:mod:`gpupin.routerobjects` and :mod:`gpupin.httproute` and created and deleted like Services.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import kopf
import structlog

from gpupin import constants
from gpupin.controller.config import OperatorConfig
from gpupin.kube import ApiError, Kube

log = structlog.get_logger("gpupin.operator")

MANAGED = constants.MANAGED_SELECTOR
Kind = tuple[str, str, str, str, str]
"""(cache store, kind, API group, version, plural)."""
ROUTER_KINDS: tuple[Kind, ...] = (
    ("config_maps", "ConfigMap", "", "v1", "configmaps"),
    ("workloads", "Deployment", "apps", "v1", "deployments"),
)
GATEWAY_KINDS: tuple[Kind, ...] = (
    ("http_routes", "HTTPRoute", "gateway.networking.k8s.io", "v1", "httproutes"),
)
_watched: list[bool] = []


def kinds(config: OperatorConfig | None) -> list[Kind]:
    """What this operator makes besides pods, Services, claim templates and NetworkPolicies."""
    if config is None:
        return []
    return [*(ROUTER_KINDS if config.router_image else ()), *(GATEWAY_KINDS if config.gateway else ())]


async def usable(config: OperatorConfig) -> OperatorConfig:
    """``config``, less ``--gateway`` when the cluster does not serve the Gateway API (its CRDs not
    installed): an error in the log says so once, and every deployment is served without an
    HTTPRoute, instead of each list failing and each route refused (install them and restart)."""
    if config.gateway is None:
        return config
    try:
        await asyncio.to_thread(Kube().request, "GET", "/apis/gateway.networking.k8s.io/v1")
    except ApiError as exc:
        if exc.status != 404:
            raise
        log.error(
            "--gateway is set but this cluster does not serve the Gateway API (gateway.networking.k8s.io/v1): "
            "install its CRDs and restart the operator; no HTTPRoute is made until then"
        )
        return dataclasses.replace(config, gateway=None)
    return config


def watch(config: OperatorConfig, settings: kopf.OperatorSettings, handler_for: Any) -> None:
    """Register ``handler_for(store, kind)`` for each of :func:`kinds` (once per process); called
    from a start-up handler, as :func:`gpupin.controller.netpolicies.watch`."""
    if _watched or not kinds(config):
        return
    _watched.append(True)
    for store, kind, group, version, plural in kinds(config):
        settings.watching.label_selectors[group or version, plural] = MANAGED
        resource = (group, version, plural) if group else (version, plural)
        kopf.on.event(*resource, labels={constants.MANAGED_BY_LABEL: constants.MANAGED_BY})(
            handler_for(store, kind)
        )
