"""``gpupin inventory``: this node's GPUs as gpupin sees them (NVML, or ``--fake-inventory``), and
the GPU-source flags ``gpupin agent`` shares with it."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import yaml

from gpupin import modelcli
from gpupin.loading import InputError

EXIT_OK = 0
EXIT_REFUSED = 1


def add_inventory_command(sub: Any) -> None:
    """The ``inventory`` subcommand, on ``gpupin``'s subparsers."""
    inventory = sub.add_parser("inventory", help="print this node's GPUs as gpupin sees them")
    source_arguments(inventory)
    inventory.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")
    modelcli.add_debug_argument(inventory)
    inventory.set_defaults(run=_inventory)


def source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--node-name",
        default=os.environ.get("NODE_NAME") or socket.gethostname(),
        help="this node's name (env NODE_NAME, from the downward API; default the hostname)",
    )
    parser.add_argument(
        "--fake-inventory",
        default=os.environ.get("GPUPIN_FAKE_INVENTORY"),
        metavar="FILE",
        help="take the GPUs from this inventory file instead of NVML (env GPUPIN_FAKE_INVENTORY)",
    )


def source(args: argparse.Namespace) -> Any:
    from gpupin.agent.gpus import FakeSource, NvmlSource

    return FakeSource(Path(args.fake_inventory)) if args.fake_inventory else NvmlSource()


def _inventory(args: argparse.Namespace) -> int:
    from gpupin.agent.gpus import GPUReadError

    try:
        reading = source(args).read(args.node_name)
    except GPUReadError as exc:
        if args.fake_inventory:  # the file or --node-name is wrong: invalid input, not a failed read
            raise InputError(str(exc)) from None
        print(f"gpupin: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    node = reading.inventory
    if args.output == "json":
        print(json.dumps(node.model_dump(by_alias=True, exclude_none=True), indent=2))
    elif args.output == "yaml":
        yaml.safe_dump(
            {"nodes": [node.model_dump(by_alias=True, exclude_none=True)]}, sys.stdout, sort_keys=False
        )
    else:
        print(
            f"node {node.name}: driver {node.driver_version or '-'}, CUDA {node.cuda_driver_version or '-'}, "
            f"read in {reading.seconds * 1e3:.1f} ms"
        )
        rows = [("INDEX", "NAME", "MEMORY", "CC", "UUID", "PCI BUS ID", "MIG")]
        rows += [
            (
                str(g.index),
                g.name,
                f"{g.memory / 2**20:.0f} MiB",
                g.compute_capability,
                g.uuid,
                g.pci_bus_id or "-",
                "on" if g.mig_enabled else "off",
            )
            for g in node.gpus
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip())
    return EXIT_OK
