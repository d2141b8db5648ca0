"""``/healthz`` of ``gpupin operator`` for the whole life of the process, on ``--health-port``.

kopf's own liveness endpoint comes up only once its start-up handlers are done, and a standby
never runs them: a standby's probe would fail, and so would a new writer's while it lists the
cluster on takeover (longer than the probe allows, in a large cluster). So gpupin answers itself:

- ``standby`` (waiting for the Lease) and ``starting`` (took it, listing): alive;
- ``running``: alive while the event loop beats — a task on it marks the time every
  :data:`BEAT_SECONDS` — and not once it has been silent for :data:`STALE_SECONDS` (a loop stuck
  in a long synchronous step, or dead): the kubelet restarts the pod.

The body says which (``{"phase": "running", "lastBeatSeconds": 1.2}``).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

BEAT_SECONDS = 5.0
STALE_SECONDS = 60.0


class Liveness:
    def __init__(self) -> None:
        self.phase = "starting"
        self.last_beat = time.monotonic()

    def report(self) -> tuple[bool, dict[str, Any]]:
        """(alive, what to say)."""
        silent = time.monotonic() - self.last_beat
        alive = self.phase != "running" or silent < STALE_SECONDS
        return alive, {"phase": self.phase, "lastBeatSeconds": round(silent, 1)}

    def run_on(self, loop: asyncio.AbstractEventLoop) -> asyncio.Task[None]:
        """From now on, alive while ``loop`` beats (called on it, once the operator runs)."""
        self.phase = "running"
        self.last_beat = time.monotonic()
        return loop.create_task(self._beat())

    async def _beat(self) -> None:
        while True:
            self.last_beat = time.monotonic()
            await asyncio.sleep(BEAT_SECONDS)


LIVENESS = Liveness()
"""The process's one liveness (``gpupin operator`` serves it; the start-up handler beats it)."""


def serve(port: int, liveness: Liveness = LIVENESS) -> ThreadingHTTPServer:
    """Serve ``/healthz`` on ``port`` in a thread of its own."""

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/healthz":
                alive, said = False, {"error": "not found"}
                status = 404
            else:
                alive, said = liveness.report()
                status = 200 if alive else 503
            body = json.dumps(said).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:  # probes are not news
            return

    server = ThreadingHTTPServer(("0.0.0.0", port), Health)
    threading.Thread(target=server.serve_forever, name="gpupin-health", daemon=True).start()
    return server
