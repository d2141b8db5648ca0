"""kopf settings for an operator that only listens: gpupin registers ``on.event`` handlers alone.

kopf prepares every watch event for change-detecting handlers (``on.create``, ``on.update``,
daemons) whether any are registered or not: it deep-copies the whole object twice (the
"essence" its diff is computed from, then a copy without its own progress annotations). gpupin
has no such handler — its reconcile compares against its own cache — so those copies are pure
cost: they were a third of the operator's CPU in a burst of 1,000 deployments (pods, nodes and
LLMDeployments with their statuses copied on every event). The storages below make that
preparation free and store nothing on the objects (kopf writes no annotations for gpupin either
way: on.event handlers leave no progress behind).

kopf logs in with :func:`login`: the same configuration as gpupin's own client (``--kubeconfig``,
``--context``, else in-cluster, else $KUBECONFIG; :func:`gpupin.kube.load_configuration`) and
gpupin's User-Agent, instead of its own fallback logins (which read the client's default
kubeconfig and context and say ``kopf/…``).
"""

from __future__ import annotations

import asyncio
from importlib import metadata
from typing import Any

import aiohttp
import kopf
from kubernetes import client

from gpupin.kube import KubeconfigError, load_configuration, user_agent


class NoDiffBase(kopf.DiffBaseStorage):
    """No essence: every event's diff is empty (only change-detecting handlers read it)."""

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:
        return {}

    def fetch(self, *, body: Any) -> Any:
        return None

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        return None


class NoProgress(kopf.ProgressStorage):
    """No handler progress (on.event handlers keep none); ``clear`` copies nothing."""

    def fetch(self, *, key: Any, body: Any) -> Any:
        return None

    def store(self, *, key: Any, record: Any, body: Any, patch: Any) -> None:
        return None

    def purge(self, *, key: Any, body: Any, patch: Any) -> None:
        return None

    def touch(self, *, body: Any, patch: Any, value: str | None) -> None:
        return None

    def clear(self, *, essence: Any) -> Any:
        return essence


def listen_only(settings: kopf.OperatorSettings) -> None:
    """Configure kopf for handlers that only listen (see the module docstring)."""
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.persistence.progress_storage = NoProgress()


def connection_info(configuration: client.Configuration, trust_env: bool = False) -> kopf.ConnectionInfo:
    """kopf's credentials from the official client's configuration, as kopf's own
    ``login_via_client`` reads them (the bearer token through the client, so a rotated in-cluster
    token is read anew at each login)."""
    header = configuration.get_api_key_with_prefix("BearerToken") or configuration.get_api_key_with_prefix(
        "authorization"
    )
    parts = header.split(" ", 1) if header else []
    scheme, token = (
        (None, None) if not parts else (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    )
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        username=configuration.username or None,
        password=configuration.password or None,
        scheme=scheme,
        token=token,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
        trust_env=trust_env,
    )


@kopf.on.login()
async def login(settings: kopf.OperatorSettings, **_: Any) -> kopf.AiohttpSession:
    """kopf's session to the API server: gpupin's configuration and User-Agent (module docstring).
    Raises ``kopf.LoginError`` when the configuration cannot be loaded (``gpupin operator`` has
    checked it before kopf starts)."""
    try:
        configuration = await asyncio.to_thread(load_configuration)
    except KubeconfigError as exc:
        raise kopf.LoginError(str(exc)) from None
    info = connection_info(configuration, settings.networking.trust_env)
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ssl=info.as_ssl_context()),
        headers={**info.as_http_headers(), "User-Agent": f"{user_agent()} kopf/{metadata.version('kopf')}"},
        trust_env=info.trust_env,
    )
    return kopf.AiohttpSession(server=info.server, aiohttp_session=session)
