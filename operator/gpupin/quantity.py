"""Kubernetes resource quantities (``12Gi``, ``12282Mi``, ``13e9``) as byte counts.

The planner, the inventory format and the API all speak quantities, and none of
them may import the kubernetes client, so the small grammar lives here. It follows
``k8s.io/apimachinery/pkg/api/resource``: a signed decimal number, then a binary
suffix (Ki … Ei), a decimal suffix (n u m "" k M G T P E) or an exponent (e3, E-2).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
}

# The same grammar the API server enforces for quantities (controller-gen emits it too);
# the CRD reuses it so `kubectl apply` and `gpupin plan` accept exactly the same strings.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
_QUANTITY_RE = re.compile(QUANTITY_PATTERN)

QUANTITY_HELP = "a Kubernetes quantity such as 12Gi, 12282Mi, 9.5G or a plain number of bytes"


def parse_quantity(value: str | int | float) -> Decimal:
    """Parse a quantity into an exact decimal; raise ``ValueError`` naming what is allowed
    (for a near miss such as ``8GB``, the spellings meant: ``8G`` or ``8Gi``)."""
    if isinstance(value, bool):
        raise _not_a_quantity(value)
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _not_a_quantity(value)
        return Decimal(repr(value))
    if not isinstance(value, str):
        raise _not_a_quantity(value)
    text = value.strip()
    if not _QUANTITY_RE.match(text):
        raise _not_a_quantity(value)
    number, suffix = _split(text)
    try:
        amount = Decimal(number)
        if suffix in _BINARY:
            return amount * _BINARY[suffix]
        if suffix in _DECIMAL:
            return amount * _DECIMAL[suffix]
        exponent = _exponent(suffix[1:], value)
        return amount if amount.is_zero() else amount.scaleb(exponent)
    except ArithmeticError:  # decimal.Overflow: a million digits, or an exponent of 10^9
        raise ValueError(_too_large(value)) from None


def _exponent(text: str, value: str) -> int:
    """The exponent of ``13e9`` (9), clamped to what :class:`~decimal.Decimal` can scale by
    (far beyond what Kubernetes counts either way)."""
    exponent = Decimal(text)
    if exponent != exponent.to_integral_value():
        raise ValueError(
            f"{_shown(value)} is not a Kubernetes quantity: the exponent {text} must be a whole number"
        )
    return int(min(max(exponent, Decimal(-_MAX_EXPONENT)), Decimal(_MAX_EXPONENT)))


_MAX_EXPONENT = 100_000  # beyond e18 is more than Kubernetes counts; below e-9 rounds up to one byte


def _not_a_quantity(value: Any) -> ValueError:
    """The message for what is not a quantity: the spelling meant, when it looks like one
    (``8GB``: write 8G (10^9 bytes) or 8Gi (2^30 bytes)), else what quantities look like."""
    meant = _meant(value) if isinstance(value, str) else None
    if meant:
        return ValueError(f"{_shown(value)} is not a Kubernetes quantity; write {meant}")
    return ValueError(f"{_shown(value)} is not {QUANTITY_HELP}")


_NEAR_MISS = re.compile(r"^\s*([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))\s*([A-Za-z]+)\s*$")
_POWERS = {"k": 1, "m": 2, "g": 3, "t": 4, "p": 5, "e": 6}


def _meant(value: str) -> str | None:
    """``8G (10^9 bytes) or 8Gi (2^30 bytes)`` for ``8GB``, ``8gb`` or ``8 G``; ``8Gi (2^30 bytes)``
    for ``8GiB``; ``8 (bytes)`` for ``8B``; None when the text is not a number and a unit."""
    match = _NEAR_MISS.match(value)
    if not match:
        return None
    number, unit = match.group(1), match.group(2).lower()
    if unit in ("b", "byte", "bytes"):
        return f"{number} (a plain number of bytes)"
    power = _POWERS.get(unit[0])
    if power is None or unit[1:] not in ("", "b", "i", "ib"):
        return None
    binary = f"{number}{unit[0].upper()}i (2^{10 * power} bytes)"
    if unit[1:] in ("i", "ib"):
        return binary
    decimal_suffix = "k" if unit[0] == "k" else unit[0].upper()
    return f"{number}{decimal_suffix} (10^{3 * power} bytes) or {binary}"


def _too_large(value: Any) -> str:
    return f"{_shown(value)} is more than Kubernetes can count (a quantity is at most 8Ei bytes)"


def _shown(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters (a file may hold a number of a million digits)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _split(text: str) -> tuple[str, str]:
    for suffix in _BINARY:
        if text.endswith(suffix):
            return text[: -len(suffix)], suffix
    exponent = re.search(r"[eE][+-]?[0-9.]+$", text)
    if exponent:
        return text[: exponent.start()], "e" + exponent.group(0)[1:]
    if text and text[-1] in _DECIMAL:
        return text[:-1], text[-1]
    return text, ""


def parse_bytes(value: str | int | float) -> int:
    """A quantity as a whole, non-negative number of bytes (fractions round up, as Kubernetes does)."""
    amount = parse_quantity(value)
    if amount < 0:
        raise ValueError(f"{_shown(value)} is negative; a memory size must be 0 or more")
    if amount > MAX_BYTES:
        raise ValueError(_too_large(value))
    return int(amount.to_integral_value(rounding="ROUND_CEILING"))


MAX_BYTES = 2**63 - 1
"""The largest quantity Kubernetes stores as an integer (int64): 8 EiB less one byte."""


GiB = 2**30
MiB = 2**20


def format_gib(num_bytes: int | float) -> str:
    """Bytes for people: ``12.0 GiB`` (one decimal, binary units as nvidia-smi and Kubernetes use)."""
    return f"{num_bytes / GiB:.1f} GiB"


def format_memory(num_bytes: int | float) -> str:
    """Bytes for people at any size: ``12.0 GiB``, ``595 MiB``, ``0 B``."""
    if num_bytes >= GiB:
        return format_gib(num_bytes)
    if num_bytes >= MiB:
        return f"{num_bytes / MiB:.0f} MiB"
    return f"{num_bytes / 1024:.0f} KiB" if num_bytes >= 1024 else f"{num_bytes:.0f} B"


def format_gb(num_bytes: int | float) -> str:
    """Bytes in decimal gigabytes, the unit model download pages use (``9.0 GB``)."""
    return f"{num_bytes / 1e9:.1f} GB"


def format_quantity(num_bytes: int) -> str:
    """The shortest exact binary quantity for a byte count (``12282Mi``), for manifests and files."""
    for suffix, factor in sorted(_BINARY.items(), key=lambda kv: -kv[1]):
        if num_bytes and num_bytes % factor == 0:
            return f"{num_bytes // factor}{suffix}"
    return str(num_bytes)


def _to_bytes(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"{_shown(value)} is negative; a memory size must be 0 or more")
        if value > MAX_BYTES:
            raise ValueError(_too_large(value))
        return value
    return parse_bytes(value)


QUANTITY_JSON_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "integer"}, {"type": "string"}],
    "pattern": QUANTITY_PATTERN,
    "x-kubernetes-int-or-string": True,
}

# A byte count that files and CRs may write as a quantity; stored and compared as int bytes.
ByteQuantity = Annotated[
    int,
    BeforeValidator(_to_bytes),
    WithJsonSchema(QUANTITY_JSON_SCHEMA),
]


def _keep_text(value: Any) -> str | int:
    parse_bytes(value)  # validates; the user's spelling is kept for round trips
    if isinstance(value, float):
        return str(value)
    return value  # type: ignore[no-any-return]


# A quantity that the API keeps as the user wrote it (``9Gi`` stays ``9Gi`` in the CR).
Quantity = Annotated[
    str | int,
    BeforeValidator(_keep_text),
    PlainSerializer(lambda v: v, return_type=Any),
    WithJsonSchema(QUANTITY_JSON_SCHEMA),
]
