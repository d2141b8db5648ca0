"""The objects that give an Ollama LLMDeployment one endpoint: ``gpupin router`` in front of its
per-model Services. Pure: dicts out.

For deployment ``assistant`` (namespace ``apps``) serving ``qwen2.5:14b`` and ``nomic-embed-text``:

- Service ``assistant`` (named after the deployment, as a vLLM deployment's one Service is), port
  11434 — a client that used ``OLLAMA_HOST=assistant:11434`` with any of the model names keeps
  working;
- Deployment ``assistant-router`` (gpupin's own image, ``gpupin router``), one replica, small
  requests, probes on its management port; its pods carry none of the labels that mark gpupin's
  engine pods, so neither the operator nor the per-model Services mistake them for servers;
- ConfigMap ``assistant-router``: the routes — each model to its per-model Service
  (``assistant-qwen2-5-14b.apps.svc:11434``). Those Services follow placements and readiness
  themselves (their EndpointSlices), so the routes change only when the spec's models do, and
  the router reads the file again when the kubelet updates it (no restart).

One router per LLMDeployment, not one per namespace: it is owned by its LLMDeployment and goes
with it (the garbage collector), a deployment's router failing or being restarted touches no
other deployment, and its name, routes and metrics are that deployment's alone.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel

from gpupin import naming
from gpupin.api.v1alpha1 import OBJECT_NAME_PATTERN, LLMDeployment
from gpupin.quantity import QUANTITY_PATTERN, parse_quantity

ROUTER_LABEL = "gpupin.dev/router"
"""Label of a router's pods: the deployment they route for (label value)."""
ROUTER_PORT = 8080
"""Port of the engine's API in the router's pod (the Service maps the engine's port to it)."""
MANAGEMENT_PORT = 9090
"""Port of the router's /healthz, /readyz and /metrics."""
ROUTES_PATH = "/etc/gpupin/routes"
ROUTES_FILE = "routes.yaml"


DEFAULT_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "50m", "memory": "64Mi"},
    "limits": {"memory": "256Mi"},
}
"""The router container's resources unless :attr:`RouterPod.resources` says otherwise: about
1 ms of CPU per request on a 2-vCPU VM (``make bench-router``: 0.9 ms), so 50m is ~50 requests a second
at its request; no CPU limit, so a burst takes what the node has free."""


class _Settings(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


def _label_key(text: str) -> str:
    if not naming.LABEL_KEY.match(text):
        raise ValueError(f"{text!r} is not a label key (such as pool or example.com/pool)")
    return text


def _label_value(text: str) -> str:
    if not naming.LABEL_VALUE.match(text):
        raise ValueError(f"{text!r} is not a label value (at most 63 letters, digits, '-', '_', '.')")
    return text


LabelKey = Annotated[str, AfterValidator(_label_key)]
LabelValue = Annotated[str, AfterValidator(_label_value)]


class Toleration(_Settings):
    """A pod toleration (core/v1 Toleration), held to the API server's own rules so that no router
    Deployment is refused for it: an empty key needs ``Exists``; ``Exists`` takes no value;
    ``tolerationSeconds`` only with ``NoExecute``. ``""`` is as good as absent (all effects;
    ``Equal``)."""

    key: LabelKey | None = None
    operator: Literal["Exists", "Equal", ""] | None = None
    value: LabelValue | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute", ""] | None = None
    toleration_seconds: int | None = None

    @model_validator(mode="after")
    def _as_kubernetes_allows(self) -> Toleration:
        exists = self.operator == "Exists"
        if not self.key and not exists:
            raise ValueError(
                "a toleration without a key must have operator Exists (it tolerates every taint)"
            )
        if exists and self.value:
            raise ValueError("a toleration with operator Exists takes no value")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError("tolerationSeconds only goes with effect NoExecute")
        return self


def _object_name(text: str) -> str:
    if len(text) > 253 or not re.fullmatch(OBJECT_NAME_PATTERN, text):
        raise ValueError(f"{text!r} is not an object name (lower-case letters, digits, '-' and '.')")
    return text


def _quantity(given: Any) -> str:
    """A quantity as Kubernetes takes it: a string, or a number (YAML's ``cpu: 1``), not negative."""
    if isinstance(given, bool) or not isinstance(given, str | int | float):
        raise ValueError(f"{given!r} is not a Kubernetes quantity (such as 100m, 0.5, 128Mi)")
    text = given if isinstance(given, str) else format(Decimal(str(given)), "f")
    if not re.fullmatch(QUANTITY_PATTERN, text) or text.startswith("-"):
        raise ValueError(f"{given!r} is not a Kubernetes quantity of at least 0 (such as 100m, 0.5, 128Mi)")
    return text


ObjectName = Annotated[str, AfterValidator(_object_name)]
Quantity = Annotated[str, BeforeValidator(_quantity)]


class PullSecret(_Settings):
    name: ObjectName


class Resources(_Settings):
    """The router container's requests and limits; a request above its limit is refused, as the
    API server would."""

    requests: dict[Literal["cpu", "memory"], Quantity] = Field(default_factory=dict)
    limits: dict[Literal["cpu", "memory"], Quantity] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _requests_within_limits(self) -> Resources:
        for kind, asked in self.requests.items():
            limit = self.limits.get(kind)
            if limit is not None and parse_quantity(asked) > parse_quantity(limit):
                raise ValueError(f"the {kind} request {asked} is above its limit {limit}")
        return self


class RouterPod(_Settings):
    """Where every router pod runs and what it may pull: operator-wide, from ``--router-pod``
    (JSON; the chart's ``operator.router`` values). Pull secrets are looked up in each
    LLMDeployment's own namespace (a pod can use no other), so they must exist there."""

    node_selector: dict[LabelKey, LabelValue] = Field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()
    image_pull_secrets: tuple[PullSecret, ...] = ()
    priority_class_name: ObjectName | None = None
    resources: Resources | None = None
    """None (or empty): :data:`DEFAULT_RESOURCES`; given, it replaces them whole."""

    @model_validator(mode="before")
    @classmethod
    def _null_is_unset(cls, given: Any) -> Any:
        """A value left empty in Helm values arrives as null (or ""): unset, as Kubernetes reads it."""
        if isinstance(given, dict):
            return {k: v for k, v in given.items() if v not in (None, "")}
        return given

    def pod_spec(self) -> dict[str, Any]:
        """The fields this sets in the router's pod spec (camelCase, none when unset)."""
        fields = self.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"resources"})
        return {k: v for k, v in fields.items() if v}


def parse_router_pod(text: str) -> RouterPod:
    """``--router-pod``'s JSON object (empty: no settings). Raises ValueError naming the field and
    what it allows."""
    if not text.strip():
        return RouterPod()
    try:
        return RouterPod.model_validate_json(text)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'the value'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise ValueError(
            f"--router-pod: {problems} (expected a JSON object with nodeSelector, tolerations, "
            "imagePullSecrets, priorityClassName, resources)"
        ) from None


def router_name(deployment: str) -> str:
    """``assistant-router``: the router's Deployment and ConfigMap (a hash of the deployment's name
    replaces its end when the whole would not be a DNS label)."""
    candidate = f"{deployment}-router"
    if naming.dns_label(candidate) == candidate:
        return candidate
    return f"{naming.dns_label(deployment, naming.MAX_NAME - 14)}-{naming.short_hash(deployment)}-router"


def endpoint_address(deployment: LLMDeployment, port: int) -> str:
    """``assistant.apps.svc:11434``: where clients in the cluster call every model of ``deployment``."""
    service = naming.deployment_service_name(deployment.metadata.name)
    return f"{service}.{deployment.metadata.namespace}.svc:{port}"


def routes_document(deployment: LLMDeployment, port: int) -> dict[str, Any]:
    """The routes file (see :mod:`gpupin.router.source`): each model to its per-model Service."""
    names = naming.model_service_names(deployment.metadata.name, [m.name for m in deployment.spec.models])
    namespace = deployment.metadata.namespace
    return {
        "engine": "ollama",
        "backends": [
            {"address": f"{service}.{namespace}.svc:{port}", "models": [model], "pod": service}
            for model, service in names.items()
        ],
    }


def router_objects(
    deployment: LLMDeployment,
    labels: dict[str, str],
    port: int,
    image: str,
    settings: RouterPod | None = None,
) -> list[dict[str, Any]]:
    """The router's Service, ConfigMap and Deployment for ``deployment`` (``labels``: those of every
    object gpupin makes for it; ``port``: the engine's; ``image``: gpupin's own; ``settings``:
    the operator's scheduling, pull secrets and resources for every router pod)."""
    settings = settings or RouterPod()
    name = router_name(deployment.metadata.name)
    namespace = deployment.metadata.namespace
    pod_labels = {
        "app.kubernetes.io/name": "gpupin-router",
        "app.kubernetes.io/instance": naming.label_value(deployment.metadata.name),
        "app.kubernetes.io/component": "router",
        ROUTER_LABEL: naming.label_value(deployment.metadata.name),
    }
    selector = {ROUTER_LABEL: pod_labels[ROUTER_LABEL]}

    def meta(name: str) -> dict[str, Any]:  # each object its own labels: the spec hash goes there
        return {
            "name": name,
            "namespace": namespace,
            "labels": {**labels, "app.kubernetes.io/component": "router"},
        }

    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(naming.deployment_service_name(deployment.metadata.name)),
        "spec": {
            "selector": selector,
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(name),
        "data": {ROUTES_FILE: json.dumps(routes_document(deployment, port), indent=2) + "\n"},
    }
    probe = {"httpGet": {"path": "/readyz", "port": "management"}, "periodSeconds": 5}
    container = {
        "name": "router",
        "image": image,
        "args": [
            "router",
            "--routes",
            f"{ROUTES_PATH}/{ROUTES_FILE}",
            "--port",
            str(ROUTER_PORT),
            "--management-port",
            str(MANAGEMENT_PORT),
        ],
        "ports": [
            {"name": "http", "containerPort": ROUTER_PORT, "protocol": "TCP"},
            {"name": "management", "containerPort": MANAGEMENT_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": probe,
        "livenessProbe": {
            **probe,
            "httpGet": {"path": "/healthz", "port": "management"},
            "periodSeconds": 10,
        },
        "resources": (
            settings.resources.model_dump(mode="json", exclude_defaults=True)
            if settings.resources and (settings.resources.requests or settings.resources.limits)
            else {k: dict(v) for k, v in DEFAULT_RESOURCES.items()}
        ),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "routes", "mountPath": ROUTES_PATH, "readOnly": True}],
    }
    router = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(name),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "automountServiceAccountToken": False,  # it reads a file and calls Services
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container],
                    "volumes": [{"name": "routes", "configMap": {"name": name}}],
                    **settings.pod_spec(),
                },
            },
        },
    }
    return [service, config_map, router]
