"""A fault-injecting HTTP proxy in front of the real API server (test-only).

The operator under test talks to the proxy (plain HTTP on loopback); the proxy forwards
to kube-apiserver with the cluster's admin client certificate. Tests tell it to answer
some requests with an error instead (409 on a status patch, 500 on pod creation), to
delay them, or to cut every open watch stream. This is the one stand-in in the operator
tests, and it stands in for the network, not the API server: every request that is not
faulted reaches the real server.
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

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
        self._watches: set[web.StreamResponse] = set()
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

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path_qs
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
            response = web.StreamResponse(status=upstream.status)
            for name in ("Content-Type",):
                if name in upstream.headers:
                    response.headers[name] = upstream.headers[name]
            await response.prepare(request)
            if watch:
                self._watches.add(response)
                response._gpupin_task = asyncio.current_task()  # type: ignore[attr-defined]
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            except (asyncio.CancelledError, ConnectionResetError, aiohttp.ClientError):
                if not watch:
                    raise
            finally:
                self._watches.discard(response)
            await response.write_eof()
            return response

    def count(self, method: str, path: str) -> int:
        pattern = re.compile(path)
        return sum(1 for m, p, _ in self.requests if m == method and pattern.search(p))
