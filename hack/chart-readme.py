#!/usr/bin/env python3
"""Writes the values table of charts/gpupin/README.md from values.yaml and values.schema.json.

    hack/chart-readme.py           rewrite the table between the README's markers
    hack/chart-readme.py --check   exit 1 if the table is stale or a value is undocumented

One row per value: its dotted key, its default (JSON) and what it does — the comment lines just
above its key in values.yaml (and a comment after its value), else the schema's description. A
value is a key the schema describes with no sub-properties, or one written on one line (a flow
mapping such as an alert's {enabled, for, severity}); a block mapping the schema gives properties
is a section: its comment gets a row of its own, and its keys are rows. A value with neither a
comment nor a description is an error naming it (every value is documented).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[1] / "charts" / "gpupin"
START = "<!-- values-table:start (hack/chart-readme.py writes this table from values.yaml) -->"
END = "<!-- values-table:end -->"
KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.\-/]+):(?:[ ]+(?P<rest>.*))?$")

KeyPath = tuple[str, ...]


def inline_comment(rest: str) -> tuple[str, str]:
    """Split what follows a key's colon into (value, comment); a # inside quotes is the value's."""
    quote = ""
    for index, char in enumerate(rest):
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == "#" and (index == 0 or rest[index - 1] == " "):
            return rest[:index].strip(), rest[index + 1 :].strip()
    return rest.strip(), ""


def read_comments(text: str) -> tuple[dict[KeyPath, str], set[KeyPath]]:
    """Each key path of a values.yaml → its comment (the lines just above it, then the one after
    its value), and the set of paths written as block mappings (nothing after the colon)."""
    comments: dict[KeyPath, str] = {}
    blocks: set[KeyPath] = set()
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("-"):
            pending = []
            continue
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        match = KEY_LINE.match(line)
        if match is None:
            pending = []
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = (*(key for _, key in stack), match["key"])
        value, after = inline_comment(match["rest"] or "")
        comments[path] = " ".join([*pending, after]).strip()
        if not value:
            blocks.add(path)
        stack.append((indent, match["key"]))
        pending = []
    return comments, blocks


def resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """A schema node with its local $ref (#/definitions/NAME) followed."""
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/definitions/"):
        return dict(schema["definitions"][ref.removeprefix("#/definitions/")])
    return node


def cell(text: str) -> str:
    """``text`` safe in a Markdown table cell (no column break, no stray emphasis)."""
    return text.replace("|", "\\|").replace("*", "\\*")


def rows(values_text: str, schema: dict[str, Any]) -> list[str]:
    """The table's lines (header first). Raises ValueError naming each undocumented value."""
    comments, blocks = read_comments(values_text)
    values = yaml.safe_load(values_text)
    lines = ["| value | default | description |", "|---|---|---|"]
    missing: list[str] = []

    def walk(data: dict[str, Any], node: dict[str, Any], path: KeyPath) -> None:
        properties = node.get("properties", {})
        for key, value in data.items():
            here = (*path, key)
            child = resolve(schema, properties.get(key, {}))
            comment = comments.get(here, "")
            name = ".".join(here)
            if child.get("properties") and isinstance(value, dict) and here in blocks:
                if comment:
                    lines.append(f"| `{name}` | | {cell(comment)} |")
                walk(value, child, here)
                continue
            description = comment or str(child.get("description", ""))
            if not description:
                missing.append(name)
            default = json.dumps(value, separators=(", ", ": ")).replace("|", "\\|")
            lines.append(f"| `{name}` | `{default}` | {cell(description)} |")

    walk(values, schema, ())
    if missing:
        raise ValueError(
            "undocumented values (write a comment above each in charts/gpupin/values.yaml, or a "
            "description in values.schema.json): " + ", ".join(missing)
        )
    return lines


def render(readme: str, table: list[str]) -> str:
    """The README with the text between START and END replaced by ``table``."""
    if START not in readme or END not in readme:
        raise ValueError(f"charts/gpupin/README.md lacks the markers {START!r} and {END!r}")
    head, _, rest = readme.partition(START)
    _, _, tail = rest.partition(END)
    return head + START + "\n" + "\n".join(table) + "\n" + END + tail


def main(argv: list[str]) -> int:
    check = argv[1:] == ["--check"]
    if argv[1:] and not check:
        print("usage: hack/chart-readme.py [--check]", file=sys.stderr)
        return 2
    readme_path = CHART / "README.md"
    try:
        table = rows(
            (CHART / "values.yaml").read_text(), json.loads((CHART / "values.schema.json").read_text())
        )
        updated = render(readme_path.read_text(), table)
    except ValueError as exc:
        print(f"hack/chart-readme.py: {exc}", file=sys.stderr)
        return 1
    if check:
        if updated != readme_path.read_text():
            print(
                "charts/gpupin/README.md's values table is stale: run hack/chart-readme.py",
                file=sys.stderr,
            )
            return 1
        return 0
    readme_path.write_text(updated)
    print("wrote the values table of charts/gpupin/README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
