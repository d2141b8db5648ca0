"""Which GPUs a deployment may use, in the stages a refusal is explained by.

Pure and generic: the stages are the user's ``gpuSelector``, the engine's
:class:`ComputeRequirement`, the pinning mode's :class:`NodeRule` and the frozen nodes and GPUs
(:class:`~gpupin.kernel.state.Frozen`: they keep their pods, take no new ones) — each given as
data, so this module knows neither engines nor modes. When nothing is eligible,
:meth:`GPUFilter.explain_none` names the first stage that excluded everything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from gpupin import reasons
from gpupin.api.v1alpha1 import GPUSelector
from gpupin.inventory import short_name
from gpupin.kernel.prose import frozen_text, product_summary
from gpupin.kernel.state import ClusterState, NodeFacts, ProductKey, Slot
from gpupin.quantity import parse_bytes


class Refusal(Exception):
    """A plan cannot be placed: a reason from :mod:`gpupin.reasons` and a message that says what to do."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class ComputeRequirement:
    """The oldest compute capability an engine (with these settings) runs on."""

    min_cc: tuple[int, int]
    why: str
    """``vLLM needs compute capability 7.5 or newer``."""
    instead: str
    """What to do instead, a sentence: ``Use engine: ollama, which runs on older GPUs, …``."""


class NodeRule(Protocol):
    """A pinning mode's say on which nodes it can pin GPUs on."""

    @property
    def name(self) -> str: ...

    def node_usable(self, node: NodeFacts) -> bool: ...

    def unusable_message(self, nodes: Sequence[str]) -> str:
        """Why none of ``nodes`` (sorted names) can be used, and what to do."""
        ...


def norm(text: str) -> str:
    """Product names compared loosely: ``RTX-4070`` matches ``rtx 4070``."""
    return "".join(ch for ch in text.lower() if ch.isalnum())


def cc_tuple(text: str) -> tuple[int, int]:
    """``"8.6"`` → ``(8, 6)``."""
    major, minor = text.split(".")
    return int(major), int(minor)


class GPUFilter:
    """Eligibility of slots for one deployment, cached per product key where it can be."""

    def __init__(
        self,
        selector: GPUSelector | None,
        requirement: ComputeRequirement | None,
        node_rule: NodeRule,
        state: ClusterState,
    ) -> None:
        self.node_rule = node_rule
        self.requirement = requirement
        self.state = state
        self._key_cache: dict[ProductKey, bool] = {}
        self.products = {norm(p) for p in selector.products} if selector and selector.products else None
        self.min_memory = (
            parse_bytes(selector.min_memory) if selector and selector.min_memory is not None else 0
        )
        self.min_cc = (
            cc_tuple(selector.min_compute_capability)
            if selector and selector.min_compute_capability
            else None
        )
        self.nodes = set(selector.nodes) if selector and selector.nodes else None
        self.engine_min_cc = requirement.min_cc if requirement else None

    def selector_ok(self, slot: Slot) -> bool:
        gpu = slot.gpu
        if self.nodes is not None and slot.node not in self.nodes:
            return False
        if self.products is not None and not (
            norm(gpu.name) in self.products or norm(short_name(gpu.name)) in self.products
        ):
            return False
        if gpu.memory < self.min_memory:
            return False
        return self.min_cc is None or gpu.cc >= self.min_cc

    def engine_ok(self, slot: Slot) -> bool:
        return self.engine_min_cc is None or slot.cc >= self.engine_min_cc

    def pinning_ok(self, node: str) -> bool:
        return self.node_rule.node_usable(self.state.node_facts[node])

    def key_ok(self, key: ProductKey) -> bool:
        """Product-level checks (no node selector), cached per key."""
        ok = self._key_cache.get(key)
        if ok is None:
            name, memory, cc = key
            ok = (
                (
                    self.products is None
                    or norm(name) in self.products
                    or norm(short_name(name)) in self.products
                )
                and memory >= self.min_memory
                and (self.min_cc is None or cc_tuple(cc) >= self.min_cc)
                and (self.engine_min_cc is None or cc_tuple(cc) >= self.engine_min_cc)
            )
            self._key_cache[key] = ok
        return ok

    def node_ok(self, node: str) -> bool:
        """May new pods go on this node? (selector, pinning mode, not frozen)"""
        return (
            (self.nodes is None or node in self.nodes)
            and node not in self.state.frozen.nodes
            and self.pinning_ok(node)
        )

    def ok(self, slot: Slot) -> bool:
        """May a new pod take this GPU?"""
        return not slot.frozen and self.key_ok(slot.key) and self.node_ok(slot.node)

    def keeps(self, slot: Slot) -> bool:
        """May a pod already on this GPU stay? As :meth:`ok`, but a frozen GPU keeps its pods."""
        return (
            self.key_ok(slot.key)
            and (self.nodes is None or slot.node in self.nodes)
            and self.pinning_ok(slot.node)
        )

    def ensure_any(self) -> None:
        """Refuse, with the stage that excluded everything, when no GPU can take a new pod."""
        state = self.state
        if not any(
            self.key_ok(key) and any(self.node_ok(node) for node in state.key_nodes[key])
            for key in state.keys_by_memory
        ) or (state.frozen.gpus and not self.eligible()):
            raise self.explain_none()

    def frozen_note(self) -> str:
        """The GPUs this deployment could use that take no new pods, and why ("" when none)."""
        frozen = [s for s in self.state.by_order if s.frozen and self.keeps(s)]
        return frozen_text(frozen)

    def explain_none(self) -> Refusal:
        """Why no GPU at all is eligible (called only when that is so)."""
        slots = self.state.by_order
        if not slots:
            if self.state.mig_gpus:
                return Refusal(
                    reasons.NO_MATCHING_GPU,
                    f"every GPU known has MIG enabled ({len(self.state.mig_gpus)}); gpupin places on whole GPUs only",
                )
            return Refusal(
                reasons.NO_MATCHING_GPU,
                "no GPU is known in the cluster: no node carries the gpupin inventory annotation or GFD labels "
                "that describe its cards; is the gpupin agent running on the GPU nodes?",
            )
        selected = [s for s in slots if self.selector_ok(s)]
        if not selected:
            return Refusal(
                reasons.NO_MATCHING_GPU,
                f"gpuSelector matches none of the {len(slots)} GPUs known "
                f"({product_summary(slots)}); relax spec.gpuSelector",
            )
        capable = [s for s in selected if self.engine_ok(s)]
        if not capable and self.requirement is not None:
            need = ".".join(map(str, self.requirement.min_cc))
            return Refusal(
                reasons.UNSUPPORTED_COMPUTE_CAPABILITY,
                f"{self.requirement.why}; the eligible GPUs are {product_summary(selected, with_cc=True)} "
                f"(need ≥ {need}). {self.requirement.instead}",
            )
        pinnable = [s for s in capable if self.pinning_ok(s.node)]
        if not pinnable:
            return Refusal(
                reasons.PINNING_UNSUPPORTED,
                self.node_rule.unusable_message(sorted({s.node for s in capable})),
            )
        if not [s for s in pinnable if not s.frozen and s.node not in self.state.frozen.nodes]:
            return Refusal(
                reasons.NODE_INVENTORY_PROBLEM,
                f"no eligible GPU takes new pods now: {frozen_text(pinnable)}. It is placed when the node's "
                "GPU inventory is readable again",
            )
        return Refusal(reasons.NO_MATCHING_GPU, "no eligible GPU")  # pragma: no cover - callers check first

    def signature(self) -> tuple[object, ...]:
        """Deployments with the same signature may use the same GPUs."""
        return (
            frozenset(self.products) if self.products is not None else None,
            self.min_memory,
            self.min_cc,
            frozenset(self.nodes) if self.nodes is not None else None,
            self.engine_min_cc,
            self.node_rule.name,
        )

    def largest_eligible(self) -> int:
        """The memory of the largest GPU the deployment may use (bytes; 0 when none), kept per
        signature as :meth:`eligible` is."""
        cache = self.state.largest_cache
        key = self.signature()
        if key not in cache:
            cache[key] = max((s.gpu.memory for s in self.eligible()), default=0)
        return cache[key]

    def eligible(self) -> list[Slot]:
        """Every GPU the deployment may use, held or not. Scans the cluster once per signature
        (eligibility does not change as GPUs are taken); only refusal paths need it."""
        cache = self.state.eligible_cache
        key = self.signature()
        if key not in cache:
            cache[key] = [s for s in self.state.by_order if self.ok(s)]
        return cache[key]
