"""The YAML loader every file goes through: what it reads as PyYAML's safe loader reads it, and
where each limit sits (exactly at the limit passes, one over is refused with a one-line message).

Aspects: plain YAML (documents, anchors, merge keys, tags YAML defines) unchanged; size, nesting
(also through aliases), values (aliases at their expanded size, summed over documents); keys
written twice; values YAML's own tags cannot make; encodings.
"""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest
import yaml

from gpupin import safeyaml
from gpupin.safeyaml import YAMLInputError, load, load_all

from helpers import EXAMPLES, REPO, strictly_equal


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a: 1\n---\n- x\n---\n",
        "base: &b {a: 1, b: [x, y]}\nuse: *b\nmerged: {<<: *b, a: 2}\n",
        "n: [1, 0x1f, 0o17, 1.5, .inf, -.inf, true, null, ~, 2001-12-14, 1:30]\ns: !!str 12\nb: !!binary aGk=\n",
        "? a\n: c\n",
        "a:\n  - b: 1\n    c: {d: [e, {f: g}]}\n",
    ],
)
def test_reads_what_the_safe_loader_reads(text: str) -> None:
    assert load_all(text) == list(yaml.safe_load_all(text))


def test_encodings() -> None:
    assert load_all(codecs.BOM_UTF8 + "a: é\n".encode()) == [{"a": "é"}]
    assert load_all("a: é\n".encode("utf-16")) == [{"a": "é"}]
    assert load_all("a: é\n".encode("utf-16-be").join([codecs.BOM_UTF16_BE, b""])) == [{"a": "é"}]
    with pytest.raises(YAMLInputError, match=r"^not UTF-8 text \(byte 3 is 0xff\); save it as UTF-8$"):
        load_all(b"a: \xff\n")


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_nesting_up_to_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(safeyaml, "MAX_DEPTH", 10)
    assert load(_nested(10)) is not None
    with pytest.raises(YAMLInputError) as info:
        load(_nested(11))
    assert str(info.value) == "line 1, column 11: nested 11 levels deep; at most 10 levels are allowed"


def test_the_default_depth_stays_below_pythons_recursion_limit() -> None:
    """Whatever reads the data later (pydantic, json.dumps, describe_errors) recurses once a level."""
    assert load(_nested(safeyaml.MAX_DEPTH)) is not None
    with pytest.raises(YAMLInputError, match="at most 100 levels"):
        load(_nested(100_000))


CHAIN = "a0: &a0 [x]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 8))
"""Aliases of aliases: a7 is 8 lists deep."""


def test_nesting_is_counted_through_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(safeyaml, "MAX_DEPTH", 10)
    assert len(load(CHAIN)) == 8  # the mapping, a7's 8 lists and the x in the last: 10 levels
    with pytest.raises(YAMLInputError, match=r"^line 9, column 10: nested 11 levels deep once alias \*a7"):
        load(CHAIN + "a8: &a8 [*a7]\n")


def _values(count: int) -> str:
    """A document of exactly ``count`` YAML values: a list (1) of ``count - 1`` items."""
    return "[" + ", ".join(["1"] * (count - 1)) + "]"


def test_values_up_to_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(safeyaml, "MAX_NODES", 100)
    assert len(load(_values(100))) == 99
    with pytest.raises(YAMLInputError, match=r"more than 100 YAML values .*; a file may hold at most 100$"):
        load(_values(101))


ALIASES = "a: &x [1, 2, 3, 4, 5, 6, 7, 8, 9]\nb: [{n}]\n".replace("{n}", "{aliases}")


def _aliases(n: int) -> str:
    """mapping 1, key a 1, list 1 + 9 items = 12; then key b and list: 2 + n aliases of 10 each"""
    return ALIASES.format(aliases=", ".join(["*x"] * n))


def test_an_alias_counts_what_it_stands_for_each_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(safeyaml, "MAX_NODES", 100)
    assert load(_aliases(8))
    with pytest.raises(YAMLInputError) as info:
        load(_aliases(9))
    assert str(info.value) == (
        "line 2, column 37: alias *x (10 values) brings the file to 104 YAML values (an alias counts "
        "everything it stands for, each time it is used); a file may hold at most 100"
    )


def test_values_are_counted_over_all_documents(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(safeyaml, "MAX_NODES", 100)
    assert len(load_all("\n---\n".join([_values(25)] * 4))) == 4
    with pytest.raises(YAMLInputError, match=r"^line 9, column 1: more than 100 YAML values"):
        load_all("\n---\n".join([_values(25)] * 4 + ["x"]))


def test_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(safeyaml, "MAX_BYTES", 2**20)
    assert load("a: " + "x" * (2**20 - 4) + "\n") is not None
    with pytest.raises(YAMLInputError, match=r"^1\.3 MiB of YAML; a file may hold at most 1 MiB$"):
        load("a: " + "é" * 2**19 + "x" * 2**18)  # bytes, not characters


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "a: &a [*a]\n",
            "line 1, column 8: alias *a is inside its own anchor &a; a value cannot contain itself",
        ),
        (
            "a: 1\nb: 2\na: 3\n",
            "line 3, column 1: key 'a' appears twice in one mapping (first on line 1); write it once",
        ),
        ("{<<: {a: 1}, a: 2, <<: {b: 1}}", None),  # merge keys may repeat, and be overridden
        ("a: 2001-02-30\n", "line 1, column 4: '2001-02-30' reads as a YAML timestamp but is not one"),
        ("a: " + "1" * 101 + "\n", "line 1, column 4: a number of 101 digits; numbers may have at most 100"),
        ("a: " + "1" * 100 + "\n", None),
        ("a: b\x07\n", "line 1, column 5: not valid YAML (character '\\x07' is not allowed in YAML text)"),
        ("a: [b\nc: d\n", "line 2, column 2: not valid YAML ("),
        (
            "a: !!python/name:os.system\n",
            "line 1, column 4: not valid YAML (could not determine a constructor",
        ),
        ("a: 1\n---\nb: 2\n", "2 YAML documents; expected one (no --- between parts)"),
    ],
)
def test_one_line_messages(text: str, message: str | None) -> None:
    if message is None:
        load(text)
        return
    with pytest.raises(YAMLInputError) as info:
        load(text)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def _full_loader_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on, a text the event path gives up on fails the test instead of being read again."""

    def full_loader(text: str) -> None:
        raise AssertionError("the full loader was needed")

    monkeypatch.setattr(safeyaml, "_Loader", full_loader)


PLAIN_FILES = [*sorted(EXAMPLES.glob("**/*.yaml")), REPO / "operator" / "gpupin" / "data" / "models.yaml"]


@pytest.mark.parametrize("path", PLAIN_FILES, ids=lambda p: p.name)
def test_plain_files_are_read_from_libyamls_events_alone(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """The fast path: the files people write, read without PyYAML's composer and constructor, to
    the same data of the same types."""
    text = path.read_text()
    expected = list(yaml.safe_load_all(text))
    _full_loader_refused(monkeypatch)
    assert strictly_equal(load_all(text), expected)


@pytest.mark.parametrize(
    ("limit", "value", "at", "over"),
    [
        ("MAX_DEPTH", 10, _nested(10), _nested(11)),
        ("MAX_DEPTH", 10, CHAIN, CHAIN + "a8: &a8 [*a7]\n"),
        ("MAX_NODES", 100, _values(100), _values(101)),
        ("MAX_NODES", 100, _aliases(8), _aliases(9)),
        ("MAX_NODES", 100, "\n---\n".join([_values(25)] * 4), "\n---\n".join([_values(25)] * 4 + ["x"])),
    ],
)
def test_the_event_path_counts_the_limits_as_the_full_loader_does(
    monkeypatch: pytest.MonkeyPatch, limit: str, value: int, at: str, over: str
) -> None:
    """Exactly at a limit it reads the text itself; one over, it gives up and the full loader says
    why (the messages are the full loader's, above)."""
    monkeypatch.setattr(safeyaml, limit, value)
    with pytest.raises(YAMLInputError):
        load_all(over)
    _full_loader_refused(monkeypatch)
    assert load_all(at) == list(yaml.safe_load_all(at))
    with pytest.raises(AssertionError, match="full loader was needed"):
        load_all(over)


@pytest.mark.parametrize(
    "text",
    [
        "{1: a, '1': b, 1.0: c}\n",  # keys the constructor makes equal: the last wins
        "{1: a, 0x1: b}\n",
        "{.nan: 1, .NaN: 2}\n",
        "a: &x {k: v}\nb: {<<: *x, z: 1}\n",  # a merge key
        "a: !!str 12\nb: ! 12\nc: !!float 1\n",  # tags
        "= : 1\n",  # YAML's value key
        "null: 1\n~: 2\n",
        "a: &x 5\nb: *x\n*x : 3\n",  # an alias as a key
        "- &x [1]\n- *x\n- &y {a: *x}\n- *y\n",  # aliases stay shared, as PyYAML makes them
        "a: 0b101\nb: 0o17\nc: 017\nd: 1_000\ne: 190:20:30\nf: 2001-12-14t21:59:43.10-05:00\ng: Yes\n",
    ],
)
def test_what_the_event_path_gives_up_on_reads_as_before(text: str) -> None:
    assert strictly_equal(load_all(text), list(yaml.safe_load_all(text)))
