"""YAML from files people hand gpupin, read within limits, every problem one line.

Deployment files, inventories (``kubectl get nodes -o yaml``) and model data all go through
:func:`load_all`: libyaml's parser where PyYAML has it (the pure-Python one otherwise), PyYAML's
safe constructors (no ``!!python/…`` tags), and these limits, each checked while the text is read:

- :data:`MAX_BYTES` of text (8 MiB: `kubectl get nodes -o yaml` of several hundred nodes);
- :data:`MAX_DEPTH` levels of nesting (100; Kubernetes objects use about 15), counted through
  aliases, so that nothing later recurses past Python's limit;
- :data:`MAX_NODES` values in a file (500,000, where 8 MiB of `kubectl get nodes` output holds
  about 350,000; keys, lists and mappings count, and an alias counts everything it stands for
  each time it is used): a "billion laughs" file of a few hundred bytes that expands to 387
  million strings is refused at the first alias over the limit, before anything is expanded;
- a mapping key written twice, an alias inside its own anchor, and a number of more than
  :data:`MAX_NUMBER_DIGITS` digits are refused as Kubernetes refuses them.

With libyaml, the data is first built straight from its parser's events (:func:`_from_events`,
several times faster than composing nodes and constructing from them); anything that path does
not handle itself (an explicit tag, a merge key, a key that is not a plain value, a key twice, an
error, a limit) makes it give up, and the full loader reads the text again: it alone words the
errors, and both give the same data.

Errors are :class:`YAMLInputError` with one line: where (line, column) and what is wrong or
allowed; the caller adds the file's name. This module imports nothing of gpupin's.
"""

from __future__ import annotations

import codecs
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.error import Mark, MarkedYAMLError
from yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)
from yaml.nodes import MappingNode, Node, ScalarNode
from yaml.reader import ReaderError
from yaml.resolver import Resolver

MAX_BYTES = 8 * 2**20
"""Largest file read, in bytes (8 MiB)."""
MAX_DEPTH = 100
"""Deepest nesting of lists and mappings, aliases expanded."""
MAX_NODES = 500_000
"""Most YAML nodes (scalars, lists, mappings) in one file, each alias counted at its full size."""
MAX_NUMBER_DIGITS = 100
"""Longest integer literal; no field takes more than 19 digits (an int64)."""

_MERGE_TAG = "tag:yaml.org,2002:merge"


class YAMLInputError(ValueError):
    """Text that is not YAML gpupin reads, or is over a limit; the message is one line without
    the file's name (``line 3, column 7: …`` or ``…: at most 8 MiB``)."""


def decode(data: bytes) -> str:
    """UTF-8 text (a byte-order mark is dropped), or UTF-16 with its byte-order mark (what
    Windows PowerShell 5 writes for ``kubectl … > file``). Raises :class:`YAMLInputError`."""
    encoding = "utf-16" if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) else "utf-8-sig"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as err:
        bad = data[err.start : err.start + 1].hex()
        raise YAMLInputError(
            f"not {encoding.removesuffix('-sig').upper()} text (byte {err.start} is 0x{bad}); "
            "save it as UTF-8"
        ) from None


def load_all(text: str | bytes) -> list[Any]:
    """Every document of a YAML stream, as plain data (dict, list, str, int, float, bool, None,
    and the dates and bytes YAML's own tags make). Raises :class:`YAMLInputError`."""
    if isinstance(text, bytes):
        text = decode(text)
    if len(text) > MAX_BYTES // 4 and (size := len(text.encode("utf-8"))) > MAX_BYTES:
        raise YAMLInputError(f"{_mib(size)} of YAML; a file may hold at most {_mib(MAX_BYTES)}")
    if yaml.__with_libyaml__:  # pragma: no branch - the wheels ship libyaml
        fast = _from_events(text)
        if fast is not None:
            return fast
    loader: Any = _Loader(text)  # PyYAML's stubs leave check_data and get_data untyped
    try:
        documents = []
        while loader.check_data():
            documents.append(loader.get_data())
        return documents
    except yaml.YAMLError as err:
        raise YAMLInputError(_describe(err, text)) from None
    finally:
        loader.dispose()


def load(text: str | bytes) -> Any:
    """The one document of a YAML stream (None when empty). Raises :class:`YAMLInputError`,
    also when the stream holds more than one document."""
    documents = load_all(text)
    if len(documents) > 1:
        raise YAMLInputError(f"{len(documents)} YAML documents; expected one (no --- between parts)")
    return documents[0] if documents else None


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB".replace(".0 MiB", " MiB")


def _describe(err: yaml.YAMLError, text: str) -> str:
    """One line: where, then PyYAML's or libyaml's problem (their messages span lines)."""
    if isinstance(err, MarkedYAMLError):
        mark = err.problem_mark or err.context_mark
        problem = err.problem or err.context or "not valid YAML"
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        if isinstance(err, _PlainError):
            return where + problem
        return f"{where}not valid YAML ({' '.join(problem.split())})"
    if isinstance(err, ReaderError):  # a character YAML does not allow (NUL, most controls)
        line = text.count("\n", 0, err.position) + 1
        column = err.position - (text.rfind("\n", 0, err.position) + 1) + 1
        character = chr(err.character) if isinstance(err.character, int) else err.character
        return f"line {line}, column {column}: not valid YAML (character {character!r} is not allowed in YAML text)"
    return f"not valid YAML ({' '.join(str(err).split())})"


class _PlainError(ConstructorError):
    """Over one of this module's limits, or a value YAML reads but Kubernetes would not; its
    problem is the whole message (not wrapped in "not valid YAML")."""


class _BoundedComposer(Composer):
    """PyYAML's composer, counting nodes (aliases at their expanded size) and depth as it goes."""

    def __init__(self) -> None:
        super().__init__()
        self._nodes = 0
        self._depth = 0
        self._deepest = 0
        self._sizes: dict[int, tuple[int, int]] = {}  # id(anchored node) -> (nodes, height)
        self._open: set[str] = set()

    def compose_document(self) -> Node | None:
        self._depth = self._deepest = 0  # anchors are per document; the count of values is per file
        self._sizes = {}
        self._open = set()
        return super().compose_document()

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        events: Any = self  # the parser half of the loader this composer is mixed into
        if events.check_event(AliasEvent):
            event = events.peek_event()
            node = super().compose_node(parent, index)
            if event.anchor in self._open:
                raise _PlainError(
                    None,
                    None,
                    f"alias *{event.anchor} is inside its own anchor &{event.anchor}; "
                    "a value cannot contain itself",
                    event.start_mark,
                )
            nodes, height = self._sizes[id(node)]
            self._count(nodes, f"*{event.anchor}", event.start_mark)
            self._deepen(self._depth + height, event.start_mark, f" once alias *{event.anchor} is expanded")
            return node
        event = events.peek_event()
        anchor = event.anchor
        before, deepest = self._nodes, self._deepest
        self._depth += 1
        self._deepest = self._depth
        self._deepen(self._depth, event.start_mark)
        self._count(1, None, event.start_mark)
        if anchor is not None:
            self._open.add(anchor)
        node = super().compose_node(parent, index)
        if anchor is not None:
            self._open.discard(anchor)
            self._sizes[id(node)] = (self._nodes - before, self._deepest - self._depth + 1)
        self._deepest = max(deepest, self._deepest)
        self._depth -= 1
        return node

    def compose_mapping_node(self, anchor: Any) -> MappingNode:  # a str or None (the stubs say dict)
        node = super().compose_mapping_node(anchor)
        seen: dict[tuple[str, str], Mark] = {}
        for key, _ in node.value:
            if not isinstance(key, ScalarNode) or key.tag == _MERGE_TAG:
                continue
            first = seen.setdefault((key.tag, key.value), key.start_mark)
            if first is not key.start_mark:
                raise _PlainError(
                    None,
                    None,
                    f"key {_short(key.value)!r} appears twice in one mapping (first on line {first.line + 1}); "
                    "write it once",
                    key.start_mark,
                )
        return node

    def _count(self, nodes: int, alias: str | None, mark: Mark) -> None:
        self._nodes += nodes
        if self._nodes <= MAX_NODES:
            return
        if alias is None:
            problem = f"more than {MAX_NODES:,} YAML values (keys, items, lists and mappings)"
        else:
            problem = (
                f"alias {alias} ({nodes:,} values) brings the file to {self._nodes:,} YAML values "
                "(an alias counts everything it stands for, each time it is used)"
            )
        raise _PlainError(None, None, f"{problem}; a file may hold at most {MAX_NODES:,}", mark)

    def _deepen(self, depth: int, mark: Mark, through: str = "") -> None:
        self._deepest = max(self._deepest, depth)
        if depth > MAX_DEPTH:
            raise _PlainError(
                None,
                None,
                f"nested {depth} levels deep{through}; at most {MAX_DEPTH} levels are allowed",
                mark,
            )


def _short(value: str, limit: int = 60) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


class _Constructor(SafeConstructor):
    """PyYAML's safe constructors; a value they cannot make (a date that does not exist, a number
    too long) is a one-line error at its line instead of a ValueError from deep inside."""

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as err:  # ``2001-02-30``: YAML's timestamp, not a date
            kind = str(node.tag).rsplit(":", 1)[-1]
            raise _PlainError(
                None,
                None,
                f"{_short(str(node.value))!r} reads as a YAML {kind} but is not one ({err}); "
                "quote it if it is text",
                node.start_mark,
            ) from None

    def construct_yaml_int(self, node: ScalarNode) -> int:
        digits = sum(c.isalnum() for c in str(node.value))
        if digits > MAX_NUMBER_DIGITS:
            raise _PlainError(
                None,
                None,
                f"a number of {digits} digits; numbers may have at most {MAX_NUMBER_DIGITS}",
                node.start_mark,
            )
        return super().construct_yaml_int(node)


_Constructor.add_constructor("tag:yaml.org,2002:int", _Constructor.construct_yaml_int)  # type: ignore[type-var]

if yaml.__with_libyaml__:  # pragma: no branch - the wheels ship libyaml
    from yaml._yaml import CParser

    class _Loader(_BoundedComposer, CParser, _Constructor, Resolver):
        """libyaml scans and parses (in C); composing (where the limits are counted) and
        constructing stay PyYAML's Python code."""

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            _BoundedComposer.__init__(self)
            _Constructor.__init__(self)
            Resolver.__init__(self)

else:  # pragma: no cover
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Loader(Reader, Scanner, Parser, _BoundedComposer, _Constructor, Resolver):  # type: ignore[no-redef]
        """PyYAML's own (pure Python) reader, scanner and parser."""

        def __init__(self, stream: str) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)
            _BoundedComposer.__init__(self)
            _Constructor.__init__(self)
            Resolver.__init__(self)


class _GiveUp(Exception):
    """The event path leaves this text to the full loader."""


_NO_KEY = object()
_STR_TAG = "tag:yaml.org,2002:str"
_SCALAR_TAGS = {f"tag:yaml.org,2002:{kind}" for kind in ("null", "bool", "int", "float", "timestamp")}


def _from_events(text: str) -> list[Any] | None:
    """:func:`load_all`'s documents built from libyaml's events with an explicit stack (no
    recursion), the limits counted as :class:`_BoundedComposer` counts them; None where the full
    loader must read the text (see the module's docstring)."""
    parser: Any = CParser(text)
    get, resolve, constructor = parser.get_event, Resolver().resolve, _Constructor()
    plain: dict[str, Any] = {}  # a plain scalar's text -> its (immutable) value
    max_nodes, max_depth, nodes, documents = MAX_NODES, MAX_DEPTH, 0, []
    try:
        get()  # the stream's start
        while type(event := get()) is DocumentStartEvent:
            anchors: dict[str, tuple[Any, int, int]] = {}  # anchor -> (value, nodes, height)
            open_anchors: set[str] = set()
            stack: list[list[Any]] = []  # [container, key or _NO_KEY, anchor, nodes before, deepest before]
            depth = deepest = 0
            while True:
                event = get()
                kind = type(event)
                scalar = kind is ScalarEvent
                if scalar or kind is MappingStartEvent or kind is SequenceStartEvent:
                    anchor = event.anchor
                    if event.tag is not None or (
                        anchor is not None and (anchor in anchors or anchor in open_anchors)
                    ):
                        raise _GiveUp
                    nodes += 1
                    if nodes > max_nodes or depth >= max_depth:
                        raise _GiveUp
                    if not scalar:
                        container: Any = {} if kind is MappingStartEvent else []
                        stack.append([container, _NO_KEY, anchor, nodes - 1, deepest])
                        depth = deepest = depth + 1
                        if anchor is not None:
                            open_anchors.add(anchor)
                        continue
                    deepest = max(deepest, depth + 1)
                    value = event.value
                    if event.implicit[0]:
                        if (data := plain.get(value, plain)) is plain:
                            data = plain[value] = _plain_value(event, resolve, constructor)
                    else:
                        data = value
                    if anchor is not None:
                        anchors[anchor] = (data, 1, 1)
                elif kind is MappingEndEvent or kind is SequenceEndEvent:
                    data, _, anchor, before, deepest_before = stack.pop()
                    if anchor is not None:
                        open_anchors.discard(anchor)
                        anchors[anchor] = (data, nodes - before, deepest - depth + 1)
                    deepest = max(deepest_before, deepest)
                    depth -= 1
                    scalar = False
                elif kind is AliasEvent:
                    if event.anchor in open_anchors or event.anchor not in anchors:
                        raise _GiveUp
                    data, size, height = anchors[event.anchor]
                    nodes += size
                    if nodes > max_nodes or depth + height > max_depth:
                        raise _GiveUp
                    deepest = max(deepest, depth + height)
                else:  # the document's end
                    break
                if not stack:  # the document's one value
                    documents.append(data)
                    continue
                frame = stack[-1]
                container = frame[0]
                if type(container) is list:
                    container.append(data)
                elif frame[1] is _NO_KEY:  # a key: a scalar, not one already in the mapping
                    if not scalar or data in container:
                        raise _GiveUp
                    frame[1] = data
                else:
                    container[frame[1]] = data
                    frame[1] = _NO_KEY
        return documents
    except (_GiveUp, yaml.YAMLError):
        return None
    finally:
        parser.dispose()


def _plain_value(event: Any, resolve: Any, constructor: _Constructor) -> Any:
    """A plain scalar's value, as the resolver and the safe constructors make it."""
    tag = resolve(ScalarNode, event.value, (True, False))
    if tag == _STR_TAG:
        return event.value
    if tag not in _SCALAR_TAGS:  # a merge key, ``=``
        raise _GiveUp
    node = ScalarNode(tag, event.value, event.start_mark, event.end_mark)
    try:
        return constructor.yaml_constructors[tag](constructor, node)
    except (ValueError, OverflowError, yaml.YAMLError):
        raise _GiveUp from None
