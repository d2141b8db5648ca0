"""`gpupin plan`: exit codes, output formats, and the messages for invalid input.

Aspects: exit 0 (all placed) / 1 (any refused) / 2 (invalid input); the seed's four
outcomes from the bundled examples; the `-o json` contract scripts depend on; `-o yaml`
manifests; `--inventory` from `kubectl get nodes -o yaml`; every kind of bad input gets
one line naming the file and the field and what is allowed — never a traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gpupin import constants
from gpupin.cli import main

from helpers import EXAMPLES, FIXTURES, RTX_2060, RTX_4070, node

WORKSTATION = str(EXAMPLES / "inventory" / "workstation.yaml")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["--debug", *args])  # a bug raises here, with its traceback, instead of exit 3
    out, err = capsys.readouterr()
    return code, out, err


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


DEPLOYMENT = """\
apiVersion: gpupin.dev/v1alpha1
kind: LLMDeployment
metadata:
  name: chat
spec:
{spec}
"""


@pytest.mark.parametrize(
    ("example", "code", "outcome", "reason", "gpus"),
    [
        ("1-ollama-both-gpus.yaml", 0, "Placed", "Placed", [[0], [1]]),
        ("2-ollama-qwen32b.yaml", 1, "Refused", "InsufficientVRAM", []),
        ("3-vllm-tp2.yaml", 1, "Refused", "HeterogeneousTensorParallel", []),
        ("4-vllm-tp1.yaml", 0, "Placed", "Placed", [[0]]),
        ("5-vllm-phi4.yaml", 1, "Refused", "InsufficientVRAM", []),
    ],
)
def test_seed_examples(
    capsys: pytest.CaptureFixture[str],
    example: str,
    code: int,
    outcome: str,
    reason: str,
    gpus: list[list[int]],
) -> None:
    got, out, _ = run(
        capsys, "plan", "-f", str(EXAMPLES / "seed" / example), "--inventory", WORKSTATION, "-o", "json"
    )
    assert got == code
    (result,) = json.loads(out)["deployments"]
    assert (result["outcome"], result["reason"]) == (outcome, reason)
    assert sorted([g["index"] for g in p["gpus"]] for p in result["placements"]) == gpus


def test_json_shape_is_the_contract(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "plan",
        "-f",
        str(EXAMPLES / "seed" / "1-ollama-both-gpus.yaml"),
        "--inventory",
        WORKSTATION,
        "-o",
        "json",
    )
    assert code == 0
    data = json.loads(out)
    assert set(data) == {"deployments", "manifests"}
    (item,) = data["deployments"]
    assert set(item) == {
        "name",
        "namespace",
        "engine",
        "outcome",
        "reason",
        "message",
        "placements",
        "models",
    }
    for sized in item["models"]:  # added by the model-metadata work: additive, as the contract allows
        assert set(sized) == {"name", "vramBytes", "source", "origin", "readAt"}
    assert (item["name"], item["namespace"], item["engine"]) == ("assistant", "default", "ollama")
    for placement in item["placements"]:
        assert set(placement) == {"pod", "node", "models", "gpus"}
        for gpu in placement["gpus"]:
            assert set(gpu) == {"index", "uuid", "name", "vramBytes"}
            assert isinstance(gpu["vramBytes"], int) and gpu["uuid"].startswith("GPU-")
    kinds = sorted(m["kind"] for m in data["manifests"])
    assert kinds == ["Pod", "Pod", "Service", "Service", "Service"]


def test_table_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "plan", "-f", str(EXAMPLES / "seed" / "1-ollama-both-gpus.yaml"), "--inventory", WORKSTATION
    )
    assert code == 0
    assert out.splitlines()[0].split() == ["DEPLOYMENT", "ENGINE", "OUTCOME", "REASON", "PODS", "GPUS"]
    assert "GPU 0 RTX 4070" in out and "GPU 1 RTX 2060" in out and "qwen2.5:14b" in out


def test_yaml_output_is_the_manifests(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    both = _write(
        tmp_path,
        "both.yaml",
        (EXAMPLES / "seed" / "4-vllm-tp1.yaml").read_text()
        + "---\n"
        + (EXAMPLES / "seed" / "2-ollama-qwen32b.yaml").read_text(),
    )
    code, out, _ = run(
        capsys, "plan", "-f", both, "--inventory", WORKSTATION, "-o", "yaml", "--pinning", "dra"
    )
    assert code == 1
    assert "# default/big-assistant: Refused (InsufficientVRAM)" in out
    kinds = [doc["kind"] for doc in yaml.safe_load_all(out) if doc]
    assert kinds == ["ResourceClaimTemplate", "Pod", "Service"]


def test_yaml_output_spells_every_object_out(capsys: pytest.CaptureFixture[str]) -> None:
    """No YAML anchors (&id001/*id001): every container has its own securityContext, written out."""
    code, out, _ = run(
        capsys,
        "plan",
        "-f",
        str(EXAMPLES / "seed" / "1-ollama-both-gpus.yaml"),
        "--inventory",
        WORKSTATION,
        "-o",
        "yaml",
    )
    assert code == 0 and out.count("securityContext:") >= 4
    assert "&id" not in out and "*id" not in out


def test_later_deployments_see_what_earlier_ones_took(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    both = _write(
        tmp_path,
        "both.yaml",
        (EXAMPLES / "seed" / "4-vllm-tp1.yaml").read_text()
        + "---\n"
        + (EXAMPLES / "seed" / "1-ollama-both-gpus.yaml").read_text(),
    )
    code, out, _ = run(capsys, "plan", "-f", both, "--inventory", WORKSTATION, "-o", "json")
    assert code == 1
    first, second = json.loads(out)["deployments"]
    assert first["outcome"] == "Placed" and second["reason"] == "InsufficientGPUs"
    assert "default/chat holds" in second["message"]


def test_inventory_from_kubectl_get_nodes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    node_list = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": "workstation",
                    "annotations": {
                        constants.INVENTORY_ANNOTATION: node(
                            "workstation", RTX_4070, RTX_2060
                        ).to_annotation()
                    },
                },
            },
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "cpu-node"}},
        ],
    }
    nodes = _write(tmp_path, "nodes.yaml", yaml.safe_dump(node_list))
    example = str(EXAMPLES / "seed" / "1-ollama-both-gpus.yaml")
    code, out, _ = run(capsys, "plan", "-f", example, "--inventory", nodes, "-o", "json")
    assert code == 0
    placements = json.loads(out)["deployments"][0]["placements"]
    assert sorted(p["gpus"][0]["name"] for p in placements) == [
        "NVIDIA GeForce RTX 2060",
        "NVIDIA GeForce RTX 4070",
    ]


CASE_04 = FIXTURES / "cases" / "04-gfd-mig-single-labels"


@pytest.mark.parametrize("inventory_file", ["inventory.yaml", "inventory-agent-for-comparison.yaml"])
def test_mig_node_is_refused_from_gfd_labels_as_from_the_agent(
    capsys: pytest.CaptureFixture[str], inventory_file: str
) -> None:
    # vllm-project/vllm#5107's machine: one A100 in MIG mode (two 3g.40gb instances). GFD under
    # mig.strategy=single counts the instances, so the labels once read as two whole GPUs and
    # pods were pinned to indices 0 and 1 of a node that has one card.
    code, out, err = run(
        capsys,
        "plan",
        "-f",
        str(CASE_04 / "deployments.yaml"),
        "--inventory",
        str(CASE_04 / inventory_file),
        "-o",
        "json",
    )
    assert code == 1
    plan = json.loads(out)
    (result,) = plan["deployments"]
    assert (result["outcome"], result["reason"]) == ("Refused", "NoMatchingGPU")
    assert result["placements"] == []
    assert not [m for m in plan["manifests"] if m["kind"] == "Pod"]
    if inventory_file == "inventory.yaml":
        assert "skipped node gpu-node-1: GFD labels describe MIG devices" in err
        assert "gpupin does not place on MIG slices" in err and "run the gpupin agent" in err


def test_whole_gpu_gfd_node_is_still_placed(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # the case's node with MIG off and two whole A100s: the same GFD path places both replicas where
    # the kubelet picks the cards (device-plugin); visible-devices, which would pin by an index GFD
    # does not give, refuses the node and says what to do
    nodes = yaml.safe_load((CASE_04 / "inventory.yaml").read_text())
    labels = nodes["items"][0]["metadata"]["labels"]
    for key in ("nvidia.com/gpu.slices.gi", "nvidia.com/gpu.slices.ci"):
        del labels[key]
    labels["nvidia.com/gpu.product"] = "NVIDIA-A100-SXM4-80GB"
    labels["nvidia.com/gpu.memory"] = "81920"  # mig.strategy=single stays, as the GPU Operator leaves it
    path = _write(tmp_path, "nodes.yaml", yaml.safe_dump(nodes))
    code, out, err = run(
        capsys, "plan", "-f", str(CASE_04 / "deployments.yaml"), "--inventory", path, "-o", "json"
    )
    assert code == 1
    (result,) = json.loads(out)["deployments"]
    assert (result["outcome"], result["reason"]) == ("Refused", "PinningUnsupported")
    assert "run the gpupin agent" in result["message"]
    code, out, err = run(
        capsys,
        "plan",
        "-f",
        str(CASE_04 / "deployments.yaml"),
        "--inventory",
        path,
        "--pinning",
        "device-plugin",
        "-o",
        "json",
    )
    assert code == 0, err
    (result,) = json.loads(out)["deployments"]
    assert result["outcome"] == "Placed"
    assert sorted([g["index"] for g in p["gpus"]] for p in result["placements"]) == [[0], [1]]
    assert "skipped" not in err


BAD_INPUTS = [
    (
        "malformed YAML",
        "deploy.yaml",
        "apiVersion: gpupin.dev/v1alpha1\nkind: [LLMDeployment\n",
        None,
        ["deploy.yaml", "line 3", "not valid YAML"],
    ),
    (
        "tensorParallelSize 0",
        "deploy.yaml",
        DEPLOYMENT.format(spec="  models: [{name: a/b}]\n  tensorParallelSize: 0"),
        None,
        [
            "deploy.yaml",
            "document 1 (LLMDeployment chat)",
            "spec.tensorParallelSize",
            "greater than or equal to 1",
            "got 0",
        ],
    ),
    (
        "unknown engine",
        "deploy.yaml",
        DEPLOYMENT.format(spec="  engine: tgi\n  models: [{name: a}]"),
        None,
        ["spec.engine", "'vllm', 'ollama' or 'auto'", "got 'tgi'"],
    ),
    (
        "empty models",
        "deploy.yaml",
        DEPLOYMENT.format(spec="  models: []"),
        None,
        ["spec.models", "at least 1"],
    ),
    (
        "typo in a field",
        "deploy.yaml",
        DEPLOYMENT.format(spec="  models: [{name: a}]\n  replica: 2"),
        None,
        ["spec.replica", "unknown field", "allowed here:", "replicas", "tensorParallelSize"],
    ),
    (
        "bad vram",
        "deploy.yaml",
        DEPLOYMENT.format(spec="  models: [{name: a, vram: lots}]"),
        None,
        ["spec.models[0].vram", "'lots' is not a Kubernetes quantity"],
    ),
    (
        "missing models",
        "deploy.yaml",
        DEPLOYMENT.format(spec="  engine: ollama"),
        None,
        ["spec.models", "required field is missing"],
    ),
    (
        "no LLMDeployment in the file",
        "deploy.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n",
        None,
        ["no LLMDeployment in it"],
    ),
    (
        "a document that is not a mapping",
        "deploy.yaml",
        "- just\n- a list\n",
        None,
        ["expected a Kubernetes object"],
    ),
    (
        "inventory memory: lots",
        None,
        None,
        "nodes:\n- name: n\n  gpus:\n  - {index: 0, uuid: GPU-x, name: X, memory: lots, computeCapability: '8.0'}\n",
        ["inventory.yaml", "nodes[0].gpus[0].memory", "'lots' is not a Kubernetes quantity"],
    ),
    (
        "inventory with a bad compute capability",
        None,
        None,
        "nodes:\n- name: n\n  gpus:\n  - {index: 0, uuid: GPU-x, name: X, memory: 1Gi, computeCapability: eight}\n",
        ["nodes[0].gpus[0].computeCapability", "MAJOR.MINOR"],
    ),
    (
        "inventory of the wrong kind",
        None,
        None,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n",
        ["expected an inventory", "got Pod"],
    ),
]


@pytest.mark.parametrize(
    ("what", "deploy_name", "deploy_text", "inventory_text", "fragments"),
    BAD_INPUTS,
    ids=[c[0] for c in BAD_INPUTS],
)
def test_invalid_input_exits_2_with_a_clear_message(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    what: str,
    deploy_name: str | None,
    deploy_text: str | None,
    inventory_text: str | None,
    fragments: list[str],
) -> None:
    deploy = (
        _write(tmp_path, deploy_name, deploy_text)
        if deploy_name and deploy_text is not None
        else str(EXAMPLES / "seed" / "1-ollama-both-gpus.yaml")
    )
    inventory = (
        _write(tmp_path, "inventory.yaml", inventory_text) if inventory_text is not None else WORKSTATION
    )
    code, out, err = run(capsys, "plan", "-f", deploy, "--inventory", inventory)
    assert code == 2, out
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("gpupin: ")
    for fragment in fragments:
        assert fragment in err


def test_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "plan", "-f", "nope.yaml", "--inventory", WORKSTATION)
    assert code == 2 and "nope.yaml: no such file" in err


def test_duplicate_deployments(capsys: pytest.CaptureFixture[str]) -> None:
    example = str(EXAMPLES / "seed" / "4-vllm-tp1.yaml")
    code, _, err = run(capsys, "plan", "-f", example, "-f", example, "--inventory", WORKSTATION)
    assert code == 2 and "default/chat appears twice" in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["plan", "-f", "x.yaml", "--inventory", WORKSTATION, "--pinning", "magic"])
    assert info.value.code == 2
    assert "invalid choice: 'magic'" in capsys.readouterr().err


def test_the_installed_command_runs_without_a_traceback(tmp_path: Path) -> None:
    """The real entry point, as a user runs it."""
    gpupin = Path(sys.executable).parent / "gpupin"
    ok = subprocess.run(
        [
            str(gpupin),
            "plan",
            "-f",
            str(EXAMPLES / "seed" / "1-ollama-both-gpus.yaml"),
            "--inventory",
            WORKSTATION,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEPLOYMENT.format(spec="  models: [{name: a}]\n  tensorParallelSize: 0"))
    failed = subprocess.run(
        [str(gpupin), "plan", "-f", str(bad), "--inventory", WORKSTATION],
        capture_output=True,
        text=True,
        check=False,
    )
    assert failed.returncode == 2 and "Traceback" not in failed.stderr


def test_crd_command_prints_the_generated_crd(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "crd")
    assert code == 0 and yaml.safe_load(out)["metadata"]["name"] == "llmdeployments.gpupin.dev"


def test_plan_applies_the_cluster_admins_policy(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """gpupin plan takes the operator's policy flags: a spec they refuse is PolicyRefused (exit 1), the
    same rule the operator applies (gpupin.policy); a bad flag is one line, exit 2."""
    spec = _write(
        tmp_path,
        "evil.yaml",
        "apiVersion: gpupin.dev/v1alpha1\nkind: LLMDeployment\nmetadata: {name: evil, namespace: default}\n"
        "spec: {engine: ollama, models: [{name: 'llama3.1:8b'}], image: 'evil.example/ollama:latest'}\n",
    )
    code, out, _ = run(capsys, "plan", "-f", spec, "--inventory", WORKSTATION)
    assert code == 0, out
    code, out, _ = run(
        capsys, "plan", "-f", spec, "--inventory", WORKSTATION, "--allowed-images", "ollama/ollama"
    )
    assert code == 1 and "PolicyRefused" in out and "--allowed-images" in out, out
    code, _, err = run(capsys, "plan", "-f", spec, "--inventory", WORKSTATION, "--allowed-images", "quay.io")
    assert code == 2 and err.strip().startswith("gpupin: --allowed-images 'quay.io'"), err
