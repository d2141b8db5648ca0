"""Rendering the Helm chart with the real helm, for the chart tests (helm alone: no cluster).

``helm template`` renders the objects; ``helm install --dry-run=client -o json`` (no cluster
contacted) renders NOTES.txt too, which ``helm template`` (v4) cannot show. Tests that use these
are skipped with :data:`needs_helm` when helm has not been built (``make cluster-tools``).
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import REPO
from kwok import tools_bin

CHART = REPO / "charts" / "gpupin"
NAMESPACE = "gpupin-system"

needs_helm = pytest.mark.skipif(
    not (tools_bin() / "helm").exists(),
    reason=f"no helm at {tools_bin() / 'helm'}: `make cluster-tools` builds it (or set GPUPIN_TOOLS_BIN)",
)


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run helm; with ``check``, a failure raises AssertionError carrying helm's stderr."""
    result = subprocess.run(
        [str(tools_bin() / "helm"), *args], capture_output=True, text=True, check=False, timeout=120
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)}: {result.stderr}")
    return result


def value_args(sets: tuple[str, ...], values: dict[str, Any] | None, tmp: Path | None) -> list[str]:
    """helm's --set and -f arguments (``values`` is written to ``tmp``/values.yaml)."""
    args: list[str] = []
    for item in sets:
        args += ["--set", item]
    if values is not None:
        assert tmp is not None, "values need a directory to be written to"
        path = tmp / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        args += ["-f", str(path)]
    return args


def render(*sets: str, values: dict[str, Any] | None = None, tmp: Path | None = None) -> list[dict[str, Any]]:
    """The objects ``helm template`` renders (release gpupin in gpupin-system)."""
    args = ["template", "gpupin", str(CHART), "--namespace", NAMESPACE, *value_args(sets, values, tmp)]
    return [doc for doc in yaml.safe_load_all(helm(*args).stdout) if doc]


def notes(*sets: str, values: dict[str, Any] | None = None, tmp: Path | None = None) -> str:
    """NOTES.txt as ``helm install`` prints it, rendered client-side (no cluster contacted)."""
    args = ["install", "gpupin", str(CHART), "--namespace", NAMESPACE, "--dry-run=client", "-o", "json"]
    result = helm(*args, *value_args(sets, values, tmp), "--kubeconfig", "/nonexistent")
    notes_text = json.loads(result.stdout)["info"]["notes"]
    assert isinstance(notes_text, str)
    return notes_text


def failure(*sets: str, values: dict[str, Any] | None = None, tmp: Path | None = None) -> str:
    """helm template's error message for values that must fail (AssertionError if they render)."""
    args = ["template", "gpupin", str(CHART), *value_args(sets, values, tmp)]
    result = helm(*args, check=False)
    assert result.returncode != 0, f"rendered: {' '.join(sets)} {values}"
    return result.stderr


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The one object of ``kind`` (and ``name``) in ``docs``."""
    (found,) = [d for d in by_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    return found


def pod_spec(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The pod template's spec of the one Deployment or DaemonSet."""
    spec = one(docs, kind)["spec"]["template"]["spec"]
    assert isinstance(spec, dict)
    return spec


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def runs_on(pod: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether the scheduler may place ``pod`` (a pod spec) on a node with ``labels``, by its
    nodeSelector and required node affinity (In, NotIn, Exists, DoesNotExist, as Kubernetes
    reads them: NotIn and DoesNotExist match a node without the key; terms are ORed, the
    expressions of a term ANDed)."""
    if any(labels.get(k) != v for k, v in pod.get("nodeSelector", {}).items()):
        return False
    required = (
        pod.get("affinity", {}).get("nodeAffinity", {}).get("requiredDuringSchedulingIgnoredDuringExecution")
    )
    if not required:
        return True

    def matches(expression: dict[str, Any]) -> bool:
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        if operator == "In":
            return key in labels and labels[key] in values
        if operator == "NotIn":
            return key not in labels or labels[key] not in values
        if operator == "Exists":
            return key in labels
        if operator == "DoesNotExist":
            return key not in labels
        raise AssertionError(f"operator {operator} not read here")

    return any(
        all(matches(e) for e in term.get("matchExpressions", [])) for term in required["nodeSelectorTerms"]
    )


def ports(container: dict[str, Any]) -> dict[str, int]:
    """A container's ports: name → containerPort."""
    return {p["name"]: p["containerPort"] for p in container.get("ports", [])}


def balanced(expr: str) -> bool:
    """Brackets nest and quotes close (a PromQL parser is not available: a sanity check)."""
    stack: list[str] = []
    for char in re.sub(r'"[^"]*"', '""', expr):
        if char in "({[":
            stack.append(char)
        elif char in ")}]" and (not stack or "({["[")}]".index(char)] != stack.pop()):
            return False
    return not stack and expr.count('"') % 2 == 0


def chart_readme() -> Any:
    """hack/chart-readme.py as a module (a file name with a dash cannot be imported)."""
    spec = importlib.util.spec_from_file_location("chart_readme", REPO / "hack" / "chart-readme.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
