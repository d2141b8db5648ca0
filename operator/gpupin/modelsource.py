"""Read a model's metadata from where it is published, without downloading its weights.

- Hugging Face repo (``org/name``): ``config.json`` and the safetensors header(s), through
  ``huggingface_hub`` (HTTP range requests; ``HF_ENDPOINT`` for a mirror, ``HF_TOKEN`` for gated
  repos). A repo of GGUF files is recognised and sent to Ollama's side.
- Ollama model (``qwen3:30b-a3b``, ``user/model:tag``, ``hf.co/org/repo:Q4_K_M``): the registry's
  manifest (``/v2/{namespace}/{model}/manifests/{tag}``: the GGUF blob, a vision projector blob and
  their sizes) and the first megabytes of the GGUF blob (a ``Range`` request), parsed by
  :mod:`gpupin.modelfacts.gguf_header`. ``hf.co/…`` names are served by Hugging Face's own
  Ollama-compatible registry, so they take the same path with host ``hf.co``.

:class:`ModelSource` caches what it read (and, for a while, what failed) in memory. Errors:
:class:`ModelNotFound` when the source answers that the name does not exist (a misspelt name is
refused as unknown, never sized from the number in it); :class:`SourceUnavailable` when it could
not be asked (network, 5xx, timeouts, a gated repo without a token) — callers then size from the
bundled data or the name and say so.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from gpupin import reasons
from gpupin.api.v1alpha1 import LLMDeploymentSpec
from gpupin.engines import EngineRegistry
from gpupin.modelfacts import (
    ConfigError,
    GGUFHeaderError,
    ModelFacts,
    facts_from_gguf_header,
    facts_from_hf,
)

OLLAMA_REGISTRY = "https://registry.ollama.ai"
HF_ENDPOINT = "https://huggingface.co"
MODEL_MEDIA = "application/vnd.ollama.image.model"
PROJECTOR_MEDIA = "application/vnd.ollama.image.projector"
HEADER_FIRST_READ = 8 * 1024 * 1024
HEADER_MAX_READ = 64 * 1024 * 1024
"""A GGUF header holds the tokenizer (up to ~10 MB for 256k-token vocabularies): read 8 MiB, then
more while it is cut, up to 64 MiB."""


class SourceError(Exception):
    """Metadata could not be read."""


class ModelNotFound(SourceError):
    """The source says the model (or the tag) does not exist."""


class SourceUnavailable(SourceError):
    """The source could not be asked or did not answer usably; try again later."""


class ModelUnsupported(SourceError):
    """The model exists but is not one the engine can serve (a repo of GGUF files asked of vLLM),
    or its metadata describes something gpupin cannot size (no layers or heads)."""


@dataclass(frozen=True)
class OllamaName:
    """``[host/][namespace/]model[:tag]``; ``hf.co/org/repo:Q4_K_M`` is host ``hf.co``."""

    host: str
    namespace: str
    model: str
    tag: str

    @classmethod
    def parse(cls, name: str) -> OllamaName:
        path, tag = name, "latest"
        head, _, last = name.rpartition("/")
        if ":" in last:
            last, _, tag = last.partition(":")
            path = f"{head}/{last}" if head else last
        parts = path.split("/")
        host = parts.pop(0).lower() if len(parts) > 1 and "." in parts[0] else ""
        namespace = "/".join(parts[:-1]) or "library"
        return cls(host, namespace, parts[-1], tag or "latest")


class ModelSource:
    """Reads and caches model facts. ``hf_endpoint`` and ``ollama_registry`` default to the public
    services (``HF_ENDPOINT`` and ``GPUPIN_OLLAMA_REGISTRY`` override them); ``hf_token`` defaults
    to ``HF_TOKEN``. ``ttl`` seconds a success is kept, ``failure_ttl`` a failure (so a reconcile
    loop does not hammer a registry that is down). ``clock`` returns seconds (tests pass one)."""

    def __init__(
        self,
        *,
        hf_endpoint: str | None = None,
        hf_token: str | None = None,
        ollama_registry: str | None = None,
        hf_ollama_registry: str | None = None,
        timeout: float = 10.0,
        ttl: float = 24 * 3600,
        failure_ttl: float = 300,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hf_endpoint = (hf_endpoint or os.environ.get("HF_ENDPOINT") or HF_ENDPOINT).rstrip("/")
        self.hf_token = hf_token or os.environ.get("HF_TOKEN") or None
        self.ollama_registry = (
            ollama_registry or os.environ.get("GPUPIN_OLLAMA_REGISTRY") or OLLAMA_REGISTRY
        ).rstrip("/")
        self.hf_ollama_registry = (hf_ollama_registry or self.hf_endpoint).rstrip("/")
        self.timeout = timeout
        self.ttl = ttl
        self.failure_ttl = failure_ttl
        self.clock = clock
        self._cache: dict[tuple[str, str], tuple[float, ModelFacts | tuple[type[SourceError], str]]] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ the one entry point
    def facts(self, name: str, scheme: str) -> ModelFacts:
        """The facts of ``name`` (an Ollama name when ``scheme`` is "ollama", else a Hugging Face
        repo id; ``hf.co/…`` names are GGUF repos either way). Raises :class:`ModelNotFound`,
        :class:`ModelUnsupported` or :class:`SourceUnavailable`; a name no registry could hold
        (``a/b/c/d``) is :class:`ModelNotFound`."""
        key = (scheme, name.lower())
        now = self.clock()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            at, value = hit
            fresh = self.ttl if isinstance(value, ModelFacts) else self.failure_ttl
            if now - at < fresh:
                if isinstance(value, tuple):  # a failure: raised anew (no traceback kept alive)
                    raise value[0](value[1])
                return value
        try:
            facts = self._read(name, scheme)
        except SourceError as err:
            failure: tuple[type[SourceError], str] = (type(err), str(err))
        except (ValueError, TypeError, UnicodeError) as err:  # names no URL can hold, odd answers
            failure = (ModelNotFound, f"{name} is not a name its registry can hold: {_short(err)}")
        else:
            with self._lock:
                self._cache[key] = (now, facts)
            return facts
        with self._lock:
            self._cache[key] = (now, failure)
        raise failure[0](failure[1])

    def _read(self, name: str, scheme: str) -> ModelFacts:
        if scheme == "ollama" or name.lower().startswith("hf.co/"):
            return self.ollama(name)
        return self.huggingface(name)

    # ------------------------------------------------------------------ Hugging Face
    def huggingface(self, repo: str, revision: str = "main") -> ModelFacts:
        """config.json + safetensors parameter counts of ``repo``."""
        from huggingface_hub import HfApi, hf_hub_url
        from huggingface_hub.errors import (
            EntryNotFoundError,
            GatedRepoError,
            NotASafetensorsRepoError,
            RepositoryNotFoundError,
        )
        from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

        api = HfApi(endpoint=self.hf_endpoint, token=self.hf_token or False)
        where = f"{repo} on {self.hf_endpoint}"
        url = hf_hub_url(repo, "config.json", revision=revision, endpoint=self.hf_endpoint)
        try:  # read, not downloaded into a cache folder: the operator's file system is read-only
            response = get_session().get(
                url,
                headers=build_hf_headers(token=self.hf_token or False),
                timeout=self.timeout,
                follow_redirects=True,
            )
            hf_raise_for_status(response)
            config = response.json()
        except GatedRepoError as err:
            raise SourceUnavailable(
                f"{where} is gated: give gpupin a Hugging Face token (HF_TOKEN) of an account that accepted its licence"
            ) from err
        except RepositoryNotFoundError as err:
            raise ModelNotFound(f"{where} does not exist (or is private)") from err
        except EntryNotFoundError as err:
            if self._has_gguf(api, repo):
                raise ModelUnsupported(
                    f"{where} holds GGUF files, which vLLM does not serve: use engine: ollama with "
                    f"hf.co/{repo}:<quantization>"
                ) from err
            raise ModelNotFound(f"{where} has no config.json, so it is not a model vLLM can load") from err
        except Exception as err:  # network and protocol errors of any kind: not an answer about the model
            raise SourceUnavailable(f"could not read config.json of {where}: {_short(err)}") from err
        if not isinstance(config, dict):
            raise ModelUnsupported(f"config.json of {where} is not a JSON object")
        counts: dict[str, int] | None
        try:
            found = api.get_safetensors_metadata(repo, revision=revision, timeout=self.timeout)
            counts = {str(dtype): int(count) for dtype, count in found.parameter_count.items()}
        except NotASafetensorsRepoError:
            counts = None
        except Exception as err:  # as above
            raise SourceUnavailable(
                f"could not read the safetensors headers of {where}: {_short(err)}"
            ) from err
        origin = f"config.json and safetensors headers of {where}" if counts else f"config.json of {where}"
        try:
            return facts_from_hf(repo, config, counts, origin=origin, read_at=_now())
        except ConfigError as err:
            raise ModelUnsupported(f"{err}: gpupin cannot size it from its metadata") from err

    def _has_gguf(self, api: Any, repo: str) -> bool:
        try:
            return any(str(f).lower().endswith(".gguf") for f in api.list_repo_files(repo))
        except Exception:  # only a hint for the message
            return False

    # ------------------------------------------------------------------ Ollama registries
    def ollama(self, name: str) -> ModelFacts:
        """Manifest and GGUF header of an Ollama model name."""
        ref = OllamaName.parse(name)
        hugging_face = ref.host in ("hf.co", "huggingface.co")
        if hugging_face:
            base = self.hf_ollama_registry
        elif ref.host and ref.host != "registry.ollama.ai":
            base = f"https://{ref.host}"
        else:
            base = self.ollama_registry
        where = f"{ref.namespace}/{ref.model}:{ref.tag} on {base}"
        manifest = self._json(
            f"{base}/v2/{ref.namespace}/{ref.model}/manifests/{ref.tag}",
            where,
            {"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        )
        layers = manifest.get("layers") or []
        model = next((layer for layer in layers if layer.get("mediaType") == MODEL_MEDIA), None)
        if model is None:
            raise ModelNotFound(f"{where} has no model layer ({MODEL_MEDIA}) in its manifest")
        projector = sum(
            int(layer.get("size", 0)) for layer in layers if layer.get("mediaType") == PROJECTOR_MEDIA
        )
        blob_url = f"{base}/v2/{ref.namespace}/{ref.model}/blobs/{model['digest']}"
        size = int(model.get("size", 0))
        read = HEADER_FIRST_READ
        while True:
            header = self._range(blob_url, read, where)
            try:
                facts = facts_from_gguf_header(
                    name,
                    header,
                    size,
                    projector_bytes=projector,
                    origin=f"manifest and GGUF header of {where}",
                    read_at=_now(),
                    ollama_names=(name,),
                    hf_names=(f"{ref.namespace}/{ref.model}",) if hugging_face else (),
                )
                return facts
            except GGUFHeaderError as err:
                if not err.truncated or read >= HEADER_MAX_READ or len(header) < read:
                    raise ModelUnsupported(f"{where}: {err}") from err
                read *= 2

    def _open(self, url: str, where: str, headers: dict[str, str]) -> Any:
        request = urllib.request.Request(url, headers={"User-Agent": "gpupin", **headers})
        if self.hf_token and url.startswith(self.hf_ollama_registry):
            request.add_header("Authorization", f"Bearer {self.hf_token}")
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as err:
            if err.code == 404:
                raise ModelNotFound(f"{where} does not exist (the registry answered 404)") from err
            if err.code in (401, 403):
                raise SourceUnavailable(f"{where}: the registry refused access ({err.code})") from err
            raise SourceUnavailable(f"{where}: the registry answered {err.code}") from err
        except (urllib.error.URLError, OSError) as err:
            raise SourceUnavailable(f"{where}: {_short(err)}") from err

    def _json(self, url: str, where: str, headers: dict[str, str]) -> dict[str, Any]:
        with self._open(url, where, headers) as response:
            try:
                body = json.loads(response.read())
            except ValueError as err:
                raise SourceUnavailable(f"{where}: the manifest is not JSON") from err
        if not isinstance(body, dict):
            raise SourceUnavailable(f"{where}: the manifest is not a JSON object")
        return body

    def _range(self, url: str, length: int, where: str) -> bytes:
        with self._open(url, where, {"Range": f"bytes=0-{length - 1}"}) as response:
            data: bytes = response.read(length)
            return data


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text[:200]


def resolve_models(
    specs: Iterable[LLMDeploymentSpec], registry: EngineRegistry, source: ModelSource | None
) -> tuple[EngineRegistry, list[str]]:
    """The registry to plan ``specs`` with: its catalog with the metadata ``source`` read for
    every model the catalog does not know (and no ``models[].vram`` overrides), and the names the
    source says do not exist. Also returns notes for models whose source could not be asked
    (they are then sized from their name, and the notes say why). ``source`` None: offline."""
    catalog = registry.catalog
    found: list[ModelFacts] = []
    refused: dict[str, tuple[str, str]] = {}
    unread: dict[str, str] = {}
    notes: list[str] = []
    seen: set[str] = set()
    for spec in specs:
        try:
            scheme = registry.for_spec(spec).naming_scheme
        except ValueError:  # an unknown engine: the planner refuses it
            continue
        for model in spec.models:
            key = model.name.lower()
            if model.vram is not None or key in seen or catalog.lookup(model.name, scheme) is not None:
                continue
            seen.add(key)
            if source is None:
                continue
            try:
                facts = source.facts(model.name, scheme)
            except ModelNotFound as err:
                refused[key] = (reasons.UNKNOWN_MODEL, f"{model.name} is unknown: {err}")
            except ModelUnsupported as err:
                refused[key] = (reasons.UNSUPPORTED_MODEL, f"{model.name} cannot be served as asked: {err}")
            except SourceUnavailable as err:
                unread[key] = str(err)
                notes.append(f"{model.name}: metadata not read ({err}); sized from its name")
            else:
                found.append(named_as(facts, model.name, scheme))
    if not found and not refused and not unread:
        return registry, notes
    return registry.with_catalog(catalog.overlay(found, refused, unread)), notes


def named_as(facts: ModelFacts, name: str, scheme: str) -> ModelFacts:
    """Facts findable by the name they were asked for (under the engine's naming scheme)."""
    if scheme == "ollama" and name not in facts.ollama_names:
        return replace(facts, ollama_names=(*facts.ollama_names, name))
    if scheme != "ollama" and name not in facts.hf_names:
        return replace(facts, hf_names=(*facts.hf_names, name))
    return facts
