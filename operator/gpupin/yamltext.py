"""``gpupin plan -o yaml``'s text: ``yaml.safe_dump_all(documents, sort_keys=False, width=1000)``
as libyaml writes it, byte for byte, without anchors (an object met twice is written out twice).

Three ways, fastest first, each falling back to the next for what it does not handle:

1. :class:`_BlockWriter` lays out the block mappings and lists in Python, as libyaml lays them
   out (keys at the mapping's indent, a list under a key at the key's indent, ``- `` then the
   item, ``{}`` and ``[]`` for empty ones, ``---`` between documents), and writes each scalar
   from a memo: a scalar's text does not depend on where it stands as long as its line stays
   within the width (libyaml breaks a line only past it) and it is one line. Common text (letters,
   digits, ``_./=+@~-``, single spaces, colons not before a space) is plain unless PyYAML's
   resolver reads it as another type (then single-quoted, as ``'123'``); everything else is written
   once by libyaml itself, in a one-key document, and its line taken. A scalar that spans lines
   (a script, double-quoted with its breaks as libyaml folds them) or would pass the width is
   written by libyaml in a document of the same nesting (each enclosing mapping or list with one
   entry, the same key): what comes before it is then the same to libyaml, and so is its text.
2. :func:`_emit_all` hands libyaml's emitter the events of the data (PyYAML's representer and
   serializer, which are Python, are skipped); for documents that are not a non-empty mapping or
   list, keys that are not plain scalars, and any type the writer does not know.
3. PyYAML's dumper (libyaml's emitter, PyYAML's representer): what the events do not handle
   (a set, a date), written or refused as ``safe_dump`` does.

``tests/test_yaml_text.py`` holds way 1 to the dump's text on the examples' manifests, odd strings and
random data. ``make bench-cli`` measures it.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import Any

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

YAML_WIDTH = 1000
"""Line width of ``-o yaml`` (long values stay on one line where YAML allows)."""

_PLAIN = re.compile(
    r"(?![-.]{3})(?!-(?: |\Z))[A-Za-z0-9_/.\-](?:[A-Za-z0-9_./=+@~\-]|:(?! |\Z)| (?! |\Z))*\Z"
)
"""Text libyaml writes plain in block context (when the resolver reads it as a string): no
indicator first, no ``: `` or `` #``, no leading, trailing or double space, no break, ASCII only.
Other text is left to libyaml (its rules are longer; this only has to be a safe subset)."""
_KEY_LENGTH = 100
"""Keys up to this long are written by the fast rule (libyaml writes a key over 128 as ``? key``)."""


class _Unsupported(Exception):
    """Data the fast writers leave to the next way (see the module's docstring)."""


def yaml_text(documents: Sequence[Any]) -> str:
    """``yaml.safe_dump_all(documents, sort_keys=False, width=YAML_WIDTH)`` as libyaml's emitter
    writes it, and without anchors. Raises what ``safe_dump`` raises for data it cannot write."""
    if yaml.__with_libyaml__:  # pragma: no branch - the wheels ship libyaml
        try:
            return _BlockWriter().text(documents)
        except (_Unsupported, TypeError):
            pass
        stream = io.StringIO()
        try:
            _emit_all(documents, stream)
            return stream.getvalue()
        except (_Unsupported, TypeError):
            pass
    stream = io.StringIO()
    yaml.dump_all(documents, stream, Dumper=_NoAliasDumper, sort_keys=False, width=YAML_WIDTH)
    return stream.getvalue()


class _BlockWriter:
    """Way 1 of the module's docstring. One per text: its memos hold the text of each scalar."""

    def __init__(self) -> None:
        self.out: list[str] = []
        self.keys: dict[str, str] = {}  # key -> "key:" as libyaml writes it
        self.values: dict[str, str] = {}  # str value -> " value\n"; "" when it spans lines
        self.others: dict[tuple[type, str], str] = {}  # (type, repr) of a non-str scalar -> its text
        self.nested: dict[tuple[Any, ...], str] = {}  # a scalar in its nesting -> its text
        self.stack: list[bool] = []  # the enclosing collections, outermost first: True for a mapping
        self.resolve: Any = Resolver().resolve  # untyped in the stubs

    def text(self, documents: Sequence[Any]) -> str:
        out = self.out
        for i, document in enumerate(documents):
            if i:
                out.append("---\n")
            kind = type(document)
            if kind is dict and document:
                self.mapping(document, 0, False)
            elif kind is list and document:
                self.sequence(document, 0, False)
            else:  # a scalar or an empty collection shares the --- line, or ends with ...
                raise _Unsupported
        return "".join(out)

    def mapping(self, data: dict[Any, Any], indent: int, inline: bool) -> None:
        """Keys at ``indent``; ``inline``: the first one goes on the current line (after ``- ``)."""
        out, keys, values, width = self.out, self.keys, self.values, YAML_WIDTH + 1
        pad = " " * indent
        self.stack.append(True)
        for key, value in data.items():
            if inline:
                inline = False
            else:
                out.append(pad)
            written = keys.get(key) if type(key) is str else None
            if written is None:
                written = self.key(key)
            out.append(written)
            kind = type(value)
            if kind is dict:
                if value:
                    out.append("\n")
                    self.mapping(value, indent + 2, False)
                else:
                    out.append(" {}\n")
            elif kind is list:
                if value:
                    out.append("\n")
                    self.sequence(value, indent, False)
                else:
                    out.append(" []\n")
            else:
                text = values.get(value) if kind is str else None
                if text is None:
                    text = self.scalar(value)
                if text and indent + len(written) + len(text) <= width:
                    out.append(text)
                else:
                    out.append(self.in_place(value, key))
        self.stack.pop()

    def sequence(self, data: list[Any], indent: int, inline: bool) -> None:
        """Items' ``-`` at ``indent``; ``inline``: the first one on the current line."""
        out, values, width = self.out, self.values, YAML_WIDTH + 1
        dash = " " * indent + "-"
        self.stack.append(False)
        for item in data:
            if inline:
                inline = False
                out.append("-")
            else:
                out.append(dash)
            kind = type(item)
            if kind is dict:
                if item:
                    out.append(" ")
                    self.mapping(item, indent + 2, True)
                else:
                    out.append(" {}\n")
            elif kind is list:
                if item:
                    out.append(" ")
                    self.sequence(item, indent + 2, True)
                else:
                    out.append(" []\n")
            else:
                text = values.get(item) if kind is str else None
                if text is None:
                    text = self.scalar(item)
                if text and indent + 1 + len(text) <= width:
                    out.append(text)
                else:
                    out.append(self.in_place(item, None))
        self.stack.pop()

    def key(self, key: Any) -> str:
        """``key:`` as libyaml writes a simple key (a key it would write as ``? key`` is refused)."""
        if type(key) is str and len(key) <= _KEY_LENGTH and _PLAIN.match(key):
            written = (key if self._reads_as_str(key) else f"'{key}'") + ":"
        else:
            if type(key) not in _SCALARS:
                raise _Unsupported
            text = _libyaml([{key: "x"}])
            if text.startswith("?") or not text.endswith(": x\n") or "\n" in text[:-1]:
                raise _Unsupported
            written = text[:-3]
        if type(key) is str:
            self.keys[key] = written
        return written

    def scalar(self, value: Any) -> str:
        """A scalar's text after its key or ``-``: `` text\\n``; "" when it spans lines."""
        kind = type(value)
        if kind is str:
            if _PLAIN.match(value):
                text = f" {value}\n" if self._reads_as_str(value) else f" '{value}'\n"
            else:
                text = self._one_key(value)
            self.values[value] = text
            return text
        if kind is bool:
            return " true\n" if value else " false\n"
        if kind is int:
            return f" {value}\n"
        if value is None:
            return " null\n"
        if kind is not float:
            raise _Unsupported
        memo = (kind, repr(value))  # 0.0 and -0.0 are equal, but written apart
        known = self.others.get(memo)
        if known is None:
            known = self.others[memo] = self._one_key(value)
        return known

    def _reads_as_str(self, text: str) -> bool:
        return bool(self.resolve(ScalarNode, text, (True, False)) == _STR)

    @staticmethod
    def _one_key(value: Any) -> str:
        text = _libyaml([{"k": value}])[2:]
        return "" if "\n" in text[:-1] else text

    def in_place(self, value: Any, key: Any) -> str:
        """The text of a scalar that spans lines or passes the width, as libyaml writes it where it
        stands: in a document of the same nesting, after what the same key leaves on its line."""
        memo = (
            tuple(self.stack),
            type(key),
            key,
            type(value),
            repr(value) if type(value) is float else value,
        )
        text = self.nested.get(memo)
        if text is None:
            inner: Any = {key: value} if self.stack[-1] else [value]
            marker: Any = {key: "x"} if self.stack[-1] else ["x"]
            for is_mapping in reversed(self.stack[:-1]):
                inner, marker = ({"a": inner}, {"a": marker}) if is_mapping else ([inner], [marker])
            full, before = _libyaml([inner]), _libyaml([marker])
            if not before.endswith(" x\n") or not full.startswith(before[:-3]) or not full.endswith("\n"):
                raise _Unsupported  # pragma: no cover - libyaml writes a plain x after its key
            text = self.nested[memo] = full[len(before) - 3 :]
        return text


_SCALARS = (str, int, bool, float, type(None))


def _libyaml(documents: list[Any]) -> str:
    stream = io.StringIO()
    _emit_all(documents, stream)
    return stream.getvalue()


_STR, _INT, _BOOL, _NULL, _FLOAT, _MAP, _SEQ = (
    f"tag:yaml.org,2002:{kind}" for kind in ("str", "int", "bool", "null", "float", "map", "seq")
)


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
