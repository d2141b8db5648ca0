"""What `gpupin plan` writes, and how: the three formats agree, each is written at once, and the
fast writers give what the standard library and PyYAML would.

Aspects: `-o json` manifests and `-o yaml` documents are the same data; `-o yaml` has no anchors
even for objects that appear twice, and reads back as what was rendered; the table renders no
manifests; each format is one write to stdout (with PYTHONUNBUFFERED=1 each write is a system
call); `json_text` is `json.dumps(indent=2, ensure_ascii=False)` byte for byte (orjson), and `yaml_text` libyaml's safe dump
without aliases, including the shapes they leave to the standard writers.
"""

from __future__ import annotations

import datetime
import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpupin import planoutput
from gpupin.cli import main
from gpupin.planoutput import json_text, yaml_text

from helpers import EXAMPLES, strictly_equal

CLUSTER = str(EXAMPLES / "inventory" / "cluster.yaml")


@pytest.fixture
def deployments(tmp_path: Path) -> str:
    """Every seed example in one file (Ollama and vLLM), and one that fits nowhere."""
    path = tmp_path / "all.yaml"
    texts = [p.read_text() for p in sorted((EXAMPLES / "seed").glob("*.yaml"))]
    texts.append(
        "apiVersion: gpupin.dev/v1alpha1\nkind: LLMDeployment\nmetadata: {name: huge}\n"
        "spec: {engine: ollama, models: [{name: private/huge, vram: 900Gi}]}\n"
    )
    path.write_text("---\n".join(texts))
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["--debug", *args])
    out, _ = capsys.readouterr()
    return code, out


def test_json_and_yaml_hold_the_same_manifests(capsys: pytest.CaptureFixture[str], deployments: str) -> None:
    code, out = run(capsys, "plan", "-f", deployments, "--inventory", CLUSTER, "-o", "json")
    manifests = json.loads(out)["manifests"]
    kinds = {m["kind"] for m in manifests}
    assert code == 1 and {"Pod", "Service"} <= kinds  # some placed, some refused
    code, out = run(capsys, "plan", "-f", deployments, "--inventory", CLUSTER, "-o", "yaml")
    assert code == 1 and out.startswith("# default/")  # the refused ones first, as comments
    assert [doc for doc in yaml.safe_load_all(out) if doc is not None] == manifests


def test_yaml_spells_out_objects_that_appear_twice(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, deployments: str
) -> None:
    """A renderer that hands the same mapping and list to two objects still gets no &id001/*id001."""
    shared = {"drop": ["ALL"]}
    sizes = ["1", "2"]
    render = planoutput.render

    def sharing(*args: Any) -> list[dict[str, Any]]:
        objects = render(*args)
        for obj in objects:
            obj["metadata"]["annotations"] = {"shared": "yes"}
            obj["shared"] = {"capabilities": shared, "sizes": sizes, "again": shared}
        return objects

    monkeypatch.setattr(planoutput, "render", sharing)
    code, out = run(capsys, "plan", "-f", deployments, "--inventory", CLUSTER, "-o", "yaml")
    assert code == 1 and out.count("drop:") >= 4
    events = list(yaml.parse(out, Loader=yaml.CSafeLoader))
    assert not [e for e in events if isinstance(e, yaml.AliasEvent) or getattr(e, "anchor", None)]
    documents = [doc for doc in yaml.safe_load_all(out) if doc is not None]
    assert documents and all(
        doc["shared"] == {"capabilities": shared, "sizes": sizes, "again": shared} for doc in documents
    )


def test_the_table_renders_no_manifests(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, deployments: str
) -> None:
    def refuse(*args: Any) -> list[dict[str, Any]]:
        raise AssertionError("the table rendered manifests")

    monkeypatch.setattr(planoutput, "render", refuse)
    code, out = run(capsys, "plan", "-f", deployments, "--inventory", CLUSTER)
    assert code == 1 and out.splitlines()[0].split()[0] == "DEPLOYMENT"
    with pytest.raises(AssertionError, match="rendered manifests"):
        main(["--debug", "plan", "-f", deployments, "--inventory", CLUSTER, "-o", "json"])


@pytest.mark.parametrize("output", ["table", "json", "yaml"])
def test_each_format_is_one_write(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], deployments: str, output: str
) -> None:
    class Counting(io.StringIO):
        writes = 0

        def write(self, text: str) -> int:
            Counting.writes += 1
            return super().write(text)

    stdout = Counting()
    monkeypatch.setattr("sys.stdout", stdout)
    main(["--debug", "plan", "-f", deployments, "--inventory", CLUSTER, "-o", output])
    assert Counting.writes == 1 and len(stdout.getvalue()) > 1000


SHAPES: list[Any] = [
    {},
    [],
    "text",
    7,
    None,
    {"a": {}, "b": [], "c": [{}], "d": [[]], "e": {"f": {"g": [1, 2.5, -0.0, True, None, "x"]}}},
    [{"name": "x", "value": "é ü 中"}, {"name": "y", "value": 'q"uote\\back\nline\ttab\x00'}],
    {"floats": [1e300, -1.5e-7, 0.1, float("inf"), float("-inf"), float("nan")], "big": 10**30},
    {"keys": {1: "int", 2.5: "float", False: "bool", None: "none"}},  # json.dumps converts keys
    {"tuple": (1, (2, 3), []), "nested": {"t": ("a",)}},
    [[[[1]]], [{"a": [{"b": {}}]}]],
]


@pytest.mark.parametrize("data", SHAPES)
def test_json_text_is_json_dumps_indent_2_in_utf_8(data: Any) -> None:
    assert json_text(data) == json.dumps(data, indent=2, ensure_ascii=False)


def test_json_text_numbers_read_back_and_what_json_lacks_is_null() -> None:
    text = json_text({"floats": [1e300, -1.5e-7, 0.1, -0.0, float("inf"), float("nan")], "int": 2**63 - 1})
    assert json.loads(text) == {"floats": [1e300, -1.5e-7, 0.1, -0.0, None, None], "int": 2**63 - 1}


def test_json_text_refuses_what_json_dumps_refuses() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        json_text({"a": [1, {"b": {1, 2}}]})


class _NoAliases(yaml.CSafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


YAML_DOCUMENTS: list[Any] = [
    {"a": {}, "b": [], "c": [{}], "d": [[]], "e": {"f": [1, 2.5, -0.0, True, False, None, "x", ""]}},
    {"strings": ["true", "1", "1.5", "null", "~", "yes", "0x1f", "2001-12-14", "a: b", "- x", "#", "'q'"]},
    {"multiline": "line one\nline two\n", "long": "word " * 300, "unicode": "é ü 中", "tab": "a\tb"},
    {1: "int key", False: "bool key", None: "null key", 2.5: "float key"},
    {"floats": [1e300, -1.5e-7, 0.1, float("inf"), float("-inf"), float("nan"), 1e20]},
    "a bare string",
    [[1, [2, [3]]], {"k": [{"x": 1}, {"y": 2}]}],
    {"date": datetime.date(2001, 12, 14)},  # PyYAML's representer writes what events do not
]


def test_yaml_text_is_libyamls_safe_dump_without_aliases() -> None:
    expected = yaml.dump_all(YAML_DOCUMENTS, Dumper=_NoAliases, sort_keys=False, width=planoutput.YAML_WIDTH)
    assert yaml_text(YAML_DOCUMENTS) == expected
    assert strictly_equal(list(yaml.safe_load_all(expected)), YAML_DOCUMENTS)
    assert yaml_text([]) == ""


def test_yaml_text_refuses_what_safe_dump_refuses() -> None:
    assert yaml_text([{"a": {1, 2}}]) == yaml.safe_dump_all([{"a": {1, 2}}])  # !!set, as safe_dump
    with pytest.raises(yaml.representer.RepresenterError, match="cannot represent an object"):
        yaml_text([{"a": object()}])
