"""The router's HTTP edge: one endpoint that speaks the engine's API for a whole model set.

A POST to a routed path (:data:`~gpupin.router.table.ROUTED`) goes to a ready server of the
model its body names — the one with the fewest requests in flight — and its answer streams back
as it comes (no buffering: each chunk is written when read). When the server cannot be reached
or answers 503 before its first byte, the next one serving the model is tried; once bytes have
gone to the client nothing is retried. Listings (``/api/tags``, ``/api/ps``, ``/v1/models``)
answer the union of every ready server's. Anything else gets the engine's own 404.

aiohttp serves and forwards (kopf's own HTTP library: no new dependency). The route table is
swapped whole by :meth:`Router.replace`; requests in flight keep the one they started with.
Health and Prometheus metrics are on a port of their own (:meth:`Router.management_app`), so the
Service that clients call exposes only the engine's API.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client import Counter as Metric

from gpupin.router.table import (
    LISTINGS,
    ROUTED,
    Api,
    Backend,
    RouteError,
    RouteTable,
    api_of,
    error_body,
    merge_listing,
)

log = structlog.get_logger("gpupin.router")

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
     "trailers", "transfer-encoding", "upgrade", "host", "content-length"}
)  # fmt: skip
"""Headers that describe one connection, not the message (RFC 9110 §7.6.1), and those aiohttp sets."""

RETRY_STATUSES = frozenset({503})
"""Answers that mean "not this server, not now" (Ollama's queue is full): tried elsewhere."""

LISTING_TIMEOUT = aiohttp.ClientTimeout(total=10)
"""A listing or version asked of every server: one that does not answer within this is left out."""

TRIES_PER_ADDRESS = 2
"""Attempts per address for one request: a Service's address reaches another pod on a new
connection (kube-proxy), so a Service is tried twice before it counts as failed."""


class Router:
    """Forwards requests by model (see the module docstring). ``connect_timeout``: seconds to
    reach a server before trying the next; there is no overall timeout (a generation streams for
    as long as it takes)."""

    def __init__(self, table: RouteTable, *, connect_timeout: float = 5.0) -> None:
        self.table = table
        self.connect_timeout = connect_timeout
        self.in_flight: Counter[str] = Counter()
        self.session: aiohttp.ClientSession | None = None
        self.registry = CollectorRegistry()
        self.requests = Metric(
            "gpupin_router_requests", "Requests answered, by model and HTTP status", ["model", "code"],
            registry=self.registry,
        )  # fmt: skip
        self.retries = Metric(
            "gpupin_router_retries", "Requests tried on another server after one failed before its first byte",
            ["model"], registry=self.registry,
        )  # fmt: skip
        self.first_byte = Histogram(
            "gpupin_router_first_byte_seconds", "From the request read to the server's answer headers, by model",
            ["model"], registry=self.registry,
        )  # fmt: skip

    def replace(self, table: RouteTable) -> None:
        """Route new requests by ``table`` (placements changed)."""
        self.table = table

    # -- the apps ----------------------------------------------------------------------

    def app(self) -> web.Application:
        """The engine's API: every path, answered by :meth:`handle`."""
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        app.on_startup.append(self._open)
        app.on_cleanup.append(self._close)
        return app

    def management_app(self) -> web.Application:
        """``/healthz`` (the process serves), ``/readyz`` (a table is loaded: a router without a
        ready server still answers, with the reason) and ``/metrics``."""
        app = web.Application()
        app.router.add_get("/healthz", _ok)
        app.router.add_get("/readyz", _ok)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def _open(self, _: web.Application) -> None:
        timeout = aiohttp.ClientTimeout(total=None, connect=self.connect_timeout, sock_read=None)
        # bytes pass as they come: no decompression (Content-Encoding goes through with them)
        self.session = aiohttp.ClientSession(
            timeout=timeout,
            auto_decompress=False,
            connector=aiohttp.TCPConnector(limit=0),
            skip_auto_headers=("Accept-Encoding",),  # only what the client asked for
        )

    async def _close(self, _: web.Application) -> None:
        if self.session is not None:
            await self.session.close()

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), content_type="text/plain")

    # -- requests ----------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        table, path = self.table, request.path
        api = api_of(path)
        if not table.serves(path):
            body = error_body(table.engine, api, f"{path} is not served here", 404)
            return web.json_response(body, status=404)
        if path in ROUTED:
            if request.method != "POST":
                return web.json_response(error_body(table.engine, api, "method not allowed", 405), status=405)
            return await self._routed(request, table, await request.read(), api)
        if request.method not in ("GET", "HEAD"):
            return web.json_response(error_body(table.engine, api, "method not allowed", 405), status=405)
        if path in LISTINGS:
            return await self._listing(request, table)
        return await self._any(request, table)

    async def _routed(
        self, request: web.Request, table: RouteTable, body: bytes, api: Api
    ) -> web.StreamResponse:
        attempts: list[str] = []
        failure = ""
        while True:
            started = time.perf_counter()
            tried = [a for a in set(attempts) if attempts.count(a) >= TRIES_PER_ADDRESS]
            try:
                model, backend = table.route(request.path, body, self.in_flight, tried)
            except RouteError as exc:
                status, answer = exc.status, exc.body
                if attempts:  # every server of the model failed before answering: unavailable
                    status = 503
                    message = f"every server of the model failed before answering; the last: {failure}"
                    answer = error_body(table.engine, api, message, 503)
                self.requests.labels(model="", code=str(status)).inc()
                retry = {"Retry-After": "1"} if status == 503 else None
                return web.json_response(answer, status=status, headers=retry)
            if attempts:
                self.retries.labels(model=model).inc()
            self.in_flight[backend.address] += 1
            try:
                response = await self._forward(request, backend, body, model, started)
            except _Unanswered as exc:
                attempts.append(backend.address)
                failure = f"{backend.pod or backend.address}: {exc}"
                log.warning("Server failed before answering; trying again", model=model, server=failure)
                continue
            finally:
                self.in_flight[backend.address] -= 1
            self.requests.labels(model=model, code=str(response.status)).inc()
            return response

    async def _forward(
        self,
        request: web.Request,
        backend: Backend,
        body: bytes | None,
        model: str,
        started: float,
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> web.StreamResponse:
        """Send the request to ``backend`` and stream its answer back. Raises :class:`_Unanswered`
        when it fails before its answer's first byte reached the client."""
        assert self.session is not None
        url = f"http://{backend.address}{request.rel_url}"
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        try:
            upstream = await self.session.request(
                request.method, url, data=body, headers=headers, timeout=timeout or self.session.timeout
            )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _Unanswered(f"{type(exc).__name__}: {exc}") from exc
        async with upstream:
            if upstream.status in RETRY_STATUSES:
                raise _Unanswered(f"answered {upstream.status}")
            self.first_byte.labels(model=model).observe(time.perf_counter() - started)
            response = web.StreamResponse(
                status=upstream.status,
                reason=upstream.reason,
                headers={k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP},
            )
            if upstream.content_length is not None and "chunked" not in upstream.headers.get(
                "Transfer-Encoding", ""
            ):
                response.content_length = upstream.content_length
            try:
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            except ConnectionResetError:  # the client went away: nothing more to send, no one to tell
                return response
            except (
                TimeoutError,
                aiohttp.ClientError,
                OSError,
            ) as exc:  # the server failed after bytes went out
                log.warning(
                    "Server failed while answering", model=model, server=backend.address, error=str(exc)
                )
                if request.transport is not None:  # the client sees a cut answer, not a whole one
                    request.transport.close()
                return response
            await response.write_eof()
            return response

    async def _listing(self, request: web.Request, table: RouteTable) -> web.Response:
        """The union of every ready server's answer; servers that fail are left out."""
        assert self.session is not None
        answers = await asyncio.gather(
            *(self._get_json(f"http://{b.address}{request.path}") for b in table.ready()),
            return_exceptions=True,
        )
        usable = [a for a in answers if not isinstance(a, BaseException)]
        return web.json_response(merge_listing(request.path, table, usable))

    async def _get_json(self, url: str) -> Any:
        assert self.session is not None
        async with self.session.get(url, timeout=LISTING_TIMEOUT) as answer:
            answer.raise_for_status()
            return json.loads(await answer.read())

    async def _any(self, request: web.Request, table: RouteTable) -> web.StreamResponse:
        """A path every server answers alike (the version): the first ready one that answers."""
        failures = []
        for backend in table.ready():
            try:
                return await self._forward(request, backend, None, "", time.perf_counter(), LISTING_TIMEOUT)
            except _Unanswered as exc:
                failures.append(f"{backend.pod or backend.address}: {exc}")
        api = api_of(request.path)
        message = "no server is ready" + (f" ({'; '.join(failures)})" if failures else "")
        return web.json_response(error_body(table.engine, api, message, 503), status=503)


async def _ok(_: web.Request) -> web.Response:
    return web.Response(text="ok")


class _Unanswered(Exception):
    """The server failed before the first byte of its answer reached the client."""
