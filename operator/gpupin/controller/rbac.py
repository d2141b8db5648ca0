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
- CustomResourceDefinitions: read only, kopf discovers resources through them.

``python -m gpupin.controller.rbac`` prints them as a ClusterRole.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from gpupin import constants

WATCH = ["get", "list", "watch"]

RULES: list[dict[str, Any]] = [
    {"apiGroups": [constants.GROUP], "resources": [constants.PLURAL], "verbs": WATCH},
    {"apiGroups": [constants.GROUP], "resources": [f"{constants.PLURAL}/status"], "verbs": ["get", "patch"]},
    {"apiGroups": [constants.GROUP], "resources": [f"{constants.PLURAL}/finalizers"], "verbs": ["update"]},
    {"apiGroups": [""], "resources": ["pods", "services"], "verbs": [*WATCH, "create", "delete"]},
    {
        "apiGroups": ["resource.k8s.io"],
        "resources": ["resourceclaimtemplates"],
        "verbs": [*WATCH, "create", "delete"],
    },
    {"apiGroups": [""], "resources": ["nodes"], "verbs": WATCH},
    {"apiGroups": ["resource.k8s.io"], "resources": ["resourceslices"], "verbs": WATCH},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch", "list"]},
    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": WATCH},
]


def cluster_role(name: str = "gpupin-operator") -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {constants.MANAGED_BY_LABEL: "gpupin"}},
        "rules": RULES,
    }


if __name__ == "__main__":
    yaml.safe_dump(cluster_role(), sys.stdout, sort_keys=False)
