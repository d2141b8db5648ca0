"""The spec hash never changes: a changed hash replaces every running pod on an operator upgrade.

``spec_hash`` encodes with orjson where its text is provably ``json.dumps``'s and with
``json.dumps`` otherwise. These tests hold every rendered object's hash to the formula as it was
first written (``json.dumps`` of the object without its label, keys sorted, no spaces): for every
engine, pinning mode and example, for specs whose free-form parts (tolerations, env ``valueFrom``)
and strings (image, env values, vLLM args) hold control characters, DEL, non-ASCII text, floats of
every form, NaN, infinities and integers beyond 64 bits; and they hold render to its promise that
everything outside those free-form parts is str, int, bool, None, dict or list (no float).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from gpupin import constants
from gpupin.api.v1alpha1 import LLMDeployment
from gpupin.loading import load_deployments, load_inventory
from gpupin.pinning import PINNING_MODES, PinningModeName
from gpupin.planner import Planner, plan
from gpupin.render import RenderConfig, render, spec_hash

from helpers import A10, EXAMPLES, deployment, inventory, models, node, workstation


def _hash_as_before(obj: dict[str, Any]) -> str:
    """``spec_hash`` as it was before orjson: json.dumps of the object without its hash label."""
    metadata = obj.get("metadata")
    labels = metadata.get("labels") if isinstance(metadata, dict) else None
    if isinstance(labels, dict) and constants.SPEC_HASH_LABEL in labels:
        labels = {k: v for k, v in labels.items() if k != constants.SPEC_HASH_LABEL}
        obj = {**obj, "metadata": {**metadata, "labels": labels}}  # type: ignore[dict-item]
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]


def _assert_hashes_as_before(objects: list[dict[str, Any]]) -> None:
    assert objects
    for obj in objects:
        label = obj["metadata"]["labels"][constants.SPEC_HASH_LABEL]
        assert label == _hash_as_before(obj) == spec_hash(obj), obj["metadata"]["name"]


def _assert_gpupin_values_plain(value: Any, path: str = "") -> None:
    """Outside tolerations and env valueFrom (passed through as the user wrote them), a rendered
    object holds only str (keys too), int, bool, None, dict and list."""
    if path.endswith(("/tolerations", "/valueFrom")):
        return
    if isinstance(value, dict):
        for key, item in value.items():
            assert type(key) is str, (path, key)
            _assert_gpupin_values_plain(item, f"{path}/{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _assert_gpupin_values_plain(item, f"{path}/{i}")
    else:
        assert value is None or type(value) in (str, int, bool), (path, value)


ODD_TEXT = [
    "plain",
    "tab\there, newline\n, CR\r, NUL\x00, bell\x07, US\x1f",
    "DEL\x7fhere",
    "café ☕ 日本語",
    'emoji 🚀 and a lone slash / and a backslash \\ and a quote "',
    "\u2028 line separator, \ufeff BOM",
]
ODD_NUMBERS: list[Any] = [
    0,
    -1,
    2**63 - 1,
    2**64,
    -(2**70),
    0.0,
    -0.0,
    0.5,
    100.0,
    1e16,
    1e-5,
    1e-7,
    1.5e300,
    5e-324,
    math.nan,
    math.inf,
    -math.inf,
    True,
    None,
]


def _odd_spec(text: str, number: Any, engine: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "engine": engine,
        "models": models("qwen2.5:7b") if engine == "ollama" else models("Qwen/Qwen2.5-3B-Instruct"),
        "image": f"registry.example/{text}",
        "env": [
            {"name": "NOTE", "value": text},
            {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": text, "key": "k", "n": number}}},
        ],
        "tolerations": [
            {"key": text, "operator": "Exists", "effect": "NoSchedule"},
            {"key": "k", "tolerationSeconds": number, "list": [number, {"x": number}]},
        ],
    }
    if engine == "vllm":
        spec["vllm"] = {"args": [f"--served-model-name-note={text}"], "gpuMemoryUtilization": 0.85}
    return spec


@pytest.mark.parametrize("pinning", PINNING_MODES)
def test_every_example_keeps_its_hash(pinning: PinningModeName) -> None:
    items = load_deployments(
        sorted((EXAMPLES / "seed").glob("*.yaml")) + sorted((EXAMPLES / "demo").glob("*.yaml"))
    )
    planner = Planner(load_inventory(EXAMPLES / "inventory" / "cluster.yaml")[0], pinning=pinning)
    config = RenderConfig(pinning=pinning, network_policy="namespace")
    objects = [obj for item in items for obj in render(item, planner.plan(item), config)]
    assert {"Pod", "Service", "NetworkPolicy"} <= {o["kind"] for o in objects}
    _assert_hashes_as_before(objects)
    for obj in objects:
        _assert_gpupin_values_plain(obj)


@pytest.mark.parametrize("engine", ["ollama", "vllm"])
@pytest.mark.parametrize("text", ODD_TEXT)
@pytest.mark.parametrize("number", ODD_NUMBERS, ids=repr)
def test_odd_text_and_numbers_keep_their_hash(engine: str, text: str, number: Any) -> None:
    item = deployment("odd", **_odd_spec(text, number, engine))
    result = plan(item, inventory(node("n", A10, A10)))
    assert result.placed, result.message
    objects = render(item, result, RenderConfig(network_policy="namespace"))
    _assert_hashes_as_before(objects)
    for obj in objects:
        _assert_gpupin_values_plain(obj)


def test_what_json_refuses_is_still_refused() -> None:
    """A date in a toleration (YAML reads ``2001-02-03`` as one) is not JSON: rendering refuses it
    as it always did, rather than hashing orjson's text of it."""
    import datetime

    item = deployment(
        "d", engine="ollama", models=models("qwen2.5:7b"), tolerations=[{"t": datetime.date(2001, 2, 3)}]
    )
    with pytest.raises(TypeError):
        render(item, plan(item, workstation()), RenderConfig())


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=st.text(max_size=12),
    free=_json_values,
    engine=st.sampled_from(["ollama", "vllm"]),
    pinning=st.sampled_from(PINNING_MODES),
)
def test_any_spec_keeps_its_hash(text: str, free: Any, engine: str, pinning: PinningModeName) -> None:
    spec = _odd_spec(text, 1, engine)
    spec["tolerations"].append({"key": "free", "value": free})
    spec["env"].append({"name": "FREE", "valueFrom": {"x": free}})
    try:
        item = LLMDeployment.model_validate(
            {
                "apiVersion": "gpupin.dev/v1alpha1",
                "kind": "LLMDeployment",
                "metadata": {"name": "p"},
                "spec": spec,
            }
        )
    except ValidationError:
        return  # text the API refuses (an image or an argument it does not take) renders nothing
    result = plan(item, inventory(node("n", A10, A10)), pinning=pinning)
    if not result.placed:
        return
    _assert_hashes_as_before(render(item, result, RenderConfig(pinning=pinning, network_policy="namespace")))
