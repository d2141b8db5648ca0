"""The router's pure core: which server a request goes to, and what a listing answers.

Pure: data in, data out (no HTTP, no Kubernetes). The edge (:mod:`gpupin.router.proxy`) reads
the request, asks :meth:`RouteTable.route` where it goes, forwards it and merges listings with
:func:`merge_listing`.

Shapes:

- a :class:`Backend` is one engine server (one gpupin pod): ``host:port``, the model names it
  serves as the LLMDeployment's spec writes them, and whether it is Ready;
- a :class:`RouteTable` is an engine and its backends; it is immutable, and a new one replaces it
  when placements change (the edge swaps the reference: requests in flight keep theirs).

Model names are matched as the engine matches them: Ollama's short form (``llama3.2`` is
``llama3.2:latest``, ``registry.ollama.ai/library/`` left out, case ignored as Ollama's
``model.Name`` ignores it; see
:func:`gpupin.engines.ollama_scripts.ollama_names`), vLLM's ``--served-model-name`` exactly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from gpupin.engines.ollama_scripts import ollama_names

Api = Literal["ollama", "openai"]

ROUTED = frozenset(
    {"/api/chat", "/api/generate", "/api/embed", "/api/embeddings", "/api/show",
     "/v1/chat/completions", "/v1/completions", "/v1/embeddings"}
)  # fmt: skip
"""POST paths routed by the ``model`` field of their JSON body (their API: :func:`api_of`)."""

LISTINGS: Mapping[str, str] = {"/api/tags": "models", "/api/ps": "models", "/v1/models": "data"}
"""GET paths answered with the union of every ready backend's answer: path → the list's key."""

ANY_BACKEND = frozenset({"/", "/api/version"})
"""GET paths any ready backend answers alike."""

ENGINE_PATHS: Mapping[str, frozenset[str]] = {
    "ollama": ROUTED | frozenset(LISTINGS) | ANY_BACKEND,
    "vllm": frozenset(p for p in ROUTED if p.startswith("/v1/")) | {"/v1/models", "/version"},
}
"""What the router serves per engine (vLLM has no Ollama API; its version is at ``/version``)."""


def api_of(path: str) -> Api:
    """Which API a path belongs to (its errors take that API's shape)."""
    return "openai" if path.startswith("/v1/") else "ollama"


class RouteError(Exception):
    """A request the router answers itself: ``status`` and the engine's own error body."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(json.dumps(body))
        self.status = status
        self.body = body


@dataclass(frozen=True)
class Backend:
    """One engine server: ``address`` is ``host:port``; ``models`` as the spec names them."""

    address: str
    models: tuple[str, ...]
    ready: bool = True
    pod: str = ""
    """The pod's name, for messages and metrics ("" outside a cluster)."""


@dataclass(frozen=True)
class RouteTable:
    """An engine's backends, indexed by the model names it serves (see the module docstring)."""

    engine: str
    backends: tuple[Backend, ...] = ()
    _by_model: dict[str, tuple[Backend, ...]] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.engine not in ENGINE_PATHS:
            raise ValueError(f"engine {self.engine!r} is not one of {', '.join(sorted(ENGINE_PATHS))}")
        index: dict[str, list[Backend]] = {}
        for backend in self.backends:
            for model in backend.models:
                index.setdefault(self.key(model), []).append(backend)
        self._by_model.update({model: tuple(found) for model, found in index.items()})

    def key(self, model: str) -> str:
        """The name a request's ``model`` is matched by."""
        return ollama_names([model])[0].casefold() if self.engine == "ollama" else model

    @property
    def models(self) -> list[str]:
        """Every model some backend serves, as the spec names them (first spelling seen), sorted."""
        seen: dict[str, str] = {}
        for backend in self.backends:
            for model in backend.models:
                seen.setdefault(self.key(model), model)
        return sorted(seen.values())

    def serves(self, path: str) -> bool:
        return path in ENGINE_PATHS[self.engine]

    def ready(self) -> list[Backend]:
        return [b for b in self.backends if b.ready]

    def route(
        self,
        path: str,
        body: bytes,
        in_flight: Mapping[str, int] | None = None,
        tried: Sequence[str] = (),
    ) -> tuple[str, Backend]:
        """``(model, backend)`` for a POST to a routed ``path`` with this JSON ``body``: among the
        ready backends serving the model and not in ``tried`` (addresses already failed for this
        request), the one with the fewest requests in flight (``in_flight``: address → count), the
        earliest in the table on a tie. Raises :class:`RouteError`: 400 without a model, 404 for a
        model no backend serves (the body lists those served), 503 when none of its backends is
        ready (or all were tried)."""
        api = api_of(path)
        model = model_of(body, path)
        if model is None:
            raise RouteError(400, error_body(self.engine, api, 'missing the "model" field (a string)', 400))
        candidates = self._by_model.get(self.key(model))
        if not candidates:
            served = ", ".join(self.models) or "none yet"
            message = f"model '{model}' not found: this endpoint serves {served}"
            raise RouteError(404, error_body(self.engine, api, message, 404))
        usable = [b for b in candidates if b.ready and b.address not in tried]
        if not usable:
            state = "was tried and failed" if any(b.ready for b in candidates) else "is ready yet"
            pods = ", ".join(b.pod or b.address for b in candidates)
            message = f"model '{model}' is served by {pods}, and none of them {state}"
            raise RouteError(503, error_body(self.engine, api, message, 503))
        counts = in_flight or {}
        return model, min(usable, key=lambda b: counts.get(b.address, 0))


def model_of(body: bytes, path: str) -> str | None:
    """The ``model`` a request's JSON body names (``/api/show`` also accepts Ollama's older
    ``name``); None when the body is not a JSON object or has no string there."""
    try:
        parsed = json.loads(body or b"null")
    except ValueError:
        return None
    if not isinstance(parsed, dict):
        return None
    model = parsed.get("model")
    if model is None and path == "/api/show":
        model = parsed.get("name")
    return model if isinstance(model, str) and model else None


def error_body(engine: str, api: Api, message: str, status: int) -> dict[str, Any]:
    """An error in the shape the engine itself answers: Ollama's native API ``{"error": TEXT}``;
    Ollama's OpenAI-compatible API ``{"error": {"message", "type", "param", "code"}}``
    (``openai/openai.go``, v0.17.4); vLLM's ``{"object": "error", "message", "type", "param",
    "code"}`` (``entrypoints/openai/protocol.py`` ``ErrorResponse``)."""
    if api == "ollama":
        return {"error": message}
    kind = {400: "BadRequestError", 404: "NotFoundError", 503: "ServiceUnavailableError"}.get(
        status, "api_error"
    )
    if engine == "vllm":
        return {"object": "error", "message": message, "type": kind, "param": None, "code": status}
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def merge_listing(path: str, table: RouteTable, answers: Sequence[Any]) -> dict[str, Any]:
    """The union of the backends' answers to a listing ``path``: each entry once (by its
    ``name``, or ``id`` for ``/v1/models``), only models the table routes (a backend may hold
    others in its cache that no request could reach), sorted by name. Answers that are not of the
    listing's shape are skipped."""
    key = LISTINGS[path]
    name_key = "id" if key == "data" else "name"
    routed = {table.key(m) for m in table.models}
    merged: dict[str, Any] = {}
    for answer in answers:
        entries = answer.get(key) if isinstance(answer, dict) else None
        for entry in entries if isinstance(entries, list) else []:
            name = entry.get(name_key) if isinstance(entry, dict) else None
            if isinstance(name, str) and table.key(name) in routed:
                merged.setdefault(table.key(name), entry)
    listing = [merged[k] for k in sorted(merged)]
    return {"object": "list", "data": listing} if key == "data" else {"models": listing}
