"""Where the router's table comes from: a routes file, read again whenever it changes.

The file (YAML or JSON) names the engine and its servers::

    engine: ollama
    backends:
      - address: 10.0.3.7:11434
        models: [qwen2.5:14b, nomic-embed-text]
        ready: true          # default true
        pod: assistant-1a2b3c  # for messages and metrics; optional

A file that cannot be read or is not of this shape never empties the table: the router keeps
routing by the last good one and logs what is wrong (which field, what is allowed).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from gpupin.loading import describe_errors
from gpupin.router.proxy import Router
from gpupin.router.table import Backend, RouteTable
from gpupin.safeyaml import YAMLInputError, load

log = structlog.get_logger("gpupin.router")

Address = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}$")]


class BackendEntry(BaseModel):
    """One server of the routes file."""

    model_config = ConfigDict(extra="forbid")
    address: Address
    """``host:port`` (an IPv6 host in brackets)."""
    models: list[Annotated[str, StringConstraints(min_length=1)]] = Field(min_length=1)
    ready: bool = True
    pod: str = ""


class RoutesFile(BaseModel):
    """The routes file (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")
    engine: Literal["ollama", "vllm"]
    backends: list[BackendEntry] = Field(default_factory=list)

    def table(self) -> RouteTable:
        return RouteTable(
            self.engine, tuple(Backend(b.address, tuple(b.models), b.ready, b.pod) for b in self.backends)
        )


class RoutesError(Exception):
    """A routes file that cannot be used, with where and why."""


def read_routes(path: str | Path) -> RouteTable:
    """The table a routes file describes. Raises :class:`RoutesError` naming the file and field."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RoutesError(f"{path}: cannot read it: {exc}") from None
    try:
        document = load(text)
    except YAMLInputError as exc:
        raise RoutesError(f"{path}: {exc}") from None
    if not isinstance(document, dict):
        raise RoutesError(f"{path}: expected a mapping with 'engine' and 'backends'")
    try:
        return RoutesFile.model_validate(document).table()
    except ValidationError as exc:
        raise RoutesError(f"{path}: {describe_errors(exc, RoutesFile)}") from None


class RoutesFollower:
    """Reads ``path`` into ``router`` every time the file changes (polled every ``interval``
    seconds: a ConfigMap volume swaps a symlink, which inotify on the file would miss)."""

    def __init__(self, path: str | Path, router: Router, interval: float = 1.0) -> None:
        self.path = Path(path)
        self.router = router
        self.interval = interval
        self._seen: tuple[int, int, int] | None = None

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            stat = os.stat(self.path)  # follows the ConfigMap's ..data symlink
        except OSError:
            return None
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    def poll(self) -> bool:
        """Read the file again if it changed; True when the router got a new table."""
        signature = self._signature()
        if signature == self._seen:
            return False
        self._seen = signature
        try:
            table = read_routes(self.path)
        except RoutesError as exc:
            log.error("Routes not changed: the file is not usable", error=str(exc))
            return False
        self.router.replace(table)
        log.info("Routes changed", models=table.models, servers=len(table.backends), ready=len(table.ready()))
        return True

    async def follow(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.poll()
