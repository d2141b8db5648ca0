"""Every malformed file any `gpupin` command reads: exit 2 and one line naming the file — never a
traceback, a hang, or exit 1 (which means "refused").

Aspects: the YAML itself (encoding, syntax, tags, nesting, aliases, size, numbers) through every
command that reads a file (`plan -f`, `plan --inventory`, `plan --model-data`, `models refresh
--data`, `inventory --fake-inventory`); the shapes each kind of file must have; a billion-laughs
file in a real process under a timeout; an internal error as one line and exit 3, its traceback
with --debug.
"""

from __future__ import annotations

import codecs
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from gpupin import cli, safeyaml
from gpupin.cli import main

from helpers import EXAMPLES

DEPLOYMENT = str(EXAMPLES / "seed" / "1-ollama-both-gpus.yaml")
INVENTORY = str(EXAMPLES / "inventory" / "workstation.yaml")
UUID = "GPU-4070aaaa-0000-4000-8000-000000000000"

# How each command is given the file under test (the other files it needs are good ones).
COMMANDS: dict[str, Callable[[str], list[str]]] = {
    "plan -f": lambda f: ["plan", "-f", f, "--inventory", INVENTORY],
    "plan --inventory": lambda f: ["plan", "-f", DEPLOYMENT, "--inventory", f],
    "plan --model-data": lambda f: ["plan", "-f", DEPLOYMENT, "--inventory", INVENTORY, "--model-data", f],
    "models refresh --data": lambda f: ["models", "refresh", "--data", f],
    "inventory --fake-inventory": lambda f: [
        "inventory",
        "--fake-inventory",
        f,
        "--node-name",
        "workstation",
    ],
}


def _bomb(levels: int = 9) -> str:
    """A billion laughs: nine levels of nine aliases each, 9^9 (387 million) strings, ~580 bytes."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def _alias_chain(length: int) -> str:
    """Shallow text, deep data: each anchor wraps the one before in a list."""
    return "a0: &a0 [x]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, length))


def deploy(spec: str, name: str = "chat") -> str:
    return (
        f"apiVersion: gpupin.dev/v1alpha1\nkind: LLMDeployment\nmetadata:\n  name: {name}\n"
        f"spec:\n  engine: ollama\n{spec}\n"
    )


def inventory(gpu: str) -> str:
    return f"nodes:\n- name: workstation\n  gpus:\n  - {{{gpu}}}\n"


def gpu(**override: str) -> str:
    fields = {"index": "0", "uuid": UUID, "name": "X", "memory": "12Gi", "computeCapability": "'8.9'"}
    fields.update(override)
    return ", ".join(f"{k}: {v}" for k, v in fields.items())


def node(metadata: str) -> str:
    return f"apiVersion: v1\nkind: Node\nmetadata: {metadata}\n"


# What breaks the YAML itself: every command reads it through the same loader.
YAML_CASES: list[tuple[str, str | bytes, list[str]]] = [
    ("not UTF-8", b"name: caf\xe9\n", ["not UTF-8 text", "byte 9"]),
    ("binary bytes", bytes(range(256)), ["not UTF-8 text"]),
    ("a NUL character", b"a: b\x00c\n", ["line 1, column 5", "not allowed in YAML"]),
    ("malformed", "a: [b\n", ["line 2", "not valid YAML"]),
    ("a tab for indentation", "a:\n\tb: 1\n", ["line 2", "not valid YAML"]),
    (
        "a python tag",
        "!!python/object/apply:os.system ['true']\n",
        ["line 1", "could not determine a constructor"],
    ),
    ("an unknown tag", "a: !secret x\n", ["could not determine a constructor", "!secret"]),
    ("an undefined alias", "a: *nope\n", ["undefined alias 'nope'"]),
    (
        "a key twice",
        "models: []\nkind: x\nmodels: []\n",
        ["line 3", "key 'models' appears twice", "first on line 1"],
    ),
    ("a date that does not exist", "a: 2001-02-30\n", ["'2001-02-30' reads as a YAML timestamp", "quote it"]),
    ("a 5000-digit number", "a: " + "9" * 5000 + "\n", ["a number of 5000 digits", "at most 100"]),
    ("nesting 100000 deep", "[" * 100_000 + "]" * 100_000, ["nested 101 levels deep", "at most 100 levels"]),
    (
        "nesting in blocks",
        "".join("  " * i + "a:\n" for i in range(150)),
        ["line 100", "nested 101 levels deep"],
    ),
    ("nesting through aliases", _alias_chain(300), ["once alias *a97 is expanded", "at most 100 levels"]),
    ("an alias inside its anchor", "a: &a [1, *a]\n", ["alias *a is inside its own anchor &a"]),
    (
        "a billion laughs",
        _bomb(),
        ["line 6", "alias *a4 (66,430 values)", "a file may hold at most 500,000", "each time it is used"],
    ),
    ("a laugh per document", "---\n".join([_bomb(5)] * 100), ["a file may hold at most 500,000"]),
    ("over 8 MiB", "# " + "x" * (9 * 2**20) + "\n", ["too large to read (9.0 MiB)", "at most 8 MiB"]),
]

# The shapes each kind of file must have.
SHAPE_CASES: list[tuple[str, str, str, list[str]]] = [
    ("a list", "plan -f", "- a\n- b\n", ["document 1: expected a Kubernetes object (a mapping), got a list"]),
    ("a scalar", "plan -f", "hello\n", ["got a string"]),
    ("an inventory", "plan -f", inventory(gpu()), ["no LLMDeployment in it"]),
    ("models: x", "plan -f", deploy("  models: x"), ["spec.models: Input should be a valid list", "got 'x'"]),
    (
        "replicas: two",
        "plan -f",
        deploy("  models: [{name: a}]\n  replicas: two"),
        ["spec.replicas", "'two'"],
    ),
    (
        "replicas: 1.0e+400",
        "plan -f",
        deploy("  models: [{name: a}]\n  replicas: 1.0e+400"),
        ["finite number"],
    ),
    (
        "vram: 8GB",
        "plan -f",
        deploy("  models: [{name: a, vram: 8GB}]"),
        [
            "spec.models[0].vram: '8GB' is not a Kubernetes quantity; write 8G (10^9 bytes) or 8Gi (2^30 bytes)"
        ],
    ),
    ("vram: -1", "plan -f", deploy("  models: [{name: a, vram: -1}]"), ["-1 is negative"]),
    (
        "vram: 1e999999999",
        "plan -f",
        deploy("  models: [{name: a, vram: '1e999999999'}]"),
        ["'1e999999999' is more than Kubernetes can count"],
    ),
    (
        "a million-digit vram",
        "plan -f",
        deploy("  models: [{name: a, vram: '" + "9" * 1_000_001 + "Gi'}]"),
        ["spec.models[0].vram", "is more than Kubernetes can count"],
    ),
    (
        "a 100k-character name",
        "plan -f",
        deploy("  models: [{name: " + "a" * 100_000 + "}]"),
        ["at most 200 characters", "…"],
    ),
    (
        "a name that is not a Kubernetes name",
        "plan -f",
        deploy("  models: [{name: a}]", name="Chat_Bot"),
        ["metadata.name: 'Chat_Bot' is not a Kubernetes name: lower-case letters"],
    ),
    (
        "an env name",
        "plan -f",
        deploy("  models: [{name: a}]\n  env: [{name: '1 X', value: y}]"),
        ["spec.env[0].name: '1 X' is not an environment variable name"],
    ),
    (
        "List items: 5",
        "plan -f",
        "apiVersion: v1\nkind: List\nitems: 5\n",
        ["(List): items: expected a list, got a number"],
    ),
    (
        "a deployment",
        "plan --inventory",
        deploy("  models: [{name: a}]"),
        ["expected an inventory", "got LLMDeployment"],
    ),
    (
        "gpus: x",
        "plan --inventory",
        "nodes:\n- name: n\n  gpus: x\n",
        ["nodes[0].gpus: Input should be a valid list"],
    ),
    (
        "memory: twelve",
        "plan --inventory",
        inventory(gpu(memory="twelve")),
        ["'twelve' is not a Kubernetes quantity"],
    ),
    (
        "memory: 8GB",
        "plan --inventory",
        inventory(gpu(memory="8GB")),
        ["nodes[0].gpus[0].memory: '8GB' is not a Kubernetes quantity; write 8G"],
    ),
    (
        "memory: 1e999999999",
        "plan --inventory",
        inventory(gpu(memory="1e999999999")),
        ["is more than Kubernetes can count"],
    ),
    (
        "a GPU twice",
        "plan --inventory",
        "nodes:\n- name: n\n  gpus:\n  - {" + gpu() + "}\n  - {" + gpu(index="1") + "}\n",
        ["appears twice on node n"],
    ),
    (
        "Node metadata: x",
        "plan --inventory",
        node("x"),
        ["document 1 (Node): metadata: expected a mapping, got a string"],
    ),
    ("Node without a name", "plan --inventory", node("{labels: {}}"), ["metadata.name: required"]),
    (
        "Node annotations: a list",
        "plan --inventory",
        node("{name: n, annotations: [a]}"),
        ["(Node n): metadata.annotations: expected a mapping, got a list"],
    ),
    (
        "Node label: a number",
        "plan --inventory",
        node("{name: n, labels: {nvidia.com/gpu.count: 2}}"),
        ["metadata.labels.nvidia.com/gpu.count: expected a string (quote it), got 2"],
    ),
    (
        "NodeList items: x",
        "plan --inventory",
        "kind: NodeList\nitems: x\n",
        ["(NodeList): items: expected a list"],
    ),
    ("a list", "plan --model-data", "- a\n", ["expected a mapping with a list under 'models'"]),
    (
        "two documents",
        "plan --model-data",
        "models: []\n---\nmodels: []\n",
        ["2 YAML documents; expected one"],
    ),
    ("an entry that is text", "models refresh --data", "models: [x]\n", ["models[0]: expected a mapping"]),
    (
        "a deployment",
        "inventory --fake-inventory",
        deploy("  models: [{name: a}]"),
        ["expected an inventory"],
    ),
    ("no such node", "inventory --fake-inventory", "nodes: []\n", ["has no node named workstation"]),
]


def check_one_line(code: int, out: str, err: str, path: str, fragments: list[str]) -> None:
    assert code == 2, err
    assert out == ""
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("gpupin: ") and Path(path).name in err, err
    for fragment in fragments:
        assert fragment in err, err


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(("what", "text", "fragments"), YAML_CASES, ids=[c[0] for c in YAML_CASES])
def test_broken_yaml_is_one_line_and_exit_2_for_every_command(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    command: str,
    what: str,
    text: str | bytes,
    fragments: list[str],
) -> None:
    path = tmp_path / "input.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    code = main(["--debug", *COMMANDS[command](str(path))])  # --debug: a bug fails the test loudly
    out, err = capsys.readouterr()
    check_one_line(code, out, err, str(path), fragments)


@pytest.mark.parametrize(
    ("what", "command", "text", "fragments"), SHAPE_CASES, ids=[f"{c[1]}: {c[0]}" for c in SHAPE_CASES]
)
def test_a_file_of_the_wrong_shape_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    what: str,
    command: str,
    text: str,
    fragments: list[str],
) -> None:
    path = tmp_path / "input.yaml"
    path.write_text(text)
    code = main(["--debug", *COMMANDS[command](str(path))])
    out, err = capsys.readouterr()
    check_one_line(code, out, err, str(path), fragments)


@pytest.mark.parametrize("command", COMMANDS)
def test_what_is_not_a_readable_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str
) -> None:
    for path, fragment in [
        (tmp_path, "is a directory; name a YAML file"),
        (tmp_path / "missing.yaml", "no such file"),
        (tmp_path / "empty.yaml", ""),
    ]:
        if path.name == "empty.yaml":
            path.write_text("")
        code = main(["--debug", *COMMANDS[command](str(path))])
        out, err = capsys.readouterr()
        check_one_line(code, out, err, str(path), [fragment])


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unreadable_file(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, command: str
) -> None:
    """Mode 000 (as the tests may run as root, who reads it anyway, the refusal is simulated)."""
    path = tmp_path / "secret.yaml"
    path.write_text("nodes: []\n")
    real_open = Path.open

    def refuse(self: Path, *args: object, **kwargs: object) -> object:
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(Path, "open", refuse)
    code = main(["--debug", *COMMANDS[command](str(path))])
    out, err = capsys.readouterr()
    check_one_line(code, out, err, str(path), ["cannot read it (permission denied)"])


def test_a_device_or_a_pipe_is_read_up_to_the_limit(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["plan", "-f", DEPLOYMENT, "--inventory", "/dev/zero"])
    out, err = capsys.readouterr()
    check_one_line(
        code, out, err, "/dev/zero", ["too large to read (more than 8 MiB); a file may hold at most 8 MiB"]
    )


def test_the_same_files_in_other_encodings_and_with_aliases_still_plan(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """What the limits must not refuse: a byte-order mark, UTF-16 (PowerShell's `>`), anchors."""
    text = Path(INVENTORY).read_text()
    for name, data in [
        ("bom.yaml", codecs.BOM_UTF8 + text.encode()),
        ("utf16.yaml", text.encode("utf-16")),
    ]:
        (tmp_path / name).write_bytes(data)
        assert main(["plan", "-f", DEPLOYMENT, "--inventory", str(tmp_path / name)]) == 0
    anchors = tmp_path / "anchors.yaml"
    anchors.write_text(
        deploy(
            "  models: [{name: qwen2.5:14b}]\n  tolerations:\n  - &t {key: a, operator: Exists}\n  - *t\n"
            "  - {<<: *t, key: b}"
        )
    )
    code = main(["plan", "-f", str(anchors), "--inventory", INVENTORY, "-o", "yaml"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.count("key: a") == 2 and out.count("key: b") == 1  # the alias and the merge key


def run_cli(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GPUPIN_DEBUG"}
    return subprocess.run(
        [sys.executable, "-m", "gpupin", *args],
        capture_output=True,
        text=True,
        timeout=timeout,  # a hang fails the test: TimeoutExpired
        check=False,
        env=env,
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_a_billion_laughs_is_refused_at_once_in_a_real_process(tmp_path: Path, command: str) -> None:
    """580 bytes standing for 387 million strings, inside a deployment, an inventory or model
    data: refused before anything expands it (before, `gpupin plan` hung)."""
    bomb = _bomb()
    assert len(bomb.encode()) < 600
    path = tmp_path / "laughs.yaml"
    laughs = "".join(f"      {line}\n" for line in bomb.splitlines())  # where metadata takes anything
    spec = "  models: [{name: qwen2.5:14b}]\n  tolerations: [{key: x, value: *a8}]"  # placed, so rendered
    path.write_text(deploy(spec).replace("spec:", f"  annotations:\n    laughs:\n{laughs}spec:"))
    result = run_cli(*COMMANDS[command](str(path)), timeout=10)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert f"{path}: line " in result.stderr and "a file may hold at most 500,000" in result.stderr


def test_the_limits_are_what_the_messages_say() -> None:
    assert (safeyaml.MAX_BYTES, safeyaml.MAX_DEPTH, safeyaml.MAX_NODES) == (8 * 2**20, 100, 500_000)


def test_an_internal_error_is_one_line_exit_3_and_its_traceback_with_debug(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug is neither "refused" (1) nor "invalid input" (2); --debug or GPUPIN_DEBUG shows it."""

    def broken(paths: object) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli, "load_deployments", broken)
    monkeypatch.delenv("GPUPIN_DEBUG", raising=False)
    args = ["plan", "-f", DEPLOYMENT, "--inventory", INVENTORY]
    assert main(args) == cli.EXIT_INTERNAL == 3
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert (
        "internal error (a bug in gpupin): ZeroDivisionError: division by zero at test_cli_inputs.py:" in err
    )
    assert "--debug" in err
    for debug in (["--debug", *args], [*args, "--debug"]):
        with pytest.raises(ZeroDivisionError):
            main(debug)
    monkeypatch.setenv("GPUPIN_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        main(args)


def test_fake_inventory_errors_are_invalid_input_not_a_failed_read(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`gpupin inventory --fake-inventory` with a bad file exits 2 like `plan`; with a good one, 0."""
    assert main(["inventory", "--fake-inventory", INVENTORY, "--node-name", "workstation"]) == 0
    capsys.readouterr()
    path = tmp_path / "bad.yaml"
    path.write_text(inventory(gpu(memory="8GB")))
    assert main(["inventory", "--fake-inventory", str(path), "--node-name", "workstation"]) == 2
    assert "write 8G (10^9 bytes) or 8Gi (2^30 bytes)" in capsys.readouterr().err


def test_an_annotation_nested_too_deeply_is_skipped_like_any_unreadable_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A Node whose inventory annotation json cannot read (nested 10^5 deep) is skipped with a
    warning naming it, as a node with a corrupt annotation is (the operator freezes it): no traceback."""
    path = tmp_path / "nodes.yaml"
    path.write_text(
        node("{name: n, annotations: {gpupin.dev/gpu-inventory: '" + "[" * 100_000 + "]" * 100_000 + "'}}")
    )
    main(["--debug", *COMMANDS["plan --inventory"](str(path))])
    _, err = capsys.readouterr()
    assert "skipped node n: annotation gpupin.dev/gpu-inventory is not JSON (nested too deeply)" in err, err
    assert "Traceback" not in err
