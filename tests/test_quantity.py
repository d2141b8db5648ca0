"""Kubernetes quantities as bytes: the grammar the API server accepts, and its rejections."""

from __future__ import annotations

import pytest

from gpupin.quantity import QUANTITY_HELP, format_quantity, parse_bytes, parse_quantity


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12282Mi", 12282 * 2**20),
        ("9Gi", 9 * 2**30),
        ("9G", 9 * 10**9),
        ("1.5Gi", 3 * 2**29),
        ("13e9", 13 * 10**9),
        ("100", 100),
        (100, 100),
        ("500m", 1),  # fractions of a byte round up
        ("1k", 1000),
        ("1Ki", 1024),
    ],
)
def test_parse_bytes(text: str | int, expected: int) -> None:
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("bad", ["lots", "12 GB", "12GB", "Gi", "", "1.2.3", "-1Gi", True, None, [1]])
def test_rejects_what_kubernetes_rejects(bad: object) -> None:
    with pytest.raises(ValueError) as info:
        parse_bytes(bad)  # type: ignore[arg-type]
    assert QUANTITY_HELP in str(info.value) or "negative" in str(info.value)


def test_round_trip_through_format() -> None:
    for value in [12282 * 2**20, 6 * 2**30, 85520809984, 1]:
        assert parse_bytes(format_quantity(value)) == value


def test_exponent_and_decimal() -> None:
    assert parse_quantity("1e3") == 1000
    assert parse_quantity("0.5") == parse_quantity("500m")
