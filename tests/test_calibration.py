"""gpupin's estimates against what the engines really used (tests/fixtures/calibration.yaml, each
row with its public source; tests/calibration.py computes gpupin's side)."""

from __future__ import annotations

import re

import pytest

from calibration import TOLERANCE, rows, table
from helpers import REPO


@pytest.mark.parametrize("row", rows(), ids=lambda r: f"{r.model}-{r.kind}")
def test_estimate_is_within_ten_percent_of_the_real_figure(row: object) -> None:
    assert abs(row.error) <= TOLERANCE, (
        f"{row.model} ({row.kind}): gpupin {row.estimate:.4g}, real {row.real:.4g}"
    )  # type: ignore[attr-defined]


def test_there_are_at_least_twenty_rows_over_both_engines() -> None:
    found = rows()
    assert len(found) >= 20
    assert {r.engine for r in found} == {"ollama", "vllm"}


def test_readme_table_is_the_computed_one() -> None:
    readme = (REPO / "README.md").read_text()
    match = re.search(r"<!-- calibration:start -->\n(.*?)<!-- calibration:end -->", readme, re.S)
    assert match, "README.md lacks the calibration table markers"
    assert match.group(1) == table(), "run: .venv/bin/python tests/calibration.py and paste it into README.md"
