"""An Ollama deployment's models routed by a Gateway API implementation instead of the embedded
router: one ``HTTPRoute`` attached to a named Gateway, one rule per model. Pure: a dict out.

The Gateway API Inference Extension's body-based router (an Envoy external processor in front of
the Gateway) copies the request body's ``model`` into the ``X-Gateway-Model-Name`` header; each
rule matches that header against the model's names and sends the request to the model's own
Service, whose EndpointSlices follow its pods. So routing runs in the gateway's Envoy.

A model matches under the spellings clients use for it, exactly (the header carries the body's
text as the client wrote it): as the spec writes it, as Ollama lists it (``nomic-embed-text:latest``)
and, for ``latest``, without a tag. The Gateway API allows at most 16 rules per route: a
deployment of more models gets a second route (``NAME-2``).
"""

from __future__ import annotations

import re
from typing import Any

from gpupin import naming
from gpupin.api.v1alpha1 import LLMDeployment
from gpupin.engines.ollama_scripts import ollama_names

_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
MODEL_HEADER = "X-Gateway-Model-Name"
"""Set from the request body's ``model`` by the Inference Extension's body-based router."""


def parse_gateway(text: str) -> tuple[str, str] | None:
    """``NAMESPACE/NAME`` → (namespace, name); ``NAME`` → ("", name): the Gateway in each
    deployment's own namespace; empty → None. Raises ValueError naming what is wrong."""
    text = text.strip()
    if not text:
        return None
    namespace, slash, name = text.rpartition("/")
    if not _SUBDOMAIN.fullmatch(name) or len(name) > 253:
        raise ValueError(
            f"--gateway {text!r}: {name!r} is not a Gateway name (expected NAMESPACE/NAME or NAME)"
        )
    if slash and (not _LABEL.fullmatch(namespace) or len(namespace) > 63):
        raise ValueError(
            f"--gateway {text!r}: {namespace!r} is not a namespace name (expected NAMESPACE/NAME)"
        )
    return namespace, name


RULES_PER_ROUTE = 16
"""The Gateway API's limit (``HTTPRouteSpec.rules`` maxItems)."""


def spellings(model: str) -> list[str]:
    """The names a client may send for an Ollama model, each once: the spec's, Ollama's listing
    form, and that form without ``:latest``."""
    listed = ollama_names([model])[0]
    return list(dict.fromkeys([model, listed, listed.removesuffix(":latest")]))


def http_routes(
    deployment: LLMDeployment, labels: dict[str, str], port: int, gateway: tuple[str, str]
) -> list[dict[str, Any]]:
    """The deployment's HTTPRoutes: :func:`http_route` for each 16 of its models."""
    names = [m.name for m in deployment.spec.models]
    chunks = [names[i : i + RULES_PER_ROUTE] for i in range(0, len(names), RULES_PER_ROUTE)]
    return [http_route(deployment, labels, port, gateway, chunk, i + 1) for i, chunk in enumerate(chunks)]


def http_route(
    deployment: LLMDeployment,
    labels: dict[str, str],
    port: int,
    gateway: tuple[str, str],
    models: list[str] | None = None,
    number: int = 1,
) -> dict[str, Any]:
    """An HTTPRoute of the deployment, named after it (``-2`` on for the second and later:
    ``number``) for ``models`` (default: all of them; at most 16). ``labels``: those of every
    object gpupin makes for it; ``port``: the engine's; ``gateway``: (namespace, name), namespace
    "" for its own."""
    names = naming.model_service_names(deployment.metadata.name, [m.name for m in deployment.spec.models])
    rules = []
    for model in models if models is not None else list(names):
        service = names[model]
        rules.append(
            {
                "matches": [
                    {"headers": [{"type": "Exact", "name": MODEL_HEADER, "value": spelling}]}
                    for spelling in spellings(model)
                ],
                "backendRefs": [{"name": service, "port": port}],
            }
        )
    namespace, name = gateway
    parent: dict[str, Any] = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": name}
    if namespace:
        parent["namespace"] = namespace
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {
            "name": naming.deployment_service_name(deployment.metadata.name)
            + (f"-{number}" if number > 1 else ""),
            "namespace": deployment.metadata.namespace,
            "labels": {**labels, "app.kubernetes.io/component": "router"},
        },
        "spec": {"parentRefs": [parent], "rules": rules},
    }
