"""The CEL of dra pinning's device selectors (cel-python evaluates it as the API server would).

Aspects: :func:`cel_string` makes a literal that denotes exactly its text — quotes, backslashes,
newlines, control characters, any Unicode — so no value can end the literal and add CEL of its
own; the selector matches the device of that UUID and no other; a lone surrogate is refused.
"""

from __future__ import annotations

from typing import Any

import celpy
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpupin import constants
from gpupin.pinning.dra import cel_string, uuid_selector

_env = celpy.Environment()


def _evaluate(expression: str, activation: dict[str, Any] | None = None) -> Any:
    return _env.program(_env.compile(expression)).evaluate(activation or {})


def _device(uuid: str) -> dict[str, Any]:
    return {"device": celpy.json_to_cel({"attributes": {constants.DRA_DRIVER: {"uuid": uuid}}})}


TRICKY = [
    "GPU-fb05d912-f869-e10e-78d7-dc7634975bba",
    "it's",
    'say "hi"',
    "back\\slash\\",
    "\\'",
    "line\nbreak\r\ttab",
    "nul\0bell\a",
    "é ü 中文 😀",
    "x' || true || 'y",
    "",
]


@pytest.mark.parametrize("text", TRICKY)
def test_a_cel_literal_denotes_exactly_its_text(text: str) -> None:
    literal = cel_string(text)
    assert _evaluate(literal) == text
    assert all(0x20 <= ord(c) < 0x7F for c in literal), "printable ASCII: nothing raw reaches the API server"


@given(st.text())
def test_any_text_round_trips(text: str) -> None:
    assert _evaluate(cel_string(text)) == text


@given(st.text(min_size=1), st.text())
def test_the_selector_matches_the_device_of_that_uuid_and_no_other(uuid: str, other: str) -> None:
    expression = uuid_selector(uuid)
    assert _evaluate(expression, _device(uuid)) == True  # noqa: E712 (a CEL bool)
    if other != uuid:
        assert _evaluate(expression, _device(other)) == False  # noqa: E712


def test_a_quote_in_a_uuid_cannot_widen_the_selector() -> None:
    """Pasted raw, ``x' || true || 'y`` would select every device."""
    expression = uuid_selector("x' || true || 'y")
    assert _evaluate(expression, _device("GPU-other")) == False  # noqa: E712
    assert expression == "device.attributes['gpu.nvidia.com'].uuid == 'x\\' || true || \\'y'"


def test_a_lone_surrogate_is_refused() -> None:
    with pytest.raises(ValueError, match="lone surrogate"):
        cel_string("GPU-\ud800")
