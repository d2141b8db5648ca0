"""Self-check of tests/ollama_server.py: the real Ollama server (hack/build-engines.sh) starts
isolated with a pod's env, takes the tiny GGUF models and serves them on CPU.

Skipped with a reason when $GPUPIN_ENGINES_BIN is unset or the machine cannot make namespaces."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ollama_server import EngineUnavailable, OllamaServer, engine_problem, write_tiny_gguf

POD_ENV = {"OLLAMA_HOST": "0.0.0.0:11434", "OLLAMA_MODELS": "/models", "OLLAMA_KEEP_ALIVE": "-1"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OllamaServer]:
    problem = engine_problem()
    if problem:
        pytest.skip(problem)
    folder = tmp_path_factory.mktemp("gguf")
    write_tiny_gguf(folder / "chat.gguf")
    write_tiny_gguf(folder / "embed.gguf", embedding=True)
    running = OllamaServer(POD_ENV)
    try:
        running.start()
        running.wait_until_up(60)
        running.create_model("tiny-chat", folder / "chat.gguf")
        running.create_model("tiny-embed", folder / "embed.gguf")
    except EngineUnavailable as e:
        running.stop()
        pytest.skip(str(e))
    except BaseException:
        print(running.log[-4000:])
        running.stop()
        raise
    yield running
    running.stop()


def test_tiny_gguf_is_small(tmp_path: Path) -> None:
    write_tiny_gguf(tmp_path / "m.gguf")
    write_tiny_gguf(tmp_path / "n.gguf")
    size = (tmp_path / "m.gguf").stat().st_size
    assert 50_000 < size < 1_000_000
    assert (tmp_path / "m.gguf").read_bytes() == (tmp_path / "n.gguf").read_bytes()


def test_models_land_in_the_volume(server: OllamaServer) -> None:
    status, tags = server.api("GET", "/api/tags")
    assert status == 200
    assert {m["name"] for m in tags["models"]} >= {"tiny-chat:latest", "tiny-embed:latest"}
    assert any((server.models_dir / "manifests").rglob("tiny-chat")), (
        "blobs go to the host folder behind /models"
    )


def test_chat_model_generates(server: OllamaServer) -> None:
    body = {"model": "tiny-chat", "prompt": "hello world", "stream": False, "options": {"num_predict": 4}}
    status, answer = server.api("POST", "/api/generate", body)
    assert status == 200, answer
    assert answer["done"] is True
    assert isinstance(answer["response"], str)


def test_chat_model_loads_without_generating(server: OllamaServer) -> None:
    status, answer = server.api(
        "POST", "/api/generate", {"model": "tiny-chat", "prompt": "", "stream": False}
    )
    assert status == 200, answer
    assert answer["done_reason"] == "load"
    status, ps = server.api("GET", "/api/ps")
    assert status == 200
    loaded = {m["name"]: m for m in ps["models"]}
    assert loaded["tiny-chat:latest"]["size_vram"] == 0  # a CPU-only build


def test_embedding_model_embeds_and_refuses_generate(server: OllamaServer) -> None:
    status, answer = server.api("POST", "/api/embed", {"model": "tiny-embed", "input": "hello"})
    assert status == 200, answer
    assert len(answer["embeddings"]) == 1 and len(answer["embeddings"][0]) == 64
    status, answer = server.api(
        "POST", "/api/generate", {"model": "tiny-embed", "prompt": "", "stream": False}
    )
    assert status == 400
    assert "does not support generate" in answer["error"]


def test_exec_runs_inside_the_container(server: OllamaServer) -> None:
    done = server.exec(["/bin/bash", "-c", 'echo "$OLLAMA_MODELS"; ls /models; ollama ps'], timeout=30)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "/models"
    assert "manifests" in lines[1:3]
    assert any(line.startswith("NAME") for line in lines)
    slow = server.exec(["sleep", "30"], timeout=0.5)
    assert slow.timed_out and slow.returncode != 0
    assert server.poll() is None
