"""The thin REST client the operator writes with (kopf does the watching) and the agent publishes with.

It uses the official client's configuration loading (kubeconfig or in-cluster service
account, token refresh included) and its HTTP layer, but speaks plain JSON dicts: the
renderer produces dicts and the cache holds dicts, so nothing is converted to typed
models and back. Calls block; the runtime runs them in threads. Every request is reported to
``on_request(verb, resource, status)`` once answered (status 0: no answer) when given (the
operator counts them for its metrics and the benchmark); the client itself knows no metrics.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import urllib3
import yaml
from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

from gpupin import __version__
from gpupin.constants import KUBELET_READINESS_FAILED

CORE_KINDS = {"Pod": "pods", "Service": "services", "Event": "events", "ConfigMap": "configmaps"}
GROUP_KINDS = {
    "ResourceClaimTemplate": ("resource.k8s.io/v1", "resourceclaimtemplates"),
    "NetworkPolicy": ("networking.k8s.io/v1", "networkpolicies"),
    "Deployment": ("apps/v1", "deployments"),
    "HTTPRoute": ("gateway.networking.k8s.io/v1", "httproutes"),
}


class ApiError(Exception):
    """A non-2xx answer from the API server."""

    def __init__(self, status: int, reason: str, body: str) -> None:
        super().__init__(
            f"{status} {reason}: {body[:300]}"
            if status
            else f"no answer from the API server ({reason}: {body[:300]})"
        )
        self.status = status
        self.reason = reason
        self.body = body

    @property
    def retriable(self) -> bool:
        return self.status in (409, 429) or self.status >= 500


@dataclass(frozen=True)
class ObjectRef:
    api_version: str
    plural: str
    namespace: str | None
    name: str | None = None

    def path(self, subresource: str | None = None) -> str:
        prefix = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        parts = [prefix]
        if self.namespace:
            parts.append(f"namespaces/{quote(self.namespace)}")
        parts.append(self.plural)
        if self.name:
            parts.append(quote(self.name))
        if subresource:
            parts.append(subresource)
        return "/".join(parts)


def ref_of(obj: dict[str, Any]) -> ObjectRef:
    kind = obj["kind"]
    if kind in CORE_KINDS:
        api_version, plural = "v1", CORE_KINDS[kind]
    elif kind in GROUP_KINDS:
        api_version, plural = GROUP_KINDS[kind]
    else:
        raise ValueError(f"gpupin does not manage {kind}")
    meta = obj["metadata"]
    return ObjectRef(api_version, plural, meta.get("namespace"), meta.get("name"))


def _resource(path: str) -> str:
    """``/api/v1/namespaces/ns/pods/x`` → ``pods``; ``/api/v1/namespaces/ns`` → ``namespaces``."""
    parts = [p for p in path.split("/") if p]
    parts = parts[2:] if parts[:1] == ["api"] else parts[3:]
    if len(parts) >= 3 and parts[0] == "namespaces":
        return parts[2]
    return parts[0] if parts else ""


@dataclass
class Connection:
    """Where and as what this process talks to the API server; set once, by :func:`connect`,
    before any :class:`Kube` is made (the CLI's ``--kubeconfig``/``--context``)."""

    kubeconfig: str | None = None
    """A kubeconfig file (None: in-cluster when in a pod, else $KUBECONFIG or ~/.kube/config)."""
    context: str | None = None
    """A context of that kubeconfig (None: its current-context)."""
    component: str = ""
    """``operator`` or ``agent``: named in the User-Agent of every request."""


CONNECTION = Connection()


class KubeconfigError(ValueError):
    """The kubeconfig or context cannot be used; the message names the flag (or variable) and why."""


def user_agent(component: str | None = None) -> str:
    """``gpupin/<version> (<component>)``, the User-Agent of every request: API server audit logs then
    tell gpupin's requests apart (``component`` None: the process's, from :func:`connect`)."""
    component = CONNECTION.component if component is None else component
    return f"gpupin/{__version__}" + (f" ({component})" if component else "")


def connect(kubeconfig: str | None, context: str | None, component: str) -> client.Configuration:
    """Use this kubeconfig and context, and name ``component`` in the User-Agent, for every later
    :class:`Kube` and :func:`load_configuration` of this process. Loads the configuration once now,
    so a bad path or an unknown context is found before anything runs: raises
    :class:`KubeconfigError` naming ``--kubeconfig`` or ``--context``."""
    configuration = load_configuration(kubeconfig, context)
    CONNECTION.kubeconfig, CONNECTION.context, CONNECTION.component = kubeconfig, context, component
    return configuration


def load_configuration(kubeconfig: str | None = None, context: str | None = None) -> client.Configuration:
    """The client configuration: ``kubeconfig`` if given (with ``context``, else its current one);
    else the process's (:func:`connect`); else the in-cluster service account when running in a pod,
    else $KUBECONFIG (read now: the client reads it only once, at import) or ~/.kube/config. Raises
    :class:`KubeconfigError` (a :class:`ValueError`) naming the file, or the context and the
    contexts there are."""
    if kubeconfig is None and context is None:
        kubeconfig, context = CONNECTION.kubeconfig, CONNECTION.context
    configuration = client.Configuration()
    if kubeconfig is None and context is None:
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            return configuration
        except ConfigException:
            pass
    if kubeconfig is not None:
        where = f"--kubeconfig {kubeconfig}"
        if not os.path.isfile(os.path.expanduser(kubeconfig)):
            raise KubeconfigError(f"{where}: no such file (name a kubeconfig file)")
    elif os.environ.get("KUBECONFIG"):
        kubeconfig = os.environ["KUBECONFIG"]
        where = f"KUBECONFIG={kubeconfig}"
    else:
        kubeconfig = os.path.expanduser("~/.kube/config")
        where = kubeconfig
        if not os.path.isfile(kubeconfig) and context is None:
            raise KubeconfigError(
                f"not in a pod (no service account) and no kubeconfig at {kubeconfig}: "
                "name one with --kubeconfig or KUBECONFIG"
            )
    try:
        if context is not None:
            contexts, _ = config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
            names = [str(c.get("name")) for c in contexts or []]
            if context not in names:
                raise KubeconfigError(
                    f"--context {context}: no such context in {kubeconfig} (its contexts: {', '.join(names) or 'none'})"
                )
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, context=context, client_configuration=configuration
        )
    except (ConfigException, OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as exc:
        message = re.sub(r"\s+", " ", str(exc)).strip()
        raise KubeconfigError(f"{where}: not a usable kubeconfig ({message or type(exc).__name__})") from None
    return configuration


class Kube:
    """JSON in, JSON out; raises :class:`ApiError` on failure."""

    def __init__(
        self,
        configuration: client.Configuration | None = None,
        on_request: Callable[[str, str, int], None] | None = None,
        write_budget: Callable[[], float] | None = None,
        component: str | None = None,
    ) -> None:
        self.configuration = configuration or load_configuration()
        self.user_agent = user_agent(component)
        """Sent with every request (``component`` None: the process's, see :func:`connect`)."""
        self.on_request = on_request
        self.write_budget = write_budget
        """Asked before every request that is not a read: the seconds this process may still write
        (0 or less refuses it: 503 ``NotLeader``; the request's timeout is cut to it), so an
        operator that lost its Lease writes nothing more (:mod:`gpupin.controller.lease`)."""
        self.api = client.ApiClient(self.configuration)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> Any:
        url = self.configuration.host + path + (f"?{urlencode(params)}" if params else "")
        headers = {"Accept": "application/json", "Content-Type": content_type, "User-Agent": self.user_agent}
        # the client's auth settings: a bearer token (kubeconfig token, exec plugin or the
        # in-cluster service account, refreshed by the client as it rotates)
        settings: dict[str, dict[str, Any]] = dict(self.configuration.auth_settings())  # type: ignore[arg-type]
        for setting in settings.values():
            if setting.get("in") == "header" and setting.get("value"):
                headers[str(setting["key"]).title()] = str(setting["value"])
        resource = _resource(path)
        if self.write_budget is not None and method not in ("GET", "HEAD"):
            budget = self.write_budget()
            if budget <= 0:
                raise ApiError(
                    503, "NotLeader", "this operator no longer holds its Lease: it writes nothing more"
                )
            timeout = min(timeout, budget)  # an answer later than this could land after a new writer began
        status = 0  # no answer (a connection refused, a timeout)
        try:
            response = self.api.rest_client.request(  # type: ignore[no-untyped-call]
                method, url, headers=headers, body=body, _request_timeout=timeout
            )
            status = response.status
        except client.exceptions.ApiException as exc:  # the HTTP layer raises for some statuses
            status = exc.status or 0
            raise ApiError(exc.status or 0, exc.reason or "", str(exc.body or "")) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:  # no answer: refused, reset, timed out
            raise ApiError(0, type(exc).__name__, str(exc)) from None
        finally:
            if self.on_request is not None:
                self.on_request(method, resource, status)
        data = response.read() if hasattr(response, "read") else response.data
        text = data.decode() if isinstance(data, bytes) else str(data or "")
        if not 200 <= response.status < 300:
            raise ApiError(response.status, getattr(response, "reason", "") or "", text)
        return json.loads(text) if text else None

    # -- the calls the operator makes ---------------------------------------------------

    def create(self, obj: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        """POST the object; ``dry_run``: the API server validates and admits it but stores nothing."""
        ref = ref_of(obj)
        result: dict[str, Any] = self.request(
            "POST",
            ObjectRef(ref.api_version, ref.plural, ref.namespace).path(),
            obj,
            {"dryRun": "All"} if dry_run else None,
        )
        return result

    def replace(self, obj: dict[str, Any]) -> dict[str, Any]:
        """PUT the object over its namesake; ``metadata.resourceVersion`` (required) makes it
        conditional: 409 when the object changed since."""
        result: dict[str, Any] = self.request("PUT", ref_of(obj).path(), obj)
        return result

    def delete(self, obj: dict[str, Any], grace_period_seconds: int | None = None) -> None:
        """Delete by name, preconditioned on the uid we saw, so a namesake created since is safe."""
        body: dict[str, Any] = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "propagationPolicy": "Background",
        }
        uid = obj["metadata"].get("uid")
        if uid:
            body["preconditions"] = {"uid": uid}
        if grace_period_seconds is not None:
            body["gracePeriodSeconds"] = grace_period_seconds
        try:
            self.request("DELETE", ref_of(obj).path(), body)
        except ApiError as exc:
            if exc.status != 404:
                raise

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        ref = ObjectRef("gpupin.dev/v1alpha1", "llmdeployments", namespace, name)
        result: dict[str, Any] = self.request(
            "PATCH", ref.path("status"), {"status": status}, content_type="application/merge-patch+json"
        )
        return result

    def last_probe_failure(self, namespace: str, uid: str, since: str = "") -> str | None:
        """The message of the newest readiness-probe failure the kubelet reported for the pod with
        this uid (its ``Unhealthy`` Events, selected on the server) no older than ``since``
        (RFC 3339, e.g. when its container started), or None."""
        events = self.request(
            "GET",
            f"/api/v1/namespaces/{namespace}/events",
            params={"fieldSelector": f"involvedObject.uid={uid},reason=Unhealthy"},
        )
        newest: tuple[str, str] | None = None
        for event in (events or {}).get("items") or []:
            message = str(event.get("message") or "")
            if KUBELET_READINESS_FAILED not in message.split("\n", 1)[0]:
                continue  # liveness and startup failures; "(combined from similar events): " is kept
            when = str(event.get("lastTimestamp") or event.get("eventTime") or "")
            if since and when and when < since:
                continue
            if newest is None or when >= newest[0]:
                newest = (when, message)
        return newest[1] if newest else None
