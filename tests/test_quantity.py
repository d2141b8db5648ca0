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


@pytest.mark.parametrize("bad", ["lots", "Gi", "", "1.2.3", "8X", True, None, [1]])
def test_rejects_what_kubernetes_rejects(bad: object) -> None:
    with pytest.raises(ValueError) as info:
        parse_bytes(bad)  # type: ignore[arg-type]
    assert QUANTITY_HELP in str(info.value)


@pytest.mark.parametrize(
    ("bad", "meant"),
    [
        ("8GB", "write 8G (10^9 bytes) or 8Gi (2^30 bytes)"),
        ("8gb", "write 8G (10^9 bytes) or 8Gi (2^30 bytes)"),
        ("12 GB", "write 12G (10^9 bytes) or 12Gi (2^30 bytes)"),
        ("1.5TB", "write 1.5T (10^12 bytes) or 1.5Ti (2^40 bytes)"),
        ("512kb", "write 512k (10^3 bytes) or 512Ki (2^10 bytes)"),
        ("8GiB", "write 8Gi (2^30 bytes)"),
        ("8 Gi", "write 8Gi (2^30 bytes)"),
        ("8mi", "write 8Mi (2^20 bytes)"),
        ("100B", "write 100 (a plain number of bytes)"),
    ],
)
def test_a_near_miss_gets_the_spellings_meant(bad: str, meant: str) -> None:
    """`vram: 8GB` is refused as the API server refuses it, with what to write instead."""
    with pytest.raises(ValueError) as info:
        parse_bytes(bad)
    assert str(info.value) == f"{bad!r} is not a Kubernetes quantity; {meant}"
    for spelling in meant.removeprefix("write ").split(" or "):  # and what it suggests is a quantity
        parse_bytes(spelling.split(" (")[0])


def test_negative() -> None:
    with pytest.raises(ValueError, match="'-1Gi' is negative; a memory size must be 0 or more"):
        parse_bytes("-1Gi")


@pytest.mark.parametrize(
    "huge", ["1e999999999", "1e" + "9" * 5000, "9" * 100_000 + "Gi", "9" * 1_000_001 + "Ei", 2**70, 1e300]
)
def test_more_than_kubernetes_counts_is_an_error_not_an_overflow(huge: object) -> None:
    with pytest.raises(ValueError) as info:
        parse_bytes(huge)  # type: ignore[arg-type]
    message = str(info.value)
    assert "more than Kubernetes can count" in message and len(message) < 200


def test_exponents() -> None:
    assert parse_bytes("0e999999999") == 0
    assert parse_bytes("1e-999999999") == 1  # a fraction of a byte rounds up, as Kubernetes rounds
    with pytest.raises(ValueError, match=r"the exponent 1\.5 must be a whole number"):
        parse_bytes("1e1.5")


def test_round_trip_through_format() -> None:
    for value in [12282 * 2**20, 6 * 2**30, 85520809984, 1]:
        assert parse_bytes(format_quantity(value)) == value


def test_exponent_and_decimal() -> None:
    assert parse_quantity("1e3") == 1000
    assert parse_quantity("0.5") == parse_quantity("500m")
