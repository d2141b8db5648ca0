"""A local stand-in for the Hugging Face Hub and the Ollama registry, serving recorded model metadata.

The real services cannot be reached from the test machine, so this server speaks the parts of
their HTTP protocols gpupin uses, over recorded metadata in ``tests/fixtures/modelhub/``:

- Hugging Face (what ``huggingface_hub`` asks for): ``HEAD``/``GET /{repo}/resolve/{rev}/{file}``
  with ``X-Repo-Commit``/``ETag`` headers and ``Range`` support, ``/api/models/{repo}`` listings,
  and the ``X-Error-Code`` header by which the client tells a missing repo (``RepoNotFound``), a
  missing file (``EntryNotFound``) and a gated repo (``GatedRepo``) apart.
- Ollama's registry (and Hugging Face's Ollama-compatible one for ``hf.co/…`` names): manifests at
  ``/v2/{namespace}/{model}/manifests/{tag}`` and blobs at ``/v2/{namespace}/{model}/blobs/{digest}``,
  answering ``Range`` requests with 206 and the blob's full length in ``Content-Range``.

What is recorded is the metadata, not files: ``config.json`` as published, safetensors parameter
counts by dtype (the server writes a safetensors header holding them), and GGUF key/values with
tensor sizes (the server writes a GGUF header with the ``gguf`` package, tensors summarised as
one per kind with the published byte totals; ``tokens: false`` writes the vocabulary's size in
place of its list, which the reader takes seconds to parse). Blobs are never served beyond their header: a test
that asks for weights gets the header and zeros, and :attr:`ModelHub.bytes_served` shows it.
"""

from __future__ import annotations

import hashlib
import json
import struct
import tempfile
import threading
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import yaml

FIXTURES = Path(__file__).parent / "fixtures" / "modelhub"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
_FLOAT32 = np.dtype(np.float32)  # with raw_dtype: the shape is in elements, not bytes
GATED_TOKEN = "hf_test_token"  # the token that opens gated repos


class ModelHub:
    """``with ModelHub() as hub:`` serves the fixtures at ``hub.url`` until the block ends."""

    def __init__(self, root: Path = FIXTURES) -> None:
        self.root = root
        self.requests: list[tuple[str, str, str | None]] = []
        """(method, path, Range header) of every request, in order."""
        self.bytes_served = 0
        self.fail_with: int | None = None
        """Answer every request with this status (a registry that is down)."""
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                hub._answer(self, head=True)

            def do_GET(self) -> None:
                hub._answer(self, head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ModelHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------ routing
    def _answer(self, handler: BaseHTTPRequestHandler, head: bool) -> None:
        path = handler.path.split("?", 1)[0]
        self.requests.append((handler.command, path, handler.headers.get("Range")))
        if self.fail_with is not None:
            return self._send(handler, self.fail_with, b"unavailable", head=head)
        parts = [p for p in path.split("/") if p]
        if parts[:1] == ["v2"]:
            return self._registry(handler, parts[1:], head)
        if parts[:2] == ["api", "models"]:
            return self._model_info(handler, parts[2:], head)
        if "resolve" in parts:
            i = parts.index("resolve")
            return self._resolve(handler, "/".join(parts[:i]), "/".join(parts[i + 2 :]), head)
        return self._send(handler, 404, b"not found", head=head, error="RepoNotFound")

    def _repo(self, repo: str) -> Path | None:
        folder = self.root / "hf" / repo
        return folder if folder.is_dir() else None

    def _resolve(self, handler: BaseHTTPRequestHandler, repo: str, file: str, head: bool) -> None:
        folder = self._repo(repo)
        if folder is None:
            return self._send(handler, 401, b"Repository not found", head=head, error="RepoNotFound")
        meta = _yaml(folder / "repo.yaml")
        if meta.get("gated") and handler.headers.get("Authorization") != f"Bearer {GATED_TOKEN}":
            return self._send(handler, 403, b"gated", head=head, error="GatedRepo")
        body = _hf_file(folder, file)
        if body is None:
            return self._send(handler, 404, b"Entry not found", head=head, error="EntryNotFound")
        self._send_range(handler, body, len(body), head)

    def _model_info(self, handler: BaseHTTPRequestHandler, parts: list[str], head: bool) -> None:
        repo = "/".join(parts[:2])
        folder = self._repo(repo)
        if folder is None:
            return self._send(handler, 404, b"{}", head=head, error="RepoNotFound")
        files = _hf_files(folder)
        if len(parts) > 2 and parts[2] == "tree":
            body = [
                {"type": "file", "path": f, "size": 1, "oid": hashlib.sha1(f.encode()).hexdigest()}
                for f in files
            ]
        else:
            body = {"id": repo, "sha": COMMIT, "siblings": [{"rfilename": f} for f in files]}
        self._send(handler, 200, json.dumps(body).encode(), head=head, content_type="application/json")

    def _registry(self, handler: BaseHTTPRequestHandler, parts: list[str], head: bool) -> None:
        if len(parts) < 4 or parts[-2] not in ("manifests", "blobs"):
            return self._send(handler, 404, b"{}", head=head)
        name, kind, ref = "/".join(parts[:-2]), parts[-2], parts[-1]
        folder = self.root / "ollama" / name
        if kind == "manifests":
            model = _yaml(folder / f"{ref}.yaml") if (folder / f"{ref}.yaml").is_file() else None
            if model is None:
                return self._send(handler, 404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}', head=head)
            manifest = _manifest(folder, ref)
            return self._send(
                handler, 200, json.dumps(manifest).encode(), head=head, content_type="application/json"
            )
        for tag_file in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
            model = _yaml(tag_file)
            if _digest(folder, tag_file.stem) == ref:
                header = _gguf_header(str(folder), tag_file.stem)
                return self._send_range(handler, header, int(model["size"]), head)
        return self._send(handler, 404, b"blob unknown", head=head)

    # ------------------------------------------------------------------ responses
    def _send_range(self, handler: BaseHTTPRequestHandler, body: bytes, total: int, head: bool) -> None:
        wanted = handler.headers.get("Range")
        if wanted and wanted.startswith("bytes="):
            start_text, _, end_text = wanted[6:].partition("-")
            start = int(start_text or 0)
            end = min(int(end_text) if end_text else total - 1, total - 1)
            chunk = body[start : end + 1].ljust(end + 1 - start, b"\0") if start < len(body) else b""
            chunk = chunk[: end + 1 - start]
            return self._send(handler, 206, chunk, head=head, content_range=f"bytes {start}-{end}/{total}")
        if total != len(body):  # a whole blob: the header only stands for it
            body = body.ljust(min(total, len(body) + 1024 * 1024), b"\0")
        self._send(handler, 200, body, head=head)

    def _send(
        self,
        handler: BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        head: bool,
        error: str | None = None,
        content_type: str = "application/octet-stream",
        content_range: str | None = None,
    ) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("X-Repo-Commit", COMMIT)
        handler.send_header("ETag", f'"{hashlib.sha1(body).hexdigest()}"')
        if error:
            handler.send_header("X-Error-Code", error)
        if content_range:
            handler.send_header("Content-Range", content_range)
        handler.end_headers()
        if not head:
            handler.wfile.write(body)
            self.bytes_served += len(body)


# ---------------------------------------------------------------------- recorded metadata → wire formats
def _yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) if path.is_file() else {}


def _hf_files(folder: Path) -> list[str]:
    meta = _yaml(folder / "repo.yaml")
    files = ["config.json"] if (folder / "config.json").is_file() else []
    if "safetensors" in meta:
        files.append("model.safetensors")
    if "shards" in meta:
        files += ["model.safetensors.index.json", *meta["shards"]]
    return files + list(meta.get("files", []))


def _hf_file(folder: Path, file: str) -> bytes | None:
    meta = _yaml(folder / "repo.yaml")
    if file == "config.json" and (folder / "config.json").is_file():
        return (folder / "config.json").read_bytes()
    if file == "model.safetensors" and "safetensors" in meta:
        return _safetensors_header(meta["safetensors"])
    shards = meta.get("shards") or {}
    if file == "model.safetensors.index.json" and shards:
        weight_map = {f"{shard}.{dtype}": shard for shard, counts in shards.items() for dtype in counts}
        return json.dumps({"metadata": {}, "weight_map": weight_map}).encode()
    if file in shards:
        return _safetensors_header(shards[file], prefix=f"{file}.")
    return None


def _safetensors_header(counts: dict[str, int], prefix: str = "") -> bytes:
    """A safetensors header declaring one 1-D tensor per dtype with the recorded element count."""
    sizes = {"F32": 4, "F16": 2, "BF16": 2, "I32": 4, "I8": 1, "U8": 1, "F8_E4M3": 1}
    tensors: dict[str, Any] = {}
    offset = 0
    for dtype, count in counts.items():
        length = int(count) * sizes.get(dtype, 2)
        tensors[f"{prefix}{dtype}"] = {
            "dtype": dtype,
            "shape": [int(count)],
            "data_offsets": [offset, offset + length],
        }
        offset += length
    header = json.dumps(tensors).encode()
    return struct.pack("<Q", len(header)) + header


def _digest(folder: Path, tag: str) -> str:
    return "sha256:" + hashlib.sha256(f"{folder.name}:{tag}".encode()).hexdigest()


def _manifest(folder: Path, tag: str) -> dict[str, Any]:
    model = _yaml(folder / f"{tag}.yaml")
    layers = [
        {
            "mediaType": "application/vnd.ollama.image.model",
            "digest": _digest(folder, tag),
            "size": model["size"],
        }
    ]
    if model.get("projector"):
        layers.append(
            {
                "mediaType": "application/vnd.ollama.image.projector",
                "digest": _digest(folder, tag + "-mmproj"),
                "size": model["projector"],
            }
        )
    layers.append(
        {
            "mediaType": "application/vnd.ollama.image.params",
            "digest": _digest(folder, tag + "-params"),
            "size": 30,
        }
    )
    return {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "layers": layers,
    }


@cache
def _gguf_header(folder: str, tag: str) -> bytes:
    """The GGUF header of a recorded model: its key/values, a tokenizer of its vocabulary size and
    its tensors (by name, shape and type, as recorded)."""
    import gguf  # test dependency

    model = _yaml(Path(folder) / f"{tag}.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "h.gguf"
        writer = gguf.GGUFWriter(str(path), model["architecture"])
        for key, value in (model.get("kv") or {}).items():
            if isinstance(value, bool):
                writer.add_bool(key, value)
            elif isinstance(value, int):
                writer.add_uint32(key, value)
            elif isinstance(value, float):
                writer.add_float32(key, value)
            else:
                writer.add_string(key, str(value))
        if model.get("tokens", True):
            writer.add_token_list([f"t{i}" for i in range(int(model["vocab"]))])
        else:  # the size alone (llama.cpp's {arch}.vocab_size): a 150k-token list takes the reader seconds
            writer.add_uint32(f"{model['architecture']}.vocab_size", int(model["vocab"]))
        for name, (shape, type_name) in (model.get("tensors") or {}).items():
            qtype = gguf.GGMLQuantizationType[type_name]
            block, type_size = gguf.GGML_QUANT_SIZES[qtype]
            elements = 1
            for dim in shape:
                elements *= int(dim)
            nbytes = elements // block * type_size
            writer.add_tensor_info(name, [int(d) for d in shape], _FLOAT32, nbytes, raw_dtype=qtype)
        listed = sum(ti.nbytes for ti in writer.tensors[-1].values())
        rest = int(model.get("weights", listed)) - listed
        if rest > 0:  # the other weights, as one Q4_K tensor of their byte total
            block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q4_K]
            count = rest // type_size
            writer.add_tensor_info(
                "blk.weights",
                [count * block],
                _FLOAT32,
                count * type_size,
                raw_dtype=gguf.GGMLQuantizationType.Q4_K,
            )
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        writer.close()
        return path.read_bytes()
