"""Kubernetes resource quantities (``12Gi``, ``12282Mi``, ``13e9``) as byte counts.

The planner, the inventory format and the API all speak quantities, and none of
them may import the kubernetes client, so the small grammar lives here. It follows
``k8s.io/apimachinery/pkg/api/resource``: a signed decimal number, then a binary
suffix (Ki … Ei), a decimal suffix (n u m "" k M G T P E) or an exponent (e3, E-2).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
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
    """Parse a quantity into an exact decimal; raise ``ValueError`` naming what is allowed."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not {QUANTITY_HELP}")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not {QUANTITY_HELP}")
        return Decimal(repr(value))
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not {QUANTITY_HELP}")
    text = value.strip()
    if not _QUANTITY_RE.match(text):
        raise ValueError(f"{value!r} is not {QUANTITY_HELP}")
    number, suffix = _split(text)
    try:
        amount = Decimal(number)
    except InvalidOperation as exc:  # pragma: no cover - the regex already ruled this out
        raise ValueError(f"{value!r} is not {QUANTITY_HELP}") from exc
    if suffix in _BINARY:
        return amount * _BINARY[suffix]
    if suffix in _DECIMAL:
        return amount * _DECIMAL[suffix]
    return amount * (Decimal(10) ** int(suffix[1:]))


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
        raise ValueError(f"{value!r} is negative; a memory size must be 0 or more")
    if amount > MAX_BYTES:
        raise ValueError(f"{value!r} is more than Kubernetes can count (a quantity is at most 8Ei bytes)")
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
            raise ValueError(f"{value!r} is negative; a memory size must be 0 or more")
        if value > MAX_BYTES:
            raise ValueError(f"{value!r} is more than Kubernetes can count (a quantity is at most 8Ei bytes)")
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
