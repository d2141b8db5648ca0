"""A fault-injecting HTTP proxy in front of the real API server (test-only).

The operator under test talks to the proxy (plain HTTP on loopback); the proxy forwards
to kube-apiserver with the cluster's admin client certificate. Tests tell it to answer
some requests with an error instead (409 on a status patch, 500 on pod creation), to
delay them, to cut every open watch stream, to hold new watch requests back (a network
partition for one watch), or to answer a watch as kube-apiserver does when the
resourceVersion it resumes from is out of its window (``ERROR`` event, Status 410 Expired).
This is the one stand-in in the operator tests, and it stands in for the network, not the
API server: every request that is not faulted reaches the real server.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import ssl
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    status: int = 0
    """Answer with this status instead of forwarding (0: forward, after ``delay``)."""
    times: int = 1
    delay: float = 0.0
    hits: int = 0


class FaultProxy:
    def __init__(self, kubeconfig: Path) -> None:
        config = yaml.safe_load(kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        user = config["users"][0]["user"]
        self.upstream = cluster["server"].rstrip("/")
        self._tmp = tempfile.TemporaryDirectory()
        tmp = Path(self._tmp.name)
        self.ssl = ssl.create_default_context()
        if "certificate-authority-data" in cluster:
            ca = tmp / "ca.crt"
            ca.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
            self.ssl.load_verify_locations(str(ca))
        elif "certificate-authority" in cluster:
            self.ssl.load_verify_locations(cluster["certificate-authority"])
        if cluster.get("insecure-skip-tls-verify"):
            self.ssl.check_hostname = False
            self.ssl.verify_mode = ssl.CERT_NONE
        cert, key = user.get("client-certificate"), user.get("client-key")
        if "client-certificate-data" in user:
            cert, key = tmp / "client.crt", tmp / "client.key"
            cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
            key.write_bytes(base64.b64decode(user["client-key-data"]))
        if cert:
            self.ssl.load_cert_chain(str(cert), str(key))
        self.token = user.get("token")
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str, int]] = []
        self.user_agents: list[str] = []
        """The User-Agent of every request that reached the proxy, in order."""
        self.lists: list[str] = []
        """Paths of the plain (not watch) GETs forwarded, in order: the LISTs among them."""
        self._watches: set[web.StreamResponse] = set()
        self._paused: list[re.Pattern[str]] = []
        self._resumed: asyncio.Event | None = None
        self._expire: list[list[Any]] = []  # [path pattern, times left]
        self.expired = 0
        """Watch requests answered with 410 Expired so far."""
        self.held = 0
        """Watch requests held back by :meth:`pause_watches` so far."""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self.port = 0

    # -- control (called from the test thread) --------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        for response in list(self._watches):
            task = getattr(response, "_gpupin_task", None)
            if task is not None:
                self._loop.call_soon_threadsafe(task.cancel)
        asyncio.run_coroutine_threadsafe(self._session.close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._tmp.cleanup()

    def inject(self, method: str, path: str, status: int = 0, times: int = 1, delay: float = 0.0) -> Fault:
        fault = Fault(method.upper(), re.compile(path), status, times, delay)
        self.faults.append(fault)
        return fault

    def pause_watches(self, path: str) -> None:
        """Hold every new watch request whose path matches (a regex) until :meth:`resume_watches`:
        the client has no stream, so it hears nothing of what happens meanwhile."""
        self._call(lambda: self._paused.append(re.compile(path)))

    def resume_watches(self) -> None:
        """Let the held watch requests go on (to the expiry, if one is set, or to the server)."""

        def resume() -> None:
            self._paused.clear()
            if self._resumed is not None:
                self._resumed.set()
                self._resumed = None

        self._call(resume)

    def expire_watches(self, path: str, times: int = 1) -> None:
        """Answer the next ``times`` watch requests whose path matches (a regex) as kube-apiserver
        does when the resourceVersion they resume from has left its window: HTTP 200, one
        ``ERROR`` event with a Status of code 410, reason Expired, then the end of the stream. The
        client must list again, and a list has no DELETED events for what went meanwhile."""
        self._call(lambda: self._expire.append([re.compile(path), times]))

    def _call(self, change: Any) -> None:
        """Run ``change`` on the proxy's loop (its state is the loop's) and wait for it."""

        async def run() -> None:
            change()

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(5)

    def drop_watches(self) -> int:
        """Cut every open watch stream, as a load balancer or an API server restart would."""
        future = asyncio.run_coroutine_threadsafe(self._drop(), self._loop)
        return future.result(5)

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "proxy",
                    "clusters": [{"name": "proxy", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}],
                    "users": [{"name": "proxy", "user": {}}],
                    "contexts": [{"name": "proxy", "context": {"cluster": "proxy", "user": "proxy"}}],
                }
            )
        )
        return path

    # -- the proxy ------------------------------------------------------------------------

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._session = self._loop.run_until_complete(self._make_session())
        self._ready.set()
        self._loop.run_forever()

    async def _make_session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.ssl), auto_decompress=False)

    async def _drop(self) -> int:
        count = 0
        for response in list(self._watches):
            task = getattr(response, "_gpupin_task", None)
            if task is not None:
                task.cancel()
                count += 1
        return count

    def _fault_for(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.method == method and fault.path.search(path) and fault.hits < fault.times:
                fault.hits += 1
                return fault
        return None

    async def _held(self, path: str) -> None:
        """Wait while watches of ``path`` are paused."""
        if any(p.search(path) for p in self._paused):
            self.held += 1
        while any(p.search(path) for p in self._paused):
            if self._resumed is None:
                self._resumed = asyncio.Event()
            await self._resumed.wait()

    def _expiry_for(self, path: str) -> bool:
        for rule in self._expire:
            if rule[0].search(path) and rule[1] > 0:
                rule[1] -= 1
                return True
        return False

    async def _expired(self, request: web.Request) -> web.StreamResponse:
        """What kube-apiserver sends a watch whose resourceVersion is too old."""
        self.expired += 1
        self.requests.append((request.method, request.path, 410))
        response = web.StreamResponse(status=200)
        response.headers["Content-Type"] = "application/json"
        await response.prepare(request)
        event = {
            "type": "ERROR",
            "object": {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": f"too old resource version: {request.query.get('resourceVersion', '1')} (injected)",
                "reason": "Expired",
                "code": 410,
            },
        }
        await response.write(json.dumps(event).encode() + b"\n")
        await response.write_eof()
        return response

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path_qs
        self.user_agents.append(request.headers.get("User-Agent", ""))
        watching = request.method == "GET" and request.query.get("watch") in ("true", "1")
        if watching:
            await self._held(request.path)
            if self._expiry_for(request.path):
                return await self._expired(request)
        fault = self._fault_for(request.method, request.path)
        if fault is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.status:
                self.requests.append((request.method, request.path, fault.status))
                return web.json_response(
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "status": "Failure",
                        "code": fault.status,
                        "reason": "Conflict" if fault.status == 409 else "InternalError",
                        "message": f"injected by the test's fault proxy ({fault.status})",
                    },
                    status=fault.status,
                )
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in ("host", "content-length", "authorization")
        }
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        body = await request.read()
        watch = "watch=" in request.query_string and request.query.get("watch") in ("true", "1")
        timeout = aiohttp.ClientTimeout(total=None if watch else 60)
        async with self._session.request(
            request.method, self.upstream + path, headers=headers, data=body or None, timeout=timeout
        ) as upstream:
            self.requests.append((request.method, request.path, upstream.status))
            if request.method == "GET" and not watch:
                self.lists.append(request.path)
            response = web.StreamResponse(status=upstream.status)
            for name in ("Content-Type", "Content-Encoding"):  # the bytes pass as they came (gzip too)
                if name in upstream.headers:
                    response.headers[name] = upstream.headers[name]
            await response.prepare(request)
            if watch:
                self._watches.add(response)
                response._gpupin_task = asyncio.current_task()  # type: ignore[attr-defined]
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            except asyncio.CancelledError:
                if not watch:
                    raise
                # cut, as a load balancer cuts: the connection drops, possibly mid-event (never a
                # clean end of the chunked body after half a line, which no network produces)
                if request.transport is not None:
                    request.transport.abort()
                return response
            except (ConnectionResetError, aiohttp.ClientError):
                if not watch:
                    raise
            finally:
                self._watches.discard(response)
            await response.write_eof()
            return response

    def count(self, method: str, path: str) -> int:
        pattern = re.compile(path)
        return sum(1 for m, p, _ in self.requests if m == method and pattern.search(p))
