"""Operator settings from flags and environment: --require-gpu and GPUPIN_REQUIRE_GPU.

Aspects: the default requires GPU memory; the flag wins over the variable; the variable takes
true/false spellings; anything else is a one-line error from `gpupin operator` (exit 2), not a
traceback.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from gpupin.controller import config


def _parse(argv: list[str]) -> config.OperatorConfig:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    return config.from_arguments(parser.parse_args(argv))


@pytest.mark.parametrize(
    ("env", "argv", "expected"),
    [
        (None, [], True),
        ("false", [], False),
        ("0", [], False),
        ("True", [], True),
        ("false", ["--require-gpu"], True),
        (None, ["--no-require-gpu"], False),
    ],
)
def test_require_gpu(
    monkeypatch: pytest.MonkeyPatch, env: str | None, argv: list[str], expected: bool
) -> None:
    if env is None:
        monkeypatch.delenv(config.ENV["require_gpu"], raising=False)
    else:
        monkeypatch.setenv(config.ENV["require_gpu"], env)
    settings = _parse(argv)
    assert settings.require_gpu is expected
    assert settings.render.require_gpu is expected


def test_a_bad_value_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(config.ENV["require_gpu"], "maybe")
    done = subprocess.run(
        [str(Path(sys.executable).parent / "gpupin"), "operator"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "gpupin: GPUPIN_REQUIRE_GPU='maybe': expected true or false"
