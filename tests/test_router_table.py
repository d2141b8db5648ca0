"""The router's pure core: which server a request goes to, errors in the engine's shape, listings."""

from __future__ import annotations

import json

import pytest

from gpupin.router.table import Backend, RouteError, RouteTable, error_body, merge_listing, model_of

A = Backend("10.0.0.1:11434", ("qwen2.5:14b", "nomic-embed-text"), pod="assistant-a")
B = Backend("10.0.0.2:11434", ("llama3.1:8b", "nomic-embed-text:latest"), pod="assistant-b")
C = Backend("10.0.0.3:11434", ("llama3.1:8b",), ready=False, pod="assistant-c")


def body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def test_a_request_goes_to_a_server_of_its_model() -> None:
    table = RouteTable("ollama", (A, B, C))
    assert table.route("/api/chat", body(model="qwen2.5:14b"))[1] is A
    assert table.route("/v1/chat/completions", body(model="llama3.1:8b", stream=True))[1] is B


@pytest.mark.parametrize(
    "asked",
    [
        "nomic-embed-text",
        "nomic-embed-text:latest",
        "library/nomic-embed-text",
        "registry.ollama.ai/library/nomic-embed-text:latest",
    ],
)
def test_ollama_names_match_as_ollama_matches_them(asked: str) -> None:
    table = RouteTable("ollama", (A, B))
    model, backend = table.route("/api/embed", body(model=asked, input="x"))
    assert model == asked and backend in (A, B)


def test_vllm_names_match_exactly() -> None:
    table = RouteTable("vllm", (Backend("10.0.0.9:8000", ("Qwen/Qwen2.5-3B-Instruct",)),))
    assert (
        table.route("/v1/completions", body(model="Qwen/Qwen2.5-3B-Instruct"))[1].address == "10.0.0.9:8000"
    )
    with pytest.raises(RouteError) as refused:
        table.route("/v1/completions", body(model="qwen/qwen2.5-3b-instruct"))
    assert refused.value.status == 404


def test_replicas_are_spread_by_requests_in_flight_and_failed_ones_skipped() -> None:
    table = RouteTable("ollama", (A, B))
    assert table.route("/api/embed", body(model="nomic-embed-text"), {A.address: 2, B.address: 1})[1] is B
    assert table.route("/api/embed", body(model="nomic-embed-text"), {A.address: 0, B.address: 1})[1] is A
    assert table.route("/api/embed", body(model="nomic-embed-text"), {}, tried=[A.address])[1] is B


def test_an_unknown_model_gets_the_engines_own_error_with_the_models_served() -> None:
    table = RouteTable("ollama", (A, B))
    with pytest.raises(RouteError) as native:
        table.route("/api/generate", body(model="mistral"))
    assert native.value.status == 404
    assert native.value.body == {
        "error": "model 'mistral' not found: this endpoint serves llama3.1:8b, nomic-embed-text, qwen2.5:14b"
    }
    with pytest.raises(RouteError) as openai:
        table.route("/v1/chat/completions", body(model="mistral"))
    assert set(openai.value.body["error"]) == {"message", "type", "param", "code"}
    assert "qwen2.5:14b" in openai.value.body["error"]["message"]


def test_vllm_errors_take_vllms_shape() -> None:
    assert error_body("vllm", "openai", "gone", 404) == {
        "object": "error", "message": "gone", "type": "NotFoundError", "param": None, "code": 404,
    }  # fmt: skip


def test_no_ready_server_is_503_and_says_which_pods() -> None:
    table = RouteTable("ollama", (A, C))
    with pytest.raises(RouteError) as refused:
        table.route("/api/chat", body(model="llama3.1:8b"))
    assert refused.value.status == 503
    assert "assistant-c" in refused.value.body["error"] and "ready" in refused.value.body["error"]
    with pytest.raises(RouteError) as exhausted:
        RouteTable("ollama", (A, B)).route("/api/chat", body(model="llama3.1:8b"), tried=[B.address])
    assert "tried and failed" in exhausted.value.body["error"]


@pytest.mark.parametrize(
    "raw", [b"", b"not json", b"[1]", b'{"model": 3}', b'{"model": ""}', b'{"prompt": "x"}']
)
def test_a_body_without_a_model_is_400(raw: bytes) -> None:
    with pytest.raises(RouteError) as refused:
        RouteTable("ollama", (A,)).route("/api/generate", raw)
    assert refused.value.status == 400 and "model" in refused.value.body["error"]


def test_show_also_takes_the_older_name_field() -> None:
    assert model_of(body(name="qwen2.5:14b"), "/api/show") == "qwen2.5:14b"
    assert model_of(body(name="qwen2.5:14b"), "/api/chat") is None


def test_listings_are_the_union_of_routed_models_only() -> None:
    table = RouteTable("ollama", (A, B))
    answers = [
        {"models": [{"name": "qwen2.5:14b", "size": 1}, {"name": "nomic-embed-text:latest", "size": 2}]},
        {"models": [{"name": "llama3.1:8b", "size": 3}, {"name": "nomic-embed-text:latest", "size": 2},
                    {"name": "leftover:7b", "size": 9}]},
        "not a listing",
    ]  # fmt: skip
    merged = merge_listing("/api/tags", table, answers)
    assert [m["name"] for m in merged["models"]] == ["llama3.1:8b", "nomic-embed-text:latest", "qwen2.5:14b"]
    openai = merge_listing(
        "/v1/models", table, [{"object": "list", "data": [{"id": "qwen2.5:14b"}, {"id": "x"}]}]
    )
    assert openai == {"object": "list", "data": [{"id": "qwen2.5:14b"}]}


def test_what_each_engine_serves() -> None:
    ollama, vllm = RouteTable("ollama"), RouteTable("vllm")
    assert ollama.serves("/api/chat") and ollama.serves("/v1/embeddings") and ollama.serves("/api/tags")
    assert not ollama.serves("/api/pull") and not ollama.serves("/api/delete")  # serving only
    assert vllm.serves("/v1/chat/completions") and not vllm.serves("/api/chat")
    with pytest.raises(ValueError, match="engine 'tgi'"):
        RouteTable("tgi")
