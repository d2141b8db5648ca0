"""The batch planner against an exact solver (OR-Tools CP-SAT) on the small seeded fleets of
``tests/packing_model.py``: a floor that a change to the placement kernel must keep.

The full comparison (60 fleets up to 40 nodes, first come first served beside it) is the
benchmark, ``make bench-packing``; its figures are in the README. Here: the 15 fleets of at most
12 nodes, where CP-SAT proves its optimum in about a second each.
"""

from __future__ import annotations

import statistics

import pytest

from gpupin.packing import plan_all
from gpupin.planner import Planner

from packing_model import exact, fleet, violations

SMALL_FLEETS = [2, 6, 10, 14, 19, 28, 31, 32, 37, 42, 43, 46, 49, 55, 57]
"""The seeds whose fleets have at most 12 nodes."""


@pytest.fixture(scope="module")
def ratios() -> dict[int, float]:
    result = {}
    for seed in SMALL_FLEETS:
        case = fleet(seed)
        assert len(case.inventory.nodes) <= 12
        plans = plan_all(Planner(case.inventory), case.deployments)
        assert not violations(case, plans), seed
        placed = sum(p.placed for p in plans)
        optimum = exact(case, time_limit=60, hint=plans)
        assert optimum.placed >= placed  # the solver, started from gpupin's layout, never does worse
        result[seed] = placed / optimum.bound
    return result


def test_no_small_fleet_is_below_nine_tenths_of_the_optimum(ratios: dict[int, float]) -> None:
    assert min(ratios.values()) >= 0.90, ratios


def test_the_small_fleets_average_within_three_percent_of_the_optimum(ratios: dict[int, float]) -> None:
    assert statistics.mean(ratios.values()) >= 0.97, ratios
