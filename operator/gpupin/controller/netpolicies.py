"""gpupin's NetworkPolicies in the operator's cache: watched, listed at start and relisted (the
handlers module's listers), only when the operator makes them (``--network-policy`` not ``none``), so
an operator that makes none needs no RBAC on them. The objects themselves are rendered by
:func:`gpupin.render.network_policy` and created and deleted like Services.
"""

from __future__ import annotations

from typing import Any

import kopf

from gpupin import constants
from gpupin.controller.config import OperatorConfig

MANAGED = constants.MANAGED_SELECTOR
_watched: list[bool] = []


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
