"""What ``gpupin plan`` prints: a table (the default), ``-o json`` (plans and manifests) or
``-o yaml`` (the manifests), each built in memory and written at once.

Why in memory: with ``PYTHONUNBUFFERED=1`` (the image sets it) every write to stdout is a system
call, and ``json.dump`` writes once per token (millions for a thousand nodes). Why not
``json.dumps(indent=2)``: with an indent, the standard library encodes in Python; :func:`json_text`
uses orjson, a well-kept C encoder, for the same layout (``make bench-cli`` measures both). Why not ``yaml.safe_dump_all``: PyYAML's Python emitter takes some 30 times
as long as libyaml's, and it writes a mapping or list met twice as an anchor and an alias
(``&id001`` / ``*id001``), which people then read in ``kubectl``; :func:`yaml_text`
(:mod:`gpupin.yamltext`) writes libyaml's text of the same data, each object spelled out where
it appears.
The table renders no manifests: it does not show them.
"""

from __future__ import annotations

import io
import json
import textwrap
from collections.abc import Sequence
from typing import Any, Literal, TextIO

import orjson

from gpupin.api.v1alpha1 import LLMDeployment
from gpupin.inventory import short_name
from gpupin.placement import Plan
from gpupin.quantity import format_gib
from gpupin.render import RenderConfig, render
from gpupin.yamltext import YAML_WIDTH, yaml_text

Output = Literal["table", "json", "yaml"]
__all__ = ["YAML_WIDTH", "json_text", "plan_json", "print_table", "write_plan", "yaml_text"]


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
