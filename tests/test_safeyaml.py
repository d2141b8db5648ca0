"""The YAML loader every file goes through: what it reads as PyYAML's safe loader reads it, and
where each limit sits (exactly at the limit passes, one over is refused with a one-line message).

Aspects: plain YAML (documents, anchors, merge keys, tags YAML defines) unchanged; size, nesting
(also through aliases), values (aliases at their expanded size, summed over documents); keys
written twice; values YAML's own tags cannot make; encodings.
"""

from __future__ import annotations

import codecs

import pytest
import yaml

from gpupin import safeyaml
from gpupin.safeyaml import YAMLInputError, load, load_all


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


def test_nesting_is_counted_through_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(safeyaml, "MAX_DEPTH", 10)
    chain = "a0: &a0 [x]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 8))
    assert len(load(chain)) == 8  # the mapping, a7's 8 lists and the x in the last: 10 levels
    with pytest.raises(YAMLInputError, match=r"^line 9, column 10: nested 11 levels deep once alias \*a7"):
        load(chain + "a8: &a8 [*a7]\n")


def _values(count: int) -> str:
    """A document of exactly ``count`` YAML values: a list (1) of ``count - 1`` items."""
    return "[" + ", ".join(["1"] * (count - 1)) + "]"


def test_values_up_to_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(safeyaml, "MAX_NODES", 100)
    assert len(load(_values(100))) == 99
    with pytest.raises(YAMLInputError, match=r"more than 100 YAML values .*; a file may hold at most 100$"):
        load(_values(101))


def test_an_alias_counts_what_it_stands_for_each_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(safeyaml, "MAX_NODES", 100)
    # mapping 1, key a 1, list 1 + 9 items = 12; then key b and list: 2 + n aliases of 10 each
    assert load("a: &x [1, 2, 3, 4, 5, 6, 7, 8, 9]\nb: [" + ", ".join(["*x"] * 8) + "]\n")
    with pytest.raises(YAMLInputError) as info:
        load("a: &x [1, 2, 3, 4, 5, 6, 7, 8, 9]\nb: [" + ", ".join(["*x"] * 9) + "]\n")
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
