"""How pods are pinned to their GPUs, by mode: one module each, behind
:class:`~gpupin.pinning.base.PinningMode`. The operator runs in one mode (``--pinning``)."""

from __future__ import annotations

from typing import Literal, get_args

from gpupin.pinning.base import PinningMode
from gpupin.pinning.device_plugin import DevicePlugin
from gpupin.pinning.dra import DRA
from gpupin.pinning.visible_devices import VisibleDevices

PinningModeName = Literal["visible-devices", "dra", "device-plugin"]
"""The modes, for flags and types: a new mode adds its name here and its class below."""
PINNING_MODES: tuple[PinningModeName, ...] = get_args(PinningModeName)
MODES: dict[str, PinningMode] = {mode.name: mode for mode in (VisibleDevices(), DRA(), DevicePlugin())}
if tuple(MODES) != PINNING_MODES:  # pragma: no cover - a programming error, caught at import
    raise ImportError(f"pinning modes {tuple(MODES)} and their names {PINNING_MODES} differ")


def get(name: str) -> PinningMode:
    """The mode of that name; ValueError naming the modes when there is none."""
    try:
        return MODES[name]
    except KeyError:
        raise ValueError(f"pinning mode {name!r} is not one of {', '.join(PINNING_MODES)}") from None


__all__ = ["MODES", "PINNING_MODES", "PinningMode", "PinningModeName", "get"]
