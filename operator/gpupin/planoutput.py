"""What ``gpupin plan`` prints: a table (the default), ``-o json`` (plans and manifests) or
``-o yaml`` (the manifests), each built in memory and written at once.

Why in memory: with ``PYTHONUNBUFFERED=1`` (the image sets it) every write to stdout is a system
call, and ``json.dump`` writes once per token (millions for a thousand nodes). Why not
``json.dumps(indent=2)``: with an indent, the standard library encodes in Python; :func:`json_text`
uses orjson, a well-kept C encoder, for the same layout (``make bench-cli`` measures both). Why not ``yaml.safe_dump_all``: PyYAML's Python emitter takes some 30 times
as long as libyaml's, and it writes a mapping or list met twice as an anchor and an alias
(``&id001`` / ``*id001``), which people then read in ``kubectl``; :func:`yaml_text` hands
libyaml's emitter the events of plain data directly, each object spelled out where it appears.
The table renders no manifests: it does not show them.
"""

from __future__ import annotations

import io
import json
import textwrap
from collections.abc import Sequence
from typing import Any, Literal, TextIO

import orjson
import yaml
from yaml.events import (
    DocumentEndEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
    StreamStartEvent,
)
from yaml.nodes import ScalarNode
from yaml.representer import SafeRepresenter
from yaml.resolver import Resolver

from gpupin.api.v1alpha1 import LLMDeployment
from gpupin.inventory import short_name
from gpupin.placement import Plan
from gpupin.quantity import format_gib
from gpupin.render import RenderConfig, render

Output = Literal["table", "json", "yaml"]
YAML_WIDTH = 1000
"""Line width of ``-o yaml`` (long values stay on one line where YAML allows)."""


def write_plan(
    results: Sequence[tuple[LLMDeployment, Plan]], output: Output, config: RenderConfig, out: TextIO
) -> None:
    """The plans in ``output``'s format, written to ``out`` in one call; manifests (rendered with
    ``config``) only for ``json`` and ``yaml``."""
    if output == "table":
        text = io.StringIO()
        print_table(results, text)
        out.write(text.getvalue())
        return
    manifests = [obj for deployment, result in results for obj in render(deployment, result, config)]
    if output == "json":
        out.write(json_text(plan_json(results, manifests)) + "\n")
        return
    refused = "".join(
        f"# {result.key}: Refused ({result.reason}): {result.message}\n"
        for _, result in results
        if not result.placed
    )
    out.write(refused + yaml_text(manifests))


def plan_json(
    results: Sequence[tuple[LLMDeployment, Plan]], manifests: list[dict[str, Any]]
) -> dict[str, Any]:
    """The ``-o json`` shape; scripts depend on it, so it changes only additively."""
    return {
        "deployments": [
            {
                "name": result.name,
                "namespace": result.namespace,
                "engine": result.engine,
                "outcome": result.outcome,
                "reason": result.reason,
                "message": result.message,
                "placements": [p.as_json() for p in result.placements],
                "models": [m.as_json() for m in result.models],
            }
            for _, result in results
        ],
        "manifests": manifests,
    }


def print_table(results: Sequence[tuple[LLMDeployment, Plan]], out: TextIO, width: int = 110) -> None:
    """One row per deployment, then its pods (node, GPUs, memory, models) or why it was refused."""
    rows = [("DEPLOYMENT", "ENGINE", "OUTCOME", "REASON", "PODS", "GPUS")]
    for _, result in results:
        rows.append(
            (
                result.key,
                result.engine,
                result.outcome,
                result.reason,
                str(len(result.placements)),
                str(sum(len(p.gpus) for p in result.placements)),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() + "\n")
    for _, result in results:
        status = result.outcome if result.reason == result.outcome else f"{result.outcome}, {result.reason}"
        out.write(f"\n{result.key} ({result.engine}): {status}\n")
        for p in result.placements:
            gpus = " + ".join(
                f"GPU {g.index} {short_name(g.name)} [{format_gib(g.vram_bytes or 0)}]" for g in p.gpus
            )
            out.write(f"  pod {p.pod} on {p.node}: {gpus} ← {', '.join(p.models)}\n")
        out.write(
            textwrap.fill(result.message, width=width, initial_indent="  ", subsequent_indent="    ") + "\n"
        )
        for m in result.models:
            read = f", read {m.read_at}" if m.read_at else ""
            line = f"{m.name}: {format_gib(m.vram_bytes)} from {m.origin}{read}"
            out.write(
                textwrap.fill(line, width=width, initial_indent="  sized ", subsequent_indent="    ") + "\n"
            )


def json_text(data: Any) -> str:
    """The ``-o json`` text: laid out as ``json.dumps(data, indent=2)`` lays it out, by orjson (a C
    encoder; with an indent the standard library encodes in Python, some 15 times slower on a large
    plan: ``make bench-cli``). Text is written as UTF-8, not ``\\u`` escapes, as ``kubectl`` writes
    it. What orjson does not take (an integer beyond 64 bits, a key that is not a string) goes to
    ``json.dumps``, which converts or refuses it as it always did; NaN and infinities, which JSON
    lacks, are written as null."""
    try:
        return orjson.dumps(data, option=orjson.OPT_INDENT_2).decode()
    except TypeError:  # orjson.JSONEncodeError is one
        return json.dumps(data, indent=2, ensure_ascii=False)


class _Unsupported(Exception):
    """Data the fast writers leave to the standard library's (or PyYAML's) own."""


_STR, _INT, _BOOL, _NULL, _FLOAT, _MAP, _SEQ = (
    f"tag:yaml.org,2002:{kind}" for kind in ("str", "int", "bool", "null", "float", "map", "seq")
)


def yaml_text(documents: Sequence[Any]) -> str:
    """``yaml.safe_dump_all(documents, sort_keys=False, width=YAML_WIDTH)`` as libyaml's emitter
    writes it, and without anchors: a list or mapping that appears twice is written out twice.
    Plain data (mappings with scalar keys, lists, str, int, float, bool, None) is handed to the
    emitter as events; anything else goes through PyYAML's representer, which writes or refuses it
    as ``safe_dump`` does."""
    stream = io.StringIO()
    if yaml.__with_libyaml__:  # pragma: no branch - the wheels ship libyaml
        try:
            _emit_all(documents, stream)
            return stream.getvalue()
        except (_Unsupported, TypeError):
            stream = io.StringIO()
    yaml.dump_all(documents, stream, Dumper=_NoAliasDumper, sort_keys=False, width=YAML_WIDTH)
    return stream.getvalue()


def _emit_all(documents: Sequence[Any], stream: io.StringIO) -> None:
    """The events PyYAML's safe representer and serializer would make, straight to libyaml."""
    from yaml._yaml import CEmitter

    emit = CEmitter(stream, width=YAML_WIDTH).emit
    resolve: Any = Resolver().resolve  # untyped in the stubs
    scalars: dict[tuple[type, Any], ScalarEvent] = {}  # (type, value) -> its event, made once
    map_start, map_end = MappingStartEvent(None, _MAP, True, flow_style=False), MappingEndEvent()
    seq_start, seq_end = SequenceStartEvent(None, _SEQ, True, flow_style=False), SequenceEndEvent()

    def scalar(value: Any) -> ScalarEvent:
        kind = type(value)
        if kind is str:
            tag, text = _STR, value
        elif kind is bool:
            tag, text = _BOOL, "true" if value else "false"
        elif kind is int:
            tag, text = _INT, str(value)
        elif value is None:
            tag, text = _NULL, "null"
        elif kind is float:  # not kept: 0.0 and -0.0 are one key
            text = SafeRepresenter().represent_float(value).value
            plain = resolve(ScalarNode, text, (True, False)) == _FLOAT
            return ScalarEvent(None, _FLOAT, (plain, False), text)
        else:
            raise _Unsupported
        implicit = (resolve(ScalarNode, text, (True, False)) == tag, tag == _STR)
        event = scalars[(kind, value)] = ScalarEvent(None, tag, implicit, text)
        return event

    def node(value: Any) -> None:
        kind = type(value)
        if kind is dict:
            emit(map_start)
            for key, item in value.items():
                emit(scalars.get((type(key), key)) or scalar(key))
                if type(item) is dict or type(item) is list:
                    node(item)
                else:
                    emit(scalars.get((type(item), item)) or scalar(item))
            emit(map_end)
        elif kind is list:
            emit(seq_start)
            for item in value:
                if type(item) is dict or type(item) is list:
                    node(item)
                else:
                    emit(scalars.get((type(item), item)) or scalar(item))
            emit(seq_end)
        else:
            emit(scalars.get((kind, value)) or scalar(value))

    emit(StreamStartEvent())
    for document in documents:
        emit(DocumentStartEvent(explicit=False))
        node(document)
        emit(DocumentEndEvent(explicit=False))
    emit(StreamEndEvent())


class _NoAliasDumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """PyYAML's safe dumper (libyaml's where there is one) that writes every object out in full."""

    def ignore_aliases(self, data: Any) -> bool:
        return True
