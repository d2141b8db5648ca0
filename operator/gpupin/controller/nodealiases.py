"""Pure: GFD stand-in GPUs that pods still name, matched to the GPUs the agent now reports."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from gpupin.inventory import Inventory, gfd_uuid, same_name
from gpupin.kernel.state import GPUAlias
from gpupin.placement import Placement


def aliases_from_placements(
    inventory: Inventory, placements: Iterable[Placement], known: Mapping[str, GPUAlias]
) -> dict[str, GPUAlias]:
    """GFD stand-ins that pods still name on a node the agent now reports (after an operator
    restart the node's GFD past is known only from its pods): ``GFD-<node>-<i>`` is the node's GPU
    at index ``i`` when the product names match."""
    nodes = {n.name: n for n in inventory.nodes}
    present = {gpu.uuid for n in inventory.nodes for gpu in n.gpus}
    result = dict(known)
    for placement in placements:
        node = nodes.get(placement.node)
        if node is None:
            continue
        for held in placement.gpus:
            if held.uuid in present or held.uuid in result or held.uuid != gfd_uuid(node.name, held.index):
                continue
            target = next((g for g in node.gpus if g.index == held.index and g.pinnable_by_uuid), None)
            if target is None:
                continue
            if same_name(held.name, target.name):
                was = target.model_copy(update={"uuid": held.uuid, "name": held.name})
                result[held.uuid] = GPUAlias(target.uuid, was)
    return result
