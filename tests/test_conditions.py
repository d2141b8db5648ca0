"""The status conditions have metav1.Condition's schema, in the models and in the CRD.

Aspects: the CRD's condition schema is metav1.Condition's (required fields, patterns, limits,
formats, a list keyed by type); every condition type and reason gpupin writes matches its
pattern; a message over the limit is cut, not refused; a condition as earlier versions stored it
still reads; and the real API server holds a status to that schema: a full condition (at the
message limit) is stored, one a field short, over a limit, off a pattern or with a type twice is
refused (422).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from gpupin import reasons
from gpupin.api import crdgen
from gpupin.api.v1alpha1 import CONDITION_REASON_PATTERN, CONDITION_TYPE_PATTERN, Condition
from gpupin.controller import status
from gpupin.kube import ApiError

from kwok import Env

# metav1.Condition (k8s.io/apimachinery/pkg/apis/meta/v1/types.go), as its kubebuilder markers say
METAV1_TYPE = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
METAV1_REASON = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _strip(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema without descriptions (words, not rules)."""
    return {k: _strip(v) if isinstance(v, dict) else v for k, v in schema.items() if k != "description"}


def test_the_crds_condition_schema_is_metav1s() -> None:
    conditions = crdgen.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"][
        "properties"
    ]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    item = conditions["items"]
    assert sorted(item["required"]) == sorted(["type", "status", "lastTransitionTime", "reason", "message"])
    assert {k: _strip(v) for k, v in item["properties"].items()} == {
        "type": {"type": "string", "maxLength": 316, "pattern": METAV1_TYPE},
        "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
        "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
        "lastTransitionTime": {"type": "string", "format": "date-time"},
        "reason": {"type": "string", "maxLength": 1024, "minLength": 1, "pattern": METAV1_REASON},
        "message": {"type": "string", "maxLength": 32768},
    }


def test_every_type_and_reason_gpupin_writes_matches() -> None:
    values = {v for n, v in vars(reasons).items() if n.isupper() and isinstance(v, str)}
    values |= {v for n, v in vars(status).items() if n.startswith("DEGRADED_")}
    assert len(values) > 30
    for value in values:
        assert re.fullmatch(CONDITION_REASON_PATTERN, value), value
        assert re.fullmatch(CONDITION_TYPE_PATTERN, value), value


def test_a_long_message_is_cut_not_refused() -> None:
    written = status.failed_status({"metadata": {"generation": 3}}, reasons.POLICY_REFUSED, "x" * 40000, NOW)
    (placed,) = written["conditions"]
    assert len(placed["message"]) == 32768 and placed["message"].endswith("…")
    assert Condition.model_validate(placed).observed_generation == 3
    assert placed["lastTransitionTime"] == "2026-01-02T03:04:05Z"


def test_conditions_as_stored_before_still_read() -> None:
    stored = {
        "type": "Degraded",
        "status": "False",
        "reason": "AsExpected",
        "message": "",
        "lastTransitionTime": "2025-06-01T10:00:00Z",
        "observedGeneration": 1,
    }
    assert Condition.model_validate(stored).message == ""
    assert Condition.model_validate({k: v for k, v in stored.items() if k != "observedGeneration"})
    for missing in ("lastTransitionTime", "message", "reason"):
        with pytest.raises(ValidationError, match=missing):
            Condition.model_validate({k: v for k, v in stored.items() if k != missing})


# -- the API server ---------------------------------------------------------------------------


def _condition(**changes: Any) -> dict[str, Any]:
    return {
        "type": "Placed",
        "status": "True",
        "reason": "Placed",
        "message": "placed",
        "lastTransitionTime": "2026-01-02T03:04:05Z",
        "observedGeneration": 1,
        **changes,
    }


def test_the_api_server_holds_conditions_to_the_schema(env: Env) -> None:
    env.apply("held", models=[{"name": "qwen2.5:14b"}])
    kube = env.cluster.kube
    kube.patch_status(env.namespace, "held", {"conditions": [_condition(message="m" * 32768)]})
    stored = env.cluster.deployment(env.namespace, "held")["status"]["conditions"]
    assert [len(c["message"]) for c in stored] == [32768]
    refused = {
        "no lastTransitionTime": [{k: v for k, v in _condition().items() if k != "lastTransitionTime"}],
        "no message": [{k: v for k, v in _condition().items() if k != "message"}],
        "a message over the limit": [_condition(message="m" * 32769)],
        "a reason off the pattern": [_condition(reason="Not placed")],
        "an empty reason": [_condition(reason="")],
        "a time that is not one": [_condition(lastTransitionTime="yesterday")],
        "a negative generation": [_condition(observedGeneration=-1)],
        "a type twice": [_condition(), _condition(status="False")],
    }
    for what, conditions in refused.items():
        with pytest.raises(ApiError) as caught:
            kube.patch_status(env.namespace, "held", {"conditions": conditions})
        assert caught.value.status == 422, what
    assert env.cluster.deployment(env.namespace, "held")["status"]["conditions"] == stored
