"""Read deployment and inventory files, turning every problem into one clear line.

A user who mistypes a field should read which file, which document, which field and
what is allowed — never a traceback. Nothing here writes anything.
"""

from __future__ import annotations

import sys
import types
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from gpupin import constants, safeyaml
from gpupin.api.v1alpha1 import PATTERN_HELP, LLMDeployment
from gpupin.inventory import Inventory, NodeReadError, inventory_from_nodes

STDIN = "-"
"""The file name that means standard input (``gpupin plan -f -``)."""


class InputError(Exception):
    """Bad input: the message names the file, the document, the field and what is allowed."""


def shown(path: str | Path) -> str:
    """A file's name as messages give it: ``<stdin>`` for :data:`STDIN`."""
    return "<stdin>" if str(path) == STDIN else str(path)


def read_text(path: str | Path) -> str:
    """A file's text (``-``: standard input's): UTF-8 (or UTF-16 with a byte-order mark), at most
    :data:`~gpupin.safeyaml.MAX_BYTES`; :class:`InputError` naming the file otherwise."""
    if str(path) == STDIN:
        return _decoded(shown(path), sys.stdin.buffer.read(safeyaml.MAX_BYTES + 1), None)
    path = Path(path)
    try:
        with path.open("rb") as file:
            data = file.read(safeyaml.MAX_BYTES + 1)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory; name a YAML file") from None
    except PermissionError:
        raise InputError(f"{path}: cannot read it (permission denied)") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    return _decoded(str(path), data, path)


def _decoded(name: str, data: bytes, path: Path | None) -> str:
    """``data`` read from the file called ``name`` (``path``; None: standard input) as text."""
    if len(data) > safeyaml.MAX_BYTES:
        limit = safeyaml.MAX_BYTES // 2**20
        try:
            size = path.stat().st_size if path else 0  # a pipe or a device has none: "more than" the limit
        except OSError:  # pragma: no cover - it was just read
            size = 0
        figure = f"{size / 2**20:.1f} MiB" if size > safeyaml.MAX_BYTES else f"more than {limit} MiB"
        raise InputError(f"{name}: too large to read ({figure}); a file may hold at most {limit} MiB")
    try:
        return safeyaml.decode(data)
    except safeyaml.YAMLInputError as exc:
        raise InputError(f"{name}: {exc}") from None


def read_documents(path: str | Path) -> list[tuple[int, Any]]:
    """Every YAML document in a file as (1-based index, data), empty ones left out. Read within
    :mod:`gpupin.safeyaml`'s limits (size, nesting, aliases); :class:`InputError` naming the file
    and the line otherwise."""
    try:
        documents = safeyaml.load_all(read_text(path))
    except safeyaml.YAMLInputError as exc:
        raise InputError(f"{shown(path)}: {exc}") from None
    return [(i, doc) for i, doc in enumerate(documents, start=1) if doc is not None]


def _items(path: str, documents: list[tuple[int, Any]]) -> Iterator[tuple[str, Any]]:
    for index, doc in documents:
        if isinstance(doc, dict) and str(doc.get("kind", "")).endswith("List") and "items" in doc:
            items = doc.get("items") or []
            if not isinstance(items, list):
                raise InputError(
                    f"{path}: document {index} ({doc.get('kind')}): items: expected a list, got {_kind_of(items)}"
                )
            for j, item in enumerate(items, start=1):
                yield f"document {index}, item {j}", item
        else:
            yield f"document {index}", doc


def load_deployments(paths: Sequence[str | Path]) -> list[LLMDeployment]:
    """Every LLMDeployment in the files (``-``: standard input), in order. Other kinds (a Namespace, a Secret) are skipped;
    a file with no LLMDeployment at all is an error."""
    result: list[LLMDeployment] = []
    for raw_path in paths:
        path = shown(raw_path)
        found = 0
        for where, doc in _items(path, read_documents(raw_path)):
            if not isinstance(doc, dict):
                raise InputError(
                    f"{path}: {where}: expected a Kubernetes object (a mapping), got {_kind_of(doc)}"
                )
            api_version, kind = doc.get("apiVersion"), doc.get("kind")
            if kind != constants.KIND and not str(api_version or "").startswith(constants.GROUP + "/"):
                continue
            found += 1
            name = (doc.get("metadata") or {}).get("name") if isinstance(doc.get("metadata"), dict) else None
            label = f"{kind or 'object'} {name}" if name else (kind or "object")
            try:
                result.append(LLMDeployment.model_validate(doc))
            except ValidationError as exc:
                raise InputError(
                    f"{path}: {where} ({label}): {describe_errors(exc, LLMDeployment)}"
                ) from None
        if not found:
            raise InputError(
                f"{path}: no LLMDeployment in it (apiVersion: {constants.API_VERSION}, kind: {constants.KIND})"
            )
    return result


def load_inventory(path: str | Path) -> tuple[Inventory, list[str]]:
    """An inventory file (``-``: standard input), or the output of ``kubectl get nodes -o yaml``; plus one line per node
    that had to be skipped (and why)."""
    documents = read_documents(path)
    path = shown(path)
    if not documents:
        raise InputError(
            f"{path}: empty; expected an inventory (nodes: [...]) or `kubectl get nodes -o yaml` output"
        )
    if len(documents) == 1 and isinstance(documents[0][1], dict) and "nodes" in documents[0][1]:
        try:
            return Inventory.model_validate(documents[0][1]), []
        except ValidationError as exc:
            raise InputError(f"{path}: {describe_errors(exc, Inventory)}") from None
    nodes = []
    for where, doc in _items(path, documents):
        if not isinstance(doc, dict) or doc.get("kind") != "Node":
            raise InputError(
                f"{path}: {where}: expected an inventory (a mapping with nodes: [...]) or Node objects "
                f"(kubectl get nodes -o yaml), got {doc.get('kind') if isinstance(doc, dict) else _kind_of(doc)}"
            )
        _check_node(path, where, doc)
        nodes.append(doc)
    try:
        return inventory_from_nodes(nodes)
    except (ValueError, NodeReadError) as exc:
        raise InputError(f"{path}: {exc}") from None


def _check_node(path: str, where: str, node: dict[str, Any]) -> None:
    """The parts of a Node object gpupin reads have the shapes Kubernetes gives them: metadata,
    status and metadata.labels/annotations are mappings, labels and annotations map to strings."""
    metadata = node.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    label = f"{where} (Node {name})" if isinstance(name, str) and name else f"{where} (Node)"
    for field, value in (("metadata", metadata), ("status", node.get("status"))):
        if value is not None and not isinstance(value, dict):
            raise InputError(f"{path}: {label}: {field}: expected a mapping, got {_kind_of(value)}")
    if not isinstance(name, str) or not name:
        raise InputError(f"{path}: {label}: metadata.name: required (a string)")
    for field in ("labels", "annotations"):
        value = (metadata or {}).get(field)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise InputError(f"{path}: {label}: metadata.{field}: expected a mapping, got {_kind_of(value)}")
        for key, item in value.items():
            if not isinstance(item, str):
                raise InputError(
                    f"{path}: {label}: metadata.{field}.{key}: expected a string (quote it), got {_shown(item)}"
                )


def _shown(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters: an echo of the input, not all of it."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _kind_of(value: Any) -> str:
    kinds = {
        list: "a list",
        dict: "a mapping",
        str: "a string",
        int: "a number",
        float: "a number",
        bool: "a boolean",
    }
    return kinds.get(type(value), type(value).__name__)


def describe_errors(exc: ValidationError, root: type[BaseModel]) -> str:
    """Pydantic's errors as ``spec.models[0].vram: 'lots' is not a Kubernetes quantity …``."""
    lines = []
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        path = _path(loc)
        kind = error["type"]
        if kind == "extra_forbidden":
            allowed = _allowed_fields(root, loc[:-1])
            message = "unknown field" + (f"; allowed here: {', '.join(allowed)}" if allowed else "")
        elif kind == "missing":
            message = "required field is missing"
        elif kind == "string_pattern_mismatch" and error.get("ctx", {}).get("pattern") in PATTERN_HELP:
            message = f"{_shown(error['input'])} is not {PATTERN_HELP[error['ctx']['pattern']]}"
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
            if (
                kind not in ("value_error", "assertion_error")
                and "input" in error
                and not isinstance(error["input"], (dict, list))
            ):
                message += f" (got {_shown(error['input'])})"
        lines.append(f"{path}: {message}" if path else message)
    return "; ".join(lines)


def _path(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif "[" in part and "(" in part:  # pydantic's validator frames, not fields
            continue
        else:
            text += ("." if text else "") + str(part)
    return text


def _allowed_fields(root: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The field names allowed at ``loc`` (by alias), walking the models."""
    model: Any = root
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
        field = next(
            (f for name, f in model.model_fields.items() if (f.alias or name) == part or name == part), None
        )
        if field is None:
            return []
        model = _inner_model(field.annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return [f.alias or name for name, f in model.model_fields.items()]
    return []


def _inner_model(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list):
        for arg in typing.get_args(annotation):
            inner = _inner_model(arg)
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
        return None
    return annotation
