"""The operator's model metadata: the bundled data, the cluster's model data over it, and what
was read from the models' registries, read in the background so no reconcile waits on the network.

A deployment whose models are all known (or carry ``models[].vram``) is planned at once. One with
a model not yet read waits for the first read (seconds; ``on_read`` re-queues it) — planning it
from its name first and re-planning when the metadata arrives could move or delete pods. What was
read is kept for ``ttl`` seconds and then read again in the background while the old answer
serves. A model the registry says does not exist is refused (``UnknownModel``), one the engine
cannot serve too (``UnsupportedModel``), both asked again after ``failure_ttl``; one whose
registry cannot be reached is sized from its name meanwhile, retried after ``failure_ttl``, and
``status.sizing`` says why it was not read.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from gpupin import reasons
from gpupin.api.v1alpha1 import LLMDeployment
from gpupin.engines import ENGINES, EngineRegistry
from gpupin.modelfacts import ModelFacts
from gpupin.modelsource import (
    ModelNotFound,
    ModelSource,
    ModelUnsupported,
    SourceUnavailable,
    named_as,
)
from gpupin.sizing import ModelCatalog, ModelDataError, parse_model_data

log = structlog.get_logger("gpupin.operator")

Key = tuple[str, str]
"""(naming scheme, model name lower case)."""


def cluster_catalog(paths: tuple[str, ...], base: ModelCatalog | None = None) -> ModelCatalog:
    """The bundled data with each model-data file (or each ``*.yaml`` of a folder: a mounted
    ConfigMap) over it, read once at start-up. Raises :class:`gpupin.sizing.ModelDataError`
    (file, entry, field) or OSError."""
    catalog = base or ENGINES.catalog
    entries: list[ModelFacts] = []
    for path in paths:
        for file in sorted(Path(path).glob("*.yaml")) if Path(path).is_dir() else [Path(path)]:
            try:
                text = file.read_text(encoding="utf-8")
            except UnicodeDecodeError as err:
                raise ModelDataError(f"{file}: not UTF-8 text (byte {err.start})") from None
            entries += parse_model_data(text, str(file))
    return catalog.overlay(entries) if entries else catalog


class ModelMetadata:
    """Reads unknown models' metadata with ``source`` (None: offline) and hands out the engine
    registry to plan with. ``on_read`` is called (from the event loop) each time a read ends;
    the reconciler re-queues the deployments then. Times are seconds of ``clock``."""

    def __init__(
        self,
        catalog: ModelCatalog,
        source: ModelSource | None,
        on_read: Callable[[], None],
        ttl: float = 24 * 3600.0,
        failure_ttl: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.catalog = catalog
        self.source = source
        self.on_read = on_read
        self.ttl = ttl
        self.failure_ttl = failure_ttl
        self.clock = clock
        self.found: dict[Key, tuple[float, ModelFacts]] = {}
        self.refused: dict[Key, tuple[float, str, str]] = {}
        """(when, reason, message) of names refused by their registry."""
        self.unavailable: dict[Key, tuple[float, str]] = {}
        self.reading: set[Key] = set()
        self._tasks: set[asyncio.Task[ModelFacts]] = set()
        self._registry: EngineRegistry | None = None

    def registry_for(self, deployment: LLMDeployment) -> EngineRegistry | None:
        """The registry to plan ``deployment`` with, or None while one of its models is being
        read for the first time (the caller skips the reconcile; ``on_read`` re-queues it)."""
        spec = deployment.spec
        try:
            scheme = ENGINES.for_spec(spec).naming_scheme
        except ValueError:
            return self.registry  # an unknown engine: the planner refuses it
        waiting = False
        now = self.clock()
        for model in spec.models:
            key = (scheme, model.name.lower())
            if model.vram is not None or self.source is None or self.catalog.lookup(model.name, scheme):
                continue
            answered = self._answered_at(key)
            stale = answered is None or now - answered[0] >= answered[1]
            if stale and key not in self.reading:
                self._start(key, model.name, scheme)
            waiting = waiting or answered is None
        return None if waiting else self.registry

    def _answered_at(self, key: Key) -> tuple[float, float] | None:
        """(when the last answer came, how long it holds), None before any answer."""
        if key in self.found:
            return self.found[key][0], self.ttl
        if key in self.refused:
            return self.refused[key][0], self.failure_ttl
        if key in self.unavailable:
            return self.unavailable[key][0], self.failure_ttl
        return None

    @property
    def registry(self) -> EngineRegistry:
        if self._registry is None:
            catalog = self.catalog.overlay(
                (facts for _, facts in self.found.values()),
                {name: (reason, message) for (_, name), (_, reason, message) in self.refused.items()},
                {name: why for (_, name), (_, why) in self.unavailable.items()},
            )
            self._registry = ENGINES.with_catalog(catalog)
        return self._registry

    def _start(self, key: Key, name: str, scheme: str) -> None:
        assert self.source is not None
        self.reading.add(key)
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(self.source.facts, name, scheme))
        self._tasks.add(task)  # a task nobody references may be collected before it ends
        task.add_done_callback(lambda done: self._finish(key, name, scheme, done))

    def _finish(self, key: Key, name: str, scheme: str, task: asyncio.Task[ModelFacts]) -> None:
        self._tasks.discard(task)
        self.reading.discard(key)
        now = self.clock()
        try:
            facts = task.result()
        except ModelNotFound as err:
            self._forget(key)
            self.refused[key] = (now, reasons.UNKNOWN_MODEL, f"{name} is unknown: {err}")
            log.info("Model unknown to its registry", model=name, why=str(err))
        except ModelUnsupported as err:
            self._forget(key)
            self.refused[key] = (now, reasons.UNSUPPORTED_MODEL, f"{name} cannot be served as asked: {err}")
            log.info("Model not servable as asked", model=name, why=str(err))
        except SourceUnavailable as err:
            if key in self.found:  # a re-read failed: the facts read before still hold
                self.found[key] = (now - self.ttl + self.failure_ttl, self.found[key][1])
            else:
                self.unavailable[key] = (now, str(err))
            log.warning("Model metadata not read", model=name, why=str(err))
        except Exception as err:  # a bug in a parser must not stop planning: size from the name
            self.unavailable[key] = (now, f"{type(err).__name__}: {err}")
            log.exception("Model metadata read failed", model=name)
        else:
            self._forget(key)
            self.found[key] = (now, named_as(facts, name, scheme))
            log.info("Model metadata read", model=name, origin=facts.origin)
        self._registry = None
        self.on_read()

    def _forget(self, key: Key) -> None:
        self.found.pop(key, None)
        self.refused.pop(key, None)
        self.unavailable.pop(key, None)
