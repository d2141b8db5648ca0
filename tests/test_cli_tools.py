"""The command's small parts: ``gpupin version``, ``gpupin completion``, ``-f -`` and ``--inventory -``,
``--kubeconfig``/``--context`` of ``operator`` and ``agent``, and gpupin's User-Agent.

Aspects: the version printed is the package's; the bash completion script is valid bash and, run
as bash runs it, offers exactly the parser's subcommands, a subcommand's flags and a flag's choices;
a plan read from standard input is the plan read from the file, and standard input is read at most
once (a clear error otherwise); a context chosen by ``--context`` is the one every client of the
process (gpupin's and kopf's) uses, a bad path or an unknown context is one line naming the flag
(exit 2); every request carries ``gpupin/<version> (<component>)``, seen by a server that records it.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from gpupin import __version__, kube
from gpupin.cli import _parser, main
from gpupin.clitools import completion_script

from helpers import EXAMPLES

WORKSTATION = EXAMPLES / "inventory" / "workstation.yaml"
SEED = EXAMPLES / "seed" / "1-ollama-both-gpus.yaml"
GPUPIN = str(Path(sys.executable).parent / "gpupin")


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# -- version ---------------------------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(capsys, "version") == (0, f"gpupin {__version__}\n", "")
    code, out, _ = _run(capsys, "version", "-o", "json")
    data = json.loads(out)
    assert code == 0 and data["version"] == __version__
    assert data["kopf"] == metadata.version("kopf") and data["pydantic"] == metadata.version("pydantic")
    assert data["python"] == ".".join(map(str, sys.version_info[:3]))


# -- completion ------------------------------------------------------------------------------


def _complete(script: str, words: list[str]) -> list[str]:
    """What the completion function offers with the cursor on the last of ``words``, run by bash."""
    array = " ".join("'" + w.replace("'", "'\\''") + "'" for w in words)
    program = f'{script}\nCOMP_WORDS=({array}); COMP_CWORD={len(words) - 1}; _gpupin; printf "%s\\n" "${{COMPREPLY[@]}}"'
    done = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=30, check=True)
    return [line for line in done.stdout.splitlines() if line]


@pytest.fixture(scope="module")
def bash_script() -> str:
    return completion_script(_parser(), "bash")


def test_completion_script_is_valid_bash(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for shell in ("bash", "zsh"):
        code, out, _ = _run(capsys, "completion", shell)
        assert code == 0 and "complete -o default -F _gpupin gpupin" in out
        path = tmp_path / f"gpupin.{shell}"
        path.write_text(out)
        checked = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, timeout=30)
        assert checked.returncode == 0, checked.stderr
    assert out.splitlines()[1] == "autoload -U +X bashcompinit && bashcompinit"  # zsh's


def test_completion_offers_the_parsers_subcommands(bash_script: str) -> None:
    parser = _parser()
    (sub,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    offered = _complete(bash_script, ["gpupin", ""])
    assert {w for w in offered if not w.startswith("-")} == set(sub.choices)  # type: ignore[arg-type]
    assert {"--version", "--debug", "--help"} <= set(offered)
    assert _complete(bash_script, ["gpupin", "pl"]) == ["plan"]
    assert sorted(_complete(bash_script, ["gpupin", "models", ""])) == ["--help", "-h", "refresh", "show"]
    assert sorted(_complete(bash_script, ["gpupin", "completion", ""])) == ["--help", "-h", "bash", "zsh"]


def test_completion_offers_flags_and_their_choices(bash_script: str) -> None:
    assert _complete(bash_script, ["gpupin", "plan", "--out"]) == ["--output"]
    assert sorted(_complete(bash_script, ["gpupin", "plan", "-o", ""])) == ["json", "table", "yaml"]
    # a flag's value is skipped: the subcommand is still `plan`, its flags are offered
    assert _complete(bash_script, ["gpupin", "plan", "-f", "x.yaml", "--inv"]) == ["--inventory"]
    assert _complete(bash_script, ["gpupin", "plan", "-f", ""]) == []  # files: bash's default
    assert _complete(bash_script, ["gpupin", "operator", "--kubec"]) == ["--kubeconfig"]
    assert _complete(bash_script, ["gpupin", "agent", "--cont"]) == ["--context"]
    assert "--context" in _complete(bash_script, ["gpupin", "plan", "--"]), (
        "plan --cluster talks to a cluster"
    )
    assert "--context" not in _complete(bash_script, ["gpupin", "crd", "--"])


# -- standard input --------------------------------------------------------------------------


def _stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


def test_plan_reads_deployments_and_the_inventory_from_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = _run(capsys, "plan", "-f", str(SEED), "--inventory", str(WORKSTATION), "-o", "json")
    assert expected[0] == 0
    _stdin(monkeypatch, SEED.read_bytes())
    assert _run(capsys, "plan", "-f", "-", "--inventory", str(WORKSTATION), "-o", "json") == expected
    _stdin(monkeypatch, WORKSTATION.read_bytes())
    assert _run(capsys, "plan", "-f", str(SEED), "--inventory", "-", "-o", "json") == expected


def test_stdin_errors_name_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    _stdin(monkeypatch, b"kind: LLMDeployment\napiVersion: gpupin.dev/v1alpha1\nmetadata: {name: x}\n")
    code, out, err = _run(capsys, "plan", "-f", "-", "--inventory", str(WORKSTATION))
    assert (code, out) == (2, "")
    assert err.startswith("gpupin: <stdin>: document 1 (LLMDeployment x): spec") and err.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["-f", "-", "--inventory", "-"], "-f - and --inventory -"),
        (["-f", "-", "-f", str(SEED), "-f", "-", "--inventory", str(WORKSTATION)], "-f -: given twice"),
    ],
)
def test_stdin_is_read_once(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, args: list[str], named: str
) -> None:
    _stdin(monkeypatch, SEED.read_bytes())
    code, out, err = _run(capsys, "plan", *args)
    assert (code, out) == (2, "")
    assert err.startswith(f"gpupin: {named}") and "standard input" in err and err.count("\n") == 1
    assert sys.stdin.read() == SEED.read_text(), "refused before reading anything"


def test_plan_from_a_pipe() -> None:
    done = subprocess.run(
        [GPUPIN, "plan", "-f", "-", "--inventory", str(WORKSTATION), "-o", "json"],
        input=SEED.read_text(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)["deployments"]
    assert result["outcome"] == "Placed"


# -- --kubeconfig, --context and the User-Agent ------------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    agents: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).agents.append(self.headers.get("User-Agent", ""))
        body = b'{"kind": "NamespaceList", "items": []}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, list[str]]]:
    """A local HTTP server that answers every GET with an empty list and records its User-Agent."""
    recorder = type("Recorder", (_Recorder,), {"agents": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", recorder.agents
    httpd.shutdown()
    httpd.server_close()


def _kubeconfig(path: Path, current: str, **servers: str) -> Path:
    """A kubeconfig with one context per server (named by its key), ``current`` the current one."""
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": current,
                "clusters": [{"name": n, "cluster": {"server": s}} for n, s in servers.items()],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": n, "context": {"cluster": n, "user": "u"}} for n in servers],
            }
        )
    )
    return path


@pytest.fixture
def connection(monkeypatch: pytest.MonkeyPatch) -> kube.Connection:
    """The process's connection, restored afterwards."""
    for field in ("kubeconfig", "context", "component"):
        monkeypatch.setattr(kube.CONNECTION, field, getattr(kube.CONNECTION, field))
    return kube.CONNECTION


def test_the_chosen_context_is_the_one_every_client_uses(
    tmp_path: Path, server: tuple[str, list[str]], connection: kube.Connection
) -> None:
    from kopf import OperatorSettings

    from gpupin.controller.kopftuning import login

    url, agents = server
    path = _kubeconfig(tmp_path / "config", "wrong", wrong="http://127.0.0.1:1", right=url)
    assert kube.load_configuration(str(path)).host == "http://127.0.0.1:1"  # its current context
    assert kube.load_configuration(str(path), "right").host == url
    kube.connect(str(path), "right", "agent")
    client = kube.Kube()
    assert client.configuration.host == url
    assert client.request("GET", "/api/v1/namespaces") == {"kind": "NamespaceList", "items": []}
    assert agents == [f"gpupin/{__version__} (agent)"]

    async def through_kopf() -> str:
        session = await login(settings=OperatorSettings())
        http = session.aiohttp_session
        async with http, http.get(f"{session.server}/api/v1/namespaces") as response:
            assert response.status == 200
        return session.server

    assert asyncio.run(through_kopf()) == url
    assert agents[1] == f"gpupin/{__version__} (agent) kopf/{metadata.version('kopf')}"


def test_kube_names_its_component(server: tuple[str, list[str]], tmp_path: Path) -> None:
    url, agents = server
    configuration = kube.load_configuration(str(_kubeconfig(tmp_path / "config", "only", only=url)))
    kube.Kube(configuration, component="operator").request("GET", "/api/v1/namespaces")
    kube.Kube(configuration, component="").request("GET", "/api/v1/namespaces")
    assert agents == [f"gpupin/{__version__} (operator)", f"gpupin/{__version__}"]


@pytest.mark.parametrize("command", ["operator", "agent"])
def test_a_bad_kubeconfig_or_context_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str, connection: kube.Connection
) -> None:
    extra = ["--once", "--fake-inventory", str(WORKSTATION)] if command == "agent" else []
    missing = tmp_path / "missing"
    code, out, err = _run(capsys, command, "--kubeconfig", str(missing), *extra)
    assert (code, out) == (2, "")
    assert err == f"gpupin: --kubeconfig {missing}: no such file (name a kubeconfig file)\n"
    path = _kubeconfig(tmp_path / "config", "a", a="http://127.0.0.1:1", b="http://127.0.0.1:2")
    code, out, err = _run(capsys, command, "--kubeconfig", str(path), "--context", "c", *extra)
    assert (code, out) == (2, "")
    assert err == f"gpupin: --context c: no such context in {path} (its contexts: a, b)\n"
    broken = tmp_path / "broken"
    broken.write_text("clusters: [\n")
    code, _, err = _run(capsys, command, "--kubeconfig", str(broken), *extra)
    assert code == 2 and err.startswith(f"gpupin: --kubeconfig {broken}: not a usable kubeconfig (")
    assert err.count("\n") == 1
    assert connection.kubeconfig is None, "a refused kubeconfig is not used"


def test_no_cluster_at_all_is_one_line(tmp_path: Path) -> None:
    """Not in a pod, no KUBECONFIG and no ~/.kube/config: one line that says what to name."""
    environment = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
    environment["HOME"] = str(tmp_path)
    done = subprocess.run(
        [GPUPIN, "agent", "--once", "--fake-inventory", str(WORKSTATION)],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("gpupin: not in a pod") and "--kubeconfig" in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
