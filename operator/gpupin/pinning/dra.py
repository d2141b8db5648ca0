"""``dra``: a ResourceClaimTemplate per pod whose CEL selectors name each GPU's UUID.

The scheduler allocates exactly those devices through the NVIDIA DRA driver. A claim gives a GPU
to one pod, so none is shared; GPUs known only from GFD labels carry no UUID and cannot be named.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gpupin import constants
from gpupin.kernel.state import NodeFacts
from gpupin.pinning.base import PinningMode
from gpupin.placement import Placement

CLAIM_NAME = "gpus"

_CEL_ESCAPES = {"\\": "\\\\", "'": "\\'", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def cel_string(value: str) -> str:
    """``value`` as a CEL string literal (single-quoted) that denotes exactly ``value``, whatever it
    holds: printable ASCII as is, quotes and backslashes escaped, every other character as
    ``\\uXXXX`` or ``\\UXXXXXXXX`` (CEL spec, "String and Bytes Values"). So a value can never end
    the literal and add CEL of its own. Every text gpupin puts into CEL goes through here.

    Raises ``ValueError`` for a lone surrogate, which no CEL string can hold."""
    out = []
    for char in value:
        code = ord(char)
        if char in _CEL_ESCAPES:
            out.append(_CEL_ESCAPES[char])
        elif 0x20 <= code < 0x7F:
            out.append(char)
        elif 0xD800 <= code <= 0xDFFF:
            raise ValueError(f"a CEL string cannot hold a lone surrogate (U+{code:04X})")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "'" + "".join(out) + "'"


def uuid_selector(uuid: str) -> str:
    """The CEL expression selecting the NVIDIA DRA driver's device of this UUID."""
    return f"device.attributes[{cel_string(constants.DRA_DRIVER)}].uuid == {cel_string(uuid)}"


class DRA(PinningMode):
    name = "dra"
    shares_gpus = False

    def node_usable(self, node: NodeFacts) -> bool:
        return node.pinnable_by_uuid

    def unusable_message(self, nodes: Sequence[str]) -> str:
        return (
            "pinning mode dra selects GPUs by UUID, and the eligible GPUs are known only from GFD labels, "
            "which carry none; run the gpupin agent on those nodes"
        )

    def add_resources(self, resources: dict[str, Any], placement: Placement) -> None:
        resources["claims"] = [{"name": CLAIM_NAME}]

    def pod_fields(self, placement: Placement, runtime_class_name: str | None) -> dict[str, Any]:
        return {"resourceClaims": [{"name": CLAIM_NAME, "resourceClaimTemplateName": placement.pod}]}

    def objects(self, namespace: str, placement: Placement, labels: dict[str, str]) -> list[dict[str, Any]]:
        """One request per planned GPU, each selecting that GPU by UUID."""
        requests = [
            {
                "name": f"gpu-{i}",
                "exactly": {
                    "deviceClassName": constants.DRA_DEVICE_CLASS,
                    "selectors": [{"cel": {"expression": uuid_selector(gpu.uuid)}}],
                },
            }
            for i, gpu in enumerate(placement.gpus)
        ]
        return [
            {
                "apiVersion": "resource.k8s.io/v1",
                "kind": "ResourceClaimTemplate",
                "metadata": {"name": placement.pod, "namespace": namespace, "labels": labels},
                "spec": {"spec": {"devices": {"requests": requests}}},
            }
        ]
