"""The engines gpupin can run, by name: one module each, behind :class:`~gpupin.engines.base.Engine`.

``ENGINES`` holds the built-in ones (vLLM, Ollama). An engine that is not registered is an error
(:class:`UnknownEngine`), never a fallback to another. Adding an engine is one module that
implements the interface, registered here; the README's "Code layout" lists what the product
adds around it (the API's ``engine`` enum and options, an image flag, the chart).
"""

from __future__ import annotations

from collections.abc import Iterable

from gpupin.api.v1alpha1 import LLMDeploymentSpec, ModelRef
from gpupin.engines.base import Engine
from gpupin.engines.ollama import Ollama
from gpupin.engines.vllm import VLLM
from gpupin.sizing import Estimate, ModelCatalog


class UnknownEngine(ValueError):
    """The spec names an engine the registry does not have."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        super().__init__(
            f"engine {name!r} is not one gpupin runs; the engines are {', '.join(sorted(known))}"
        )
        self.name = name


class EngineRegistry:
    """Engines by name."""

    def __init__(self, engines: Iterable[Engine] = (), catalog: ModelCatalog | None = None) -> None:
        self._engines: dict[str, Engine] = {}
        self._catalog = catalog
        for engine in engines:
            self.register(engine)

    @property
    def catalog(self) -> ModelCatalog:
        """The model data the engines size from (the packaged data unless one was given; read once)."""
        if self._catalog is None:
            self._catalog = ModelCatalog.packaged()
        return self._catalog

    def with_catalog(self, catalog: ModelCatalog) -> EngineRegistry:
        """The same engines sizing from another catalog (e.g. the bundled data with the metadata
        read for a cluster's models over it)."""
        return EngineRegistry(self._engines.values(), catalog)

    def owners_oldest_compute_capability(self) -> tuple[int, int] | None:
        """The oldest compute capability any GPU-owning engine runs on (None: none is registered,
        or one runs anywhere): older GPUs serve only shared-server engines."""
        owners = [e.oldest_compute_capability for e in self._engines.values() if e.owns_gpus]
        return None if not owners or None in owners else min(o for o in owners if o is not None)

    def register(self, engine: Engine) -> Engine:
        """Add an engine; a second engine of one name is a programming error."""
        if engine.name in self._engines:
            raise ValueError(f"engine {engine.name!r} is registered twice")
        self._engines[engine.name] = engine
        return engine

    def get(self, name: str) -> Engine:
        """The engine of that name; :class:`UnknownEngine` when there is none."""
        try:
            return self._engines[name]
        except KeyError:
            raise UnknownEngine(name, self._engines) from None

    def for_spec(self, spec: LLMDeploymentSpec) -> Engine:
        """The engine that serves a spec (``auto`` resolved)."""
        return self.get(spec.resolved_engine)

    def names(self) -> list[str]:
        return sorted(self._engines)

    def estimate(self, model: ModelRef, spec: LLMDeploymentSpec) -> Estimate:
        """What one model of the spec needs on the spec's engine (see :meth:`Engine.estimate`)."""
        return self.for_spec(spec).estimate(model, spec, self.catalog)


ENGINES = EngineRegistry([VLLM(), Ollama()])
"""The built-in engines."""

__all__ = ["ENGINES", "Engine", "EngineRegistry", "UnknownEngine"]
