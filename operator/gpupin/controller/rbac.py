"""The exact RBAC rules the operator needs: the one list the chart and the tests use.

Why each rule is there:
- LLMDeployments: watched; their status is written (nothing else of them);
- llmdeployments/finalizers update: children set ``blockOwnerDeletion`` on their owner
  reference, which the OwnerReferencesPermissionEnforcement admission plugin checks;
- Pods, Services, ResourceClaimTemplates: watched (label-selected), created and deleted —
  never updated (a changed pod is replaced, a changed Service recreated);
- Nodes: read only, for the GPU inventory the agent publishes; ResourceSlices: read only,
  the NVIDIA DRA driver's view of the GPUs where no agent runs;
- Events: created, to tell users what happened; listed (by pod uid, server-side), to read why
  a running pod is not Ready — the kubelet reports a failing readiness probe only as an Event;
- CustomResourceDefinitions: read only, kopf discovers resources through them;
- NetworkPolicies: watched, created and deleted like Services — only with ``--network-policy``;
- ConfigMaps and Deployments: the routers' (:mod:`gpupin.routerobjects`), watched, created and
  deleted like Services and updated in place (a new image rolls the router's pod) — only with
  ``--router-image``; HTTPRoutes likewise, only with ``--gateway``.

Which rules are namespaced: an operator that serves every namespace gets all of them cluster-wide
(:data:`RULES`); one that serves only some (``--namespace``) gets :data:`CLUSTER_RULES` cluster-wide,
:data:`NAMESPACED_RULES` in each namespace it serves and :data:`EVENT_RULES` in ``default``, where
its Node Events go — it cannot create a pod, or read one, anywhere else.

``python -m gpupin.controller.rbac`` prints them as a ClusterRole.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from gpupin import constants

WATCH = ["get", "list", "watch"]

CLUSTER_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["nodes"], "verbs": WATCH},
    {"apiGroups": ["resource.k8s.io"], "resources": ["resourceslices"], "verbs": WATCH},
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": WATCH},
]
"""Cluster-scoped reads: what every gpupin operator needs, whichever namespaces it serves."""

EVENT_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch", "list"]},
    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
]
"""Events: about LLMDeployments in their namespaces; about Nodes in ``default``, the only namespace
the API server accepts an Event of a cluster-scoped object in (besides none)."""

NAMESPACED_RULES: list[dict[str, Any]] = [
    {"apiGroups": [constants.GROUP], "resources": [constants.PLURAL], "verbs": WATCH},
    {"apiGroups": [constants.GROUP], "resources": [f"{constants.PLURAL}/status"], "verbs": ["get", "patch"]},
    {"apiGroups": [constants.GROUP], "resources": [f"{constants.PLURAL}/finalizers"], "verbs": ["update"]},
    {"apiGroups": [""], "resources": ["pods", "services"], "verbs": [*WATCH, "create", "delete"]},
    {
        "apiGroups": ["resource.k8s.io"],
        "resources": ["resourceclaimtemplates"],
        "verbs": [*WATCH, "create", "delete"],
    },
    *EVENT_RULES,
]
"""What the operator does in each namespace it serves: granted cluster-wide when it serves every
namespace, by a RoleBinding in each namespace of ``--namespace`` otherwise."""

NETWORK_POLICY_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": ["networking.k8s.io"],
        "resources": ["networkpolicies"],
        "verbs": [*WATCH, "create", "delete"],
    },
]
"""Where the operator makes NetworkPolicies (``--network-policy`` not ``none``), beside
:data:`NAMESPACED_RULES`: an operator that makes none asks for none."""

ROUTER_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": [*WATCH, "create", "update", "delete"]},
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": [*WATCH, "create", "update", "delete"]},
]
"""Where the operator makes routers (``--router-image``): their routes (ConfigMaps) and
Deployments, label-selected like Services and updated in place, beside :data:`NAMESPACED_RULES`."""

GATEWAY_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": ["gateway.networking.k8s.io"],
        "resources": ["httproutes"],
        "verbs": [*WATCH, "create", "update", "delete"],
    },
]
"""Where the operator makes HTTPRoutes (``--gateway``), beside :data:`NAMESPACED_RULES`."""

LEASE_RULES: list[dict[str, Any]] = [
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]},
]
"""The operator's Lease (:mod:`gpupin.controller.lease`), in its own namespace only (a Role)."""

RULES: list[dict[str, Any]] = [*NAMESPACED_RULES, *CLUSTER_RULES, *LEASE_RULES]
"""Everything, for an operator that serves every namespace (one ClusterRole; the chart grants the
Lease rules by a Role in its own namespace instead)."""


def cluster_role(name: str = "gpupin-operator", rules: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {constants.MANAGED_BY_LABEL: "gpupin"}},
        "rules": RULES if rules is None else rules,
    }


if __name__ == "__main__":
    yaml.safe_dump(cluster_role(), sys.stdout, sort_keys=False)
