"""`-o yaml`'s text is libyaml's safe dump without aliases, byte for byte, whichever way writes it.

The block writer (:class:`gpupin.yamltext._BlockWriter`) lays out mappings and lists itself and
takes scalars' text from libyaml; these tests hold it to ``yaml.dump_all`` with libyaml's safe
dumper (no aliases, ``sort_keys=False``, width 1000) on every example's manifests in every
pinning mode, on a table of odd keys and values (text YAML would read as another type, indicators,
spaces, breaks, non-ASCII, DEL, text at and past the width, at several depths), and on random
nested data; and they check that the block writer itself wrote them (not a fallback).
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gpupin import yamltext
from gpupin.loading import load_deployments, load_inventory
from gpupin.pinning import PINNING_MODES, PinningModeName
from gpupin.planner import Planner
from gpupin.render import RenderConfig, render

from helpers import EXAMPLES


class _NoAliases(yaml.CSafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _expected(documents: list[Any]) -> str:
    return yaml.dump_all(documents, Dumper=_NoAliases, sort_keys=False, width=yamltext.YAML_WIDTH)


def _assert_block_writer_writes(documents: list[Any]) -> None:
    expected = _expected(documents)
    assert yamltext._BlockWriter().text(documents) == expected
    assert yamltext.yaml_text(documents) == expected


@pytest.mark.parametrize("pinning", PINNING_MODES)
def test_every_examples_manifests(pinning: PinningModeName) -> None:
    items = load_deployments(
        sorted((EXAMPLES / "seed").glob("*.yaml")) + sorted((EXAMPLES / "demo").glob("*.yaml"))
    )
    planner = Planner(load_inventory(EXAMPLES / "inventory" / "cluster.yaml")[0], pinning=pinning)
    config = RenderConfig(
        pinning=pinning, network_policy="namespace", network_policy_namespaces=(("team", "ml"),)
    )
    manifests = [obj for item in items for obj in render(item, planner.plan(item), config)]
    assert {"Pod", "Service", "NetworkPolicy"} <= {m["kind"] for m in manifests}
    shared = manifests[0]["metadata"]  # an object met twice is written twice, not as an alias
    _assert_block_writer_writes([*manifests, {"again": shared, "and": [shared]}])


ODD = [
    "",
    "plain",
    "123",
    "0x1f",
    "1.5",
    "1e3",
    "yes",
    "No",
    "on",
    "null",
    "~",
    "true",
    "2001-12-14",
    "=",
    "<<",
    "-",
    "- x",
    "-x",
    "--x",
    "---",
    "--- a",
    "...",
    ".hidden",
    "a: b",
    "a:b",
    "a:",
    ":a",
    "a #b",
    "a#b",
    "#a",
    " lead",
    "trail ",
    "two  spaces",
    "tab\there",
    "line\nbreak",
    "line\n  indented\n",
    "\nleading break",
    "trailing break\n",
    "café",
    "中文",
    "del\x7f",
    "bell\x07",
    "'single'",
    '"double"',
    "it's",
    "a, b [c] {d}",
    "*alias",
    "&anchor",
    "!tag",
    "%percent",
    "@at",
    "`tick",
    "|pipe",
    ">fold",
    "?q",
    "? q",
    "word " * 150,
    "x" * 990,
    "word " * 199 + "wordy",
    "y " * 600,
    "script line\n" * 200,
    "  indented script\n" * 100,
]


def test_odd_values_keys_and_depths() -> None:
    documents: list[Any] = []
    for text in ODD:
        value_doc = {"k": text, "list": [text, [text]], "deep": {"a": {"b": [{"c": text, "d": [text]}]}}}
        documents.append(value_doc)
        if "\n" not in text and len(text) < 200:
            documents.append({text: "v", "m": {text: [text]}, "s": [{text: {text: text}}]})
    for key in ["k" * 100, "k" * 128, "k" * 129, "k" * 300, "a b " * 40]:
        documents.append({key: "v", "n": {key: [1]}})
    _assert_expected_either_way(documents)


def test_other_scalars_and_collections() -> None:
    _assert_block_writer_writes(
        [
            {1: "int key", False: "bool key", None: "null key", 2.5: "float key"},
            {-0.0: "negative zero key", "a": 1},
            {"f": [0.0, -0.0, 1e16, 1e-7, 2.5, float("inf"), float("-inf"), float("nan"), 1e300]},
            {"i": [0, -1, 2**70], "b": [True, False], "n": [None], "e": [{}, [], [[]], [{}]], "m": {}},
            [[1, [2, [3, {}]]], {"k": [{"x": 1}, {"y": [[]]}]}],
            ["- a", {"b": ["c", {"d": "word " * 300}]}],
        ]
    )


def test_what_the_block_writer_leaves_to_libyaml() -> None:
    """A document that is a scalar or empty, a key libyaml writes as ``? key``, a set or a date:
    the same text as the dump, from the next way."""
    import datetime

    for documents in (
        ["bare", {"a": 1}],
        [{}, {"a": 1}],
        [[], "x"],
        [{"k" * 200: 1}],
        [{("t", 1): 1}],
        [{"a": {1, 2}}],
        [{"d": datetime.date(2001, 12, 14)}],
    ):
        with pytest.raises(yamltext._Unsupported):
            yamltext._BlockWriter().text(documents)
        assert yamltext.yaml_text(documents) == _expected(documents), documents


def _assert_expected_either_way(documents: list[Any]) -> None:
    """Each document as the dump writes it, written by the block writer (keys it leaves aside
    are written by the next way, and checked the same)."""
    for document in documents:
        expected = _expected([document])
        try:
            assert yamltext._BlockWriter().text([document]) == expected, document
        except yamltext._Unsupported:
            assert yamltext.yaml_text([document]) == expected, document
    assert yamltext.yaml_text(documents) == _expected(documents)


_text = st.text(
    alphabet=st.sampled_from(list("ab01:-#'\" \n\t.~é\x7f?,[]{}&*!|>%@`=<")), max_size=12
) | st.sampled_from(["word " * 250, "line\n" * 30, "  x\n" * 40, "a" * 1200, "yes", "null", "12", ""])
_scalars = _text | st.integers() | st.booleans() | st.none() | st.floats()
_data = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(_text | st.integers(), children, max_size=4)
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.dictionaries(_text, _data, min_size=1, max_size=5) | st.lists(_data, min_size=1, max_size=4),
        max_size=3,
    )
)
def test_random_data(documents: list[Any]) -> None:
    expected = _expected(documents)
    assert yamltext.yaml_text(documents) == expected
