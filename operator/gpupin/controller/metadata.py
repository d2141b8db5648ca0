"""The operator's model metadata: the bundled data, the cluster's model data over it, and what
was read from the models' registries, read in the background so no reconcile waits on the network.

A deployment whose models are all known (or carry ``models[].vram``) is planned at once. One with
a model not yet read waits for the read (seconds; the reconciler is told when it ends) — planning
it from its name first and re-planning when the metadata arrives could move or delete pods. A
model the registry says does not exist is refused as unknown; one whose registry cannot be
reached is sized from its name meanwhile, retried after ``failure_ttl``, and the plan says so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from gpupin.api.v1alpha1 import LLMDeployment
from gpupin.engines import ENGINES, EngineRegistry
from gpupin.modelfacts import ModelFacts
from gpupin.modelsource import ModelNotFound, ModelSource, SourceError, SourceUnavailable, named_as
from gpupin.sizing import ModelCatalog, parse_model_data

log = structlog.get_logger("gpupin.operator")

Key = tuple[str, str]
"""(naming scheme, model name lower case)."""


def cluster_catalog(paths: tuple[str, ...], base: ModelCatalog | None = None) -> ModelCatalog:
    """The bundled data with each model-data file over it (read once, at start-up). Raises
    :class:`gpupin.sizing.ModelDataError` (file, entry, field) or OSError."""
    catalog = base or ENGINES.catalog
    entries: list[ModelFacts] = []
    for path in paths:
        for file in sorted(Path(path).glob("*.yaml")) if Path(path).is_dir() else [Path(path)]:
            entries += parse_model_data(file.read_text(encoding="utf-8"), str(file))
    return catalog.overlay(entries) if entries else catalog


class ModelMetadata:
    """Reads unknown models' metadata with ``source`` (None: offline) and hands out the engine
    registry to plan with. ``on_read`` is called with nothing once a read ends (the reconciler
    re-queues the deployments that waited)."""

    def __init__(
        self,
        catalog: ModelCatalog,
        source: ModelSource | None,
        on_read: Callable[[], None],
        failure_ttl: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.catalog = catalog
        self.source = source
        self.on_read = on_read
        self.failure_ttl = failure_ttl
        self.clock = clock
        self.found: dict[Key, ModelFacts] = {}
        self.unknown: dict[str, str] = {}
        self.unavailable: dict[Key, tuple[float, str]] = {}
        self.reading: set[Key] = set()
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
        for model in spec.models:
            key = (scheme, model.name.lower())
            if model.vram is not None or self.catalog.lookup(model.name, scheme) is not None:
                continue
            if key in self.found or model.name.lower() in self.unknown:
                continue
            if self.source is None:
                continue
            failed = self.unavailable.get(key)
            if key not in self.reading and (failed is None or self.clock() - failed[0] >= self.failure_ttl):
                self._start(key, model.name, scheme)
            waiting = waiting or (key in self.reading and failed is None)
        return None if waiting else self.registry

    @property
    def registry(self) -> EngineRegistry:
        if self._registry is None:
            catalog = self.catalog.overlay(self.found.values(), self.unknown)
            self._registry = ENGINES.with_catalog(catalog)
        return self._registry

    def notes(self) -> list[str]:
        return [
            f"{name}: metadata not read ({why}); sized from its name"
            for (_, name), (_, why) in self.unavailable.items()
        ]

    def _start(self, key: Key, name: str, scheme: str) -> None:
        assert self.source is not None
        self.reading.add(key)
        source = self.source
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(source.facts, name, scheme))
        task.add_done_callback(lambda done: self._finish(key, name, scheme, done))

    def _finish(self, key: Key, name: str, scheme: str, task: asyncio.Task[ModelFacts]) -> None:
        self.reading.discard(key)
        try:
            facts = task.result()
        except ModelNotFound as err:
            self.unknown[name.lower()] = str(err)
            log.info("Model unknown to its registry", model=name, why=str(err))
        except (SourceUnavailable, SourceError) as err:
            self.unavailable[key] = (self.clock(), str(err))
            log.warning("Model metadata not read", model=name, why=str(err))
        except Exception as err:  # a bug in a parser must not stop planning: size from the name
            self.unavailable[key] = (self.clock(), f"{type(err).__name__}: {err}")
            log.exception("Model metadata read failed", model=name)
        else:
            self.found[key] = named_as(facts, name, scheme)
            self.unavailable.pop(key, None)
            log.info("Model metadata read", model=name, origin=facts.origin)
        self._registry = None
        self.on_read()
