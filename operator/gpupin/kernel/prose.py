"""Words for refusals: GPUs, groups and holders as a person reads them.

Pure and generic. ``RTX 4070 12.0 GiB + RTX 2060 6.0 GiB``; ``2 × L4 22.5 GiB``;
``team/chat holds 20.0 GiB of A100 80.0 GiB (GPU 0 on node-a)``; a GPU held exclusively (a
vLLM pod owns its GPUs, whatever fraction it uses) is said to be, with what it uses:
``team/chat holds A100 80.0 GiB (GPU 0 on node-a) exclusively (it uses 20.0 GiB)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from gpupin.inventory import short_name
from gpupin.kernel.state import Slot
from gpupin.quantity import format_gib


def count(n: int, noun: str) -> str:
    return f"a {noun}" if n == 1 else f"{n} {noun}s"


def product_summary(slots: Sequence[Slot], with_cc: bool = False) -> str:
    counts: dict[str, int] = {}
    for slot in slots:
        label = f"{short_name(slot.gpu.name)} {format_gib(slot.gpu.memory)}"
        if with_cc:
            label += f" CC {slot.gpu.compute_capability}"
        counts[label] = counts.get(label, 0) + 1
    return ", ".join(f"{n} × {label}" for label, n in sorted(counts.items()))


def group_text(slots: Sequence[Slot]) -> str:
    return " + ".join(f"{short_name(s.gpu.name)} {format_gib(s.gpu.memory)}" for s in slots)


def holders_text(slots: Iterable[Slot], limit: int = 3, exclude: str = "") -> str:
    """Who holds memory on these GPUs, less ``exclude`` (the deployment being planned: its own
    models placed earlier in the same plan are not "others"); only what is shown is formatted."""
    owners: dict[str, list[Slot]] = {}
    for slot in slots:
        for owner in slot.holders:
            if owner == exclude:
                continue
            owners.setdefault(owner, []).append(slot)
    parts = []
    for owner in sorted(owners)[:limit]:
        items = [_held(s, owner) for s in owners[owner][:2]]
        more = len(owners[owner]) - len(items)
        parts.append(f"{owner} holds {', '.join(items)}" + (f" and {more} more GPU(s)" if more else ""))
    if len(owners) > limit:
        parts.append(f"{len(owners) - limit} more deployment(s)")
    return "; ".join(parts)


def _held(slot: Slot, owner: str) -> str:
    if owner in slot.exclusive_holders:
        return f"{slot.describe()} exclusively (it uses {format_gib(slot.holders[owner])})"
    return f"{format_gib(slot.holders[owner])} of {slot.describe()}"


def frozen_text(slots: Sequence[Slot], limit: int = 3) -> str:
    """Why these GPUs take no new pods, one clause per reason: ``node b: annotation … is not JSON
    (since …) (2 × A10 23.0 GiB)``; "" for none."""
    by_why: dict[str, list[Slot]] = {}
    for slot in slots:
        if slot.frozen:
            by_why.setdefault(slot.frozen, []).append(slot)
    parts = [
        f"node {members[0].node}: {why} ({product_summary(members)})"
        for why, members in sorted(by_why.items(), key=lambda kv: kv[1][0].order)
    ]
    if len(parts) > limit:
        parts = [*parts[:limit], f"{len(parts) - limit} more"]
    return "; ".join(parts)
