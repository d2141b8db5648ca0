"""The router in front of real Ollama servers (built for CPU, tiny random-weight models).

Two servers stand for two pods of one LLMDeployment: ``A`` serves ``chat-a`` and ``shared``, ``B``
serves ``embed`` (an embedding model) and ``shared``, and holds a copy of ``chat-a`` that no
route names until the model "moves" there. They share the host's loopback (each on its own port)
instead of pod IPs — the one stand-in here: the servers, their answers and their errors are
Ollama's own. The router runs in-process on aiohttp's test server.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gpupin.router.proxy import Router
from gpupin.router.table import Backend, RouteTable

from helpers import free_port
from ollama_server import OllamaServer, engine_problem, write_tiny_gguf

Servers = dict[str, OllamaServer]
Routed = tuple[Router, TestServer, aiohttp.ClientSession]
GENERATE = {"options": {"num_predict": 6, "temperature": 0}}


def _server(models: dict[str, bool], folder: Path) -> OllamaServer:
    """A real Ollama server on the host's loopback holding ``models`` (name → is an embedding model)."""
    server = OllamaServer(
        {"OLLAMA_HOST": f"127.0.0.1:{free_port()}", "OLLAMA_MODELS": "/models", "OLLAMA_KEEP_ALIVE": "10m"},
        host_network=True,
    )
    server.start()
    server.wait_until_up(60)
    for seed, (name, embedding) in enumerate(models.items(), start=1):
        path = folder / f"{name.replace(':', '-')}.gguf"
        write_tiny_gguf(path, embedding=embedding, seed=sum(map(ord, name)) + seed)
        server.create_model(name, path)
    return server


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, OllamaServer]]:
    problem = engine_problem()
    if problem:
        pytest.skip(problem)
    folder = tmp_path_factory.mktemp("router-gguf")
    started: dict[str, OllamaServer] = {}
    try:
        started["a"] = _server({"chat-a:1b": False, "shared:1b": False}, folder)
        started["b"] = _server({"embed:1b": True, "shared:1b": False, "chat-a:1b": False}, folder)
        yield started
    finally:
        for server in started.values():
            server.stop()


def _backend(server: OllamaServer, *models: str, name: str) -> Backend:
    return Backend(f"127.0.0.1:{server.port}", models, pod=name)


def _table(servers: dict[str, OllamaServer]) -> RouteTable:
    return RouteTable(
        "ollama",
        (
            _backend(servers["a"], "chat-a:1b", "shared:1b", name="pod-a"),
            _backend(servers["b"], "embed:1b", "shared:1b", name="pod-b"),
        ),
    )


@pytest.fixture
async def routed(
    servers: dict[str, OllamaServer],
) -> AsyncIterator[tuple[Router, TestServer, aiohttp.ClientSession]]:
    router = Router(_table(servers), connect_timeout=2.0)
    server = TestServer(router.app(), host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession(base_url=str(server.make_url(""))) as client:
        yield router, server, client
    await server.close()


def _loaded(server: OllamaServer) -> set[str]:
    status, answer = server.api("GET", "/api/ps")
    assert status == 200
    return {m["name"] for m in answer["models"]}


async def test_chat_and_generate_go_to_the_server_of_their_model(routed: Routed, servers: Servers) -> None:
    _, _, client = routed
    async with client.post("/api/chat", json={"model": "chat-a:1b", "stream": False,
                                              "messages": [{"role": "user", "content": "hello"}], **GENERATE}) as answer:  # fmt: skip
        assert answer.status == 200, await answer.text()
        chat = await answer.json()
    assert chat["model"] == "chat-a:1b" and chat["done"] is True and "content" in chat["message"]
    assert "chat-a:1b" in _loaded(servers["a"]) and "chat-a:1b" not in _loaded(servers["b"])
    async with client.post("/api/generate", json={"model": "embed:1b", "prompt": "x"}) as answer:
        assert answer.status == 400  # Ollama's own refusal, passed through from the embedding model's server
        assert "does not support generate" in (await answer.json())["error"]


async def test_a_stream_passes_through_as_it_is_made(routed: Routed) -> None:
    _, _, client = routed
    options = {"options": {"num_predict": 24, "temperature": 0}}
    async with client.post(
        "/api/generate", json={"model": "shared:1b", "prompt": "hello", **options}
    ) as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("application/x-ndjson")
        arrivals: list[tuple[float, bytes]] = []
        async for chunk in answer.content.iter_any():
            arrivals.append((time.monotonic(), chunk))
    lines = [json.loads(line) for line in b"".join(c for _, c in arrivals).splitlines() if line]
    assert lines[-1]["done"] is True and len(lines) > 3
    assert len(arrivals) > 1, "the router buffered the whole stream"
    assert arrivals[-1][0] - arrivals[0][0] > 0  # the first line reached the client before the last was made


async def test_both_apis_embeddings_and_openai_chat(routed: Routed) -> None:
    _, _, client = routed
    async with client.post("/api/embed", json={"model": "embed:1b", "input": ["a", "b"]}) as answer:
        assert answer.status == 200, await answer.text()
        assert len((await answer.json())["embeddings"]) == 2
    async with client.post("/v1/embeddings", json={"model": "embed:1b", "input": "a"}) as answer:
        assert answer.status == 200, await answer.text()
        assert (await answer.json())["data"][0]["object"] == "embedding"
    body = {"model": "chat-a:1b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 6}
    async with client.post("/v1/chat/completions", json=body) as answer:
        assert answer.status == 200, await answer.text()
        assert (await answer.json())["object"] == "chat.completion"
    async with client.post("/v1/chat/completions", json={**body, "stream": True}) as answer:
        assert answer.status == 200
        events = [line async for line in answer.content if line.startswith(b"data:")]
    assert events[-1].strip() == b"data: [DONE]" and len(events) > 2


async def test_listings_answer_the_union_of_routed_models(routed: Routed) -> None:
    _, _, client = routed
    async with client.get("/api/tags") as answer:
        names = [m["name"] for m in (await answer.json())["models"]]
    assert names == ["chat-a:1b", "embed:1b", "shared:1b"]
    async with client.get("/v1/models") as answer:
        assert [m["id"] for m in (await answer.json())["data"]] == names
    async with client.get("/api/version") as answer:
        assert answer.status == 200 and "version" in await answer.json()


async def test_an_unknown_model_or_path_gets_ollamas_own_error_shape(routed: Routed) -> None:
    _, _, client = routed
    async with client.post("/api/chat", json={"model": "mistral", "messages": []}) as answer:
        assert answer.status == 404
        assert await answer.json() == {
            "error": "model 'mistral' not found: this endpoint serves chat-a:1b, embed:1b, shared:1b"
        }
    async with client.post("/v1/chat/completions", json={"model": "mistral", "messages": []}) as answer:
        assert answer.status == 404 and "embed:1b" in (await answer.json())["error"]["message"]
    async with client.post("/api/pull", json={"model": "shared:1b"}) as answer:
        assert answer.status == 404  # the router serves models; it does not manage them


async def test_a_server_that_went_down_is_skipped_for_another_replica(
    routed: Routed, servers: Servers, tmp_path: Path
) -> None:
    router, _, client = routed
    doomed = _server({"shared:1b": False}, tmp_path)
    router.replace(
        RouteTable(
            "ollama",
            (_backend(doomed, "shared:1b", name="pod-c"), *_table(servers).backends),
        )
    )
    doomed.stop()  # its address now refuses connections, as a deleted pod's does
    for _ in range(3):
        async with client.post("/api/generate", json={"model": "shared:1b", "prompt": "x", "stream": False,
                                                       **GENERATE}) as answer:  # fmt: skip
            assert answer.status == 200, await answer.text()
    assert router.retries.labels(model="shared:1b")._value.get() >= 3


async def test_a_model_that_moves_keeps_answering_without_a_restart(routed: Routed, servers: Servers) -> None:
    router, _, client = routed
    body = {
        "model": "chat-a:1b",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": False,
        **GENERATE,
    }

    async def ask() -> int:
        async with client.post("/api/chat", json=body) as answer:
            await answer.read()
            return answer.status

    servers["b"].api("POST", "/api/generate", {"model": "chat-a:1b", "keep_alive": 0})  # not loaded on B
    first = [asyncio.create_task(ask()) for _ in range(6)]
    await asyncio.sleep(0.05)
    moved = _table(servers).backends
    router.replace(
        RouteTable("ollama", (Backend(moved[0].address, ("shared:1b",), pod="pod-a"),
                              Backend(moved[1].address, ("embed:1b", "shared:1b", "chat-a:1b"), pod="pod-b")))
    )  # fmt: skip
    then = [asyncio.create_task(ask()) for _ in range(6)]
    assert await asyncio.gather(*first, *then) == [200] * 12
    assert "chat-a:1b" in _loaded(servers["b"])  # the requests after the move went to B
