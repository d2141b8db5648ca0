"""Run the real Ollama server (built for CPU by ``hack/build-engines.sh``) the way a pod runs it.

The server gets exactly the env a Kubernetes pod would render (``OLLAMA_HOST=0.0.0.0:11434``,
``OLLAMA_MODELS=/models``, …) and still never clashes with another test or listens on a host
interface, because each server lives in namespaces of its own, made with ``unshare`` (root only):

- a network namespace with only ``lo`` (up): ``0.0.0.0:11434`` is this server's alone, nothing
  outside can reach it and it reaches nothing (``ollama pull`` fails at once, as offline) —
  unless ``host_network``: then the server shares the host's loopback on a port of its own, for
  a test whose client reaches several servers, as the router reaches pods;
- a PID namespace: the command is PID 1, like a container's, and everything it started dies
  with it;
- a private mount namespace whose root is a fresh tmpfs holding a recursive bind of each
  top-level host directory, except ``/tmp`` and ``HOME`` (``/root``), which are private
  per-server folders, plus the models volume (the ``OLLAMA_MODELS`` path, e.g. ``/models``)
  bound to a host folder (:attr:`OllamaServer.models_dir`) and the engine's folder at
  :data:`ENGINE_DIR` (first on ``PATH``, so ``ollama`` resolves as in the image). The server
  chroots into it, so the literal pod paths work and nothing is created on the host's ``/``.

Given the pod's ``securityContext``, the command runs as its ``runAsUser``/``runAsGroup`` with the
``fsGroup`` as a supplementary group, and the models volume gets what the kubelet gives a volume
with an fsGroup (``fsGroupChangePolicy: OnRootMismatch``): when its top folder's group is not the
fsGroup, every file is given that group, group read-write, folders set-group-id; an emptyDir's top
folder is world-writable (0777).

:meth:`OllamaServer.exec` runs a command as the kubelet runs an exec hook or probe: inside the
same namespaces and root (``nsenter``), with the container env, stdin from /dev/null, killed at
the timeout. :meth:`OllamaServer.api` talks HTTP to the server from inside its network namespace.

:func:`write_tiny_gguf` writes a few-hundred-KB llama-architecture GGUF (random weights, a
SentencePiece vocabulary of control, byte and letter tokens) that the server loads on CPU: a
chat model answers ``/api/generate``; with ``embedding=True`` it carries ``llama.pooling_type``,
which makes Ollama treat it as an embedding model (``/api/embed`` works, ``/api/generate``
answers 400 "does not support generate").
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ENGINES_BIN_ENV = "GPUPIN_ENGINES_BIN"
"""Env var naming the folder that holds the ``ollama`` binary (what hack/build-engines.sh prints)."""

ENGINE_DIR = "/gpupin-engine"
"""Where the binary's folder appears inside the server's root (first on the container's PATH)."""

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class EngineUnavailable(Exception):
    """The real server cannot run here; ``str(self)`` is the reason to skip with."""


def ollama_binary() -> Path | None:
    """The ``ollama`` binary in ``$GPUPIN_ENGINES_BIN``, or None when the variable is unset or empty.

    Raises FileNotFoundError when the variable names a folder without the binary (a broken
    build should fail the tests, not skip them)."""
    folder = os.environ.get(ENGINES_BIN_ENV, "")
    if not folder:
        return None
    binary = Path(folder) / "ollama"
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise FileNotFoundError(f"${ENGINES_BIN_ENV}={folder} holds no executable 'ollama'")
    return binary


@functools.cache
def engine_problem() -> str | None:
    """Why the real Ollama server cannot run here (its build not given, or no isolation), or None."""
    if ollama_binary() is None:
        return f"${ENGINES_BIN_ENV} is unset: `make test` builds the real Ollama (hack/build-engines.sh)"
    return isolation_problem()


def isolation_problem() -> str | None:
    """Why :class:`OllamaServer` cannot isolate a server here, or None when it can."""
    if os.geteuid() != 0:
        return "running the real Ollama server needs root (network, PID and mount namespaces)"
    for tool in ("unshare", "nsenter", "mount"):
        if shutil.which(tool) is None:
            return f"running the real Ollama server needs '{tool}' (util-linux)"
    try:
        probe = subprocess.run(
            ["unshare", "--net", "--pid", "--fork", "--mount-proc", "--", "true"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unshare does not work here: {e}"
    if probe.returncode != 0:
        return f"unshare cannot make namespaces here: {probe.stderr.strip() or probe.returncode}"
    return None


# --- tiny models ---------------------------------------------------------------------------------

_TINY_PIECES = ["▁", *"abcdefghijklmnopqrstuvwxyz0123456789", "▁the", "▁a", "▁hello", "▁world"]


def write_tiny_gguf(
    path: Path | str, *, embedding: bool = False, context_length: int = 32768, seed: int = 0
) -> None:
    """Write a tiny llama-architecture GGUF (~300 KB, f32, one layer, random weights) to ``path``.

    ``embedding=True`` adds ``llama.pooling_type`` (mean): Ollama then lists the model with the
    "embedding" capability instead of "completion" (``server/images.go`` Capabilities), so
    ``/api/embed`` serves it and ``/api/generate`` refuses it. ``context_length`` is the
    training context, which caps the context Ollama gives it. The same arguments write the same
    bytes (the same digest in Ollama)."""
    import gguf  # test-only dependency; imported here so collecting tests does not need it
    import numpy as np

    n_embd, n_head, n_ff, n_layer = 64, 4, 128, 1
    tokens: list[str] = ["<unk>", "<s>", "</s>"]
    types: list[int] = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]  # byte fallback: any text tokenizes
    types += [gguf.TokenType.BYTE] * 256
    tokens += _TINY_PIECES
    types += [gguf.TokenType.NORMAL] * len(_TINY_PIECES)
    scores = [0.0] * (3 + 256) + [-float(len(p)) for p in _TINY_PIECES]
    scores[-4:] = [-1.0] * 4  # prefer the whole words
    n_vocab = len(tokens)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("gpupin-tiny-embed" if embedding else "gpupin-tiny")
    writer.add_context_length(context_length)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    if embedding:
        writer.add_pooling_type(gguf.PoolingType.MEAN)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)

    rng = np.random.default_rng(seed)

    def weights(*shape: int) -> Any:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    ones = np.ones(n_embd, dtype=np.float32)
    # numpy shapes are GGUF's dimensions reversed: token_embd is {n_embd, n_vocab} in llama.cpp.
    writer.add_tensor("token_embd.weight", weights(n_vocab, n_embd))
    writer.add_tensor("output_norm.weight", ones)
    for i in range(n_layer):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", ones)
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"blk.{i}.{name}.weight", weights(n_embd, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", ones)
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weights(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weights(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weights(n_embd, n_ff))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


# --- the server ----------------------------------------------------------------------------------

# Runs as PID 1 of the new namespaces (under `unshare --net --pid --fork --mount-proc`): brings `lo`
# up, builds the root (see the module docstring), chroots into it and execs the command.
_LAUNCHER = r"""
import fcntl, json, os, socket, struct, subprocess, sys
spec = json.loads(sys.argv[1])
if not spec["host_network"]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flags = struct.unpack("16sh22x", fcntl.ioctl(s, 0x8913, struct.pack("16sh22x", b"lo", 0)))[1]
    fcntl.ioctl(s, 0x8914, struct.pack("16sh22x", b"lo", flags | 1))  # SIOCSIFFLAGS |= IFF_UP
    s.close()
def mount(*args):
    subprocess.run(["mount", *args], check=True)
root = spec["root"]
binds = spec["binds"]
mount("-t", "tmpfs", "-o", "mode=0755", "gpupin-root", root)
for name in sorted(os.listdir("/")):
    src, dst = "/" + name, os.path.join(root, name)
    if src in binds:
        continue
    if os.path.islink(src):
        os.symlink(os.readlink(src), dst)
    elif os.path.isdir(src):
        os.mkdir(dst)
        mount("--rbind", src, dst)
    else:
        open(dst, "w").close()
        mount("--bind", src, dst)
for target in sorted(binds, key=len):
    dst = root + target
    os.makedirs(dst, exist_ok=True)
    mount("--bind", binds[target], dst)
os.chroot(root)
os.chdir("/")
if spec["user"]:
    uid, gid, groups = spec["user"]
    os.setgroups(groups)
    os.setgid(gid)
    os.setuid(uid)
os.execvpe(spec["argv"][0], spec["argv"], spec["env"])  # not os.environ: Python may have coerced LC_CTYPE
"""

_UNSHARE = ["unshare", "--net", "--pid", "--fork", "--kill-child", "--mount-proc", "--propagation", "private"]

# Runs in the server's network namespace: one HTTP request, prints {"status": N, "body": TEXT},
# or exits 3 printing the error when the server cannot be reached.
_HTTP_CLIENT = r"""
import json, sys, urllib.error, urllib.request
method, url, body, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
req = urllib.request.Request(url, method=method, data=body.encode() if body else None,
                             headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=timeout) as r:
        status, text = r.status, r.read().decode("utf-8", "replace")
except urllib.error.HTTPError as e:
    status, text = e.code, e.read().decode("utf-8", "replace")
except OSError as e:
    print(f"{type(e).__name__}: {e}")
    sys.exit(3)
print(json.dumps({"status": status, "body": text}))
"""


def _user_of(security: Mapping[str, Any]) -> tuple[int, int, list[int]] | None:
    """(uid, gid, supplementary groups) of a pod securityContext's runAsUser (None: root, the image's)."""
    uid = security.get("runAsUser")
    if uid is None:
        return None
    gid = int(security.get("runAsGroup", uid))
    return int(uid), gid, [int(security["fsGroup"])] if security.get("fsGroup") is not None else []


def _give_group(folder: Path, gid: int) -> None:
    """What the kubelet does to a volume with an fsGroup under ``OnRootMismatch``, and an emptyDir's
    top folder mode (0777)."""
    folder.mkdir(parents=True, exist_ok=True)
    if folder.stat().st_gid == gid:
        return
    for path in [folder, *folder.rglob("*")]:
        if path.is_symlink():
            continue
        os.chown(path, -1, gid)
        mode = path.stat().st_mode
        path.chmod(mode | 0o060 | (0o2010 if path.is_dir() else 0))
    folder.chmod(0o2777)


class ExecResult(subprocess.CompletedProcess[str]):
    """A finished exec; ``timed_out`` when it was killed at its timeout (returncode is then -9)."""

    def __init__(self, args: list[str], returncode: int, stdout: str, stderr: str, timed_out: bool) -> None:
        super().__init__(args, returncode, stdout, stderr)
        self.timed_out = timed_out


def _decode_body(text: str) -> Any:
    """JSON, else a list of NDJSON objects (streamed answers), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except ValueError:
        return text


_LIVE: weakref.WeakSet[OllamaServer] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for server in list(_LIVE):
        server.stop()


class OllamaServer:
    """One real Ollama server (or another command from the image, e.g. the pull init container's
    script) isolated as described in the module docstring.

    ``env`` is the container's env exactly as the pod renders it; ``PATH`` (the engine folder
    first) and ``HOME=/root`` are added unless it sets them, as the image and the runtime do.
    ``models_dir`` is the host folder behind the models volume (a fresh one when None; pass the
    same folder to two instances to share the volume, e.g. init container then server)."""

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        binary: Path | None = None,
        command: Sequence[str] = ("ollama", "serve"),
        models_dir: Path | None = None,
        security: Mapping[str, Any] | None = None,
        host_network: bool = False,
    ) -> None:
        found = binary or ollama_binary()
        if found is None:
            raise EngineUnavailable(
                f"${ENGINES_BIN_ENV} is unset: run hack/build-engines.sh and export its output"
            )
        self.binary = found
        self.env: dict[str, str] = {"PATH": f"{ENGINE_DIR}:{DEFAULT_PATH}", "HOME": "/root", **env}
        self.command = list(command)
        self.host_network = host_network
        """Share the host's network namespace (set ``OLLAMA_HOST`` to ``127.0.0.1:PORT`` then): for a
        test whose client reaches several servers, as pods reach each other (the router's)."""
        self.state_dir = Path(tempfile.mkdtemp(prefix="gpupin-ollama-"))
        self.tmp_dir = self.state_dir / "tmp"
        """Host folder behind the container's /tmp."""
        self.home_dir = self.state_dir / "root"
        """Host folder behind the container's HOME (/root unless the env sets it)."""
        self.models_dir = models_dir or self.state_dir / "models"
        """Host folder behind the models volume (the container's OLLAMA_MODELS path)."""
        self.models_path = self.env.get("OLLAMA_MODELS") or f"{self.env['HOME']}/.ollama/models"
        """The models path inside the container."""
        for d in (self.tmp_dir, self.home_dir, self.models_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.chmod(0o1777)
        self.user = _user_of(security or {})
        """(uid, gid, supplementary groups) the command runs as; None: root."""
        self._fs_group = (security or {}).get("fsGroup")
        self._binds = {"/tmp": str(self.tmp_dir), ENGINE_DIR: str(self.binary.parent)}
        home = os.path.normpath(self.env["HOME"])
        try:
            if home == "/tmp" or home.startswith("/tmp/"):  # inside the private /tmp: no mount of its own
                self.home_dir = self.tmp_dir / os.path.relpath(home, "/tmp")
            else:
                self._add_bind(self.env["HOME"], self.home_dir)
            self._add_bind(self.models_path, self.models_dir)
        except ValueError:
            shutil.rmtree(self.state_dir, ignore_errors=True)
            raise
        self._log_path = self.state_dir / "server.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self._final_log: str | None = None

    def _add_bind(self, target: str, source: Path) -> None:
        if not target.startswith("/"):
            raise ValueError(f"container path {target!r} is not absolute")
        target = os.path.normpath(target)
        top = "/" + target.split("/")[1]
        # The mount point is made inside the new root: in the tmpfs (a top-level path the host
        # lacks), under a private folder, or it must already exist (never write the host's tree).
        if top not in self._binds and os.path.lexists(top) and not os.path.isdir(target):
            raise ValueError(
                f"{target} does not exist on the host and cannot be mounted over without creating it"
            )
        self._binds[target] = str(source)

    # --- lifecycle ---

    def start(self) -> None:
        """Start the command as PID 1 of its namespaces; returns at once (see :meth:`wait_until_up`)."""
        problem = isolation_problem()
        if problem:
            raise EngineUnavailable(problem)
        if self._proc is not None:
            raise RuntimeError("already started")
        root = self.state_dir / "rootfs"
        root.mkdir(exist_ok=True)
        if self._fs_group is not None:
            _give_group(self.models_dir, int(self._fs_group))
        spec = {
            "root": str(root),
            "binds": self._binds,
            "argv": self.command,
            "env": self.env,
            "user": self.user,
            "host_network": self.host_network,
        }
        unshare = [a for a in _UNSHARE if not (self.host_network and a == "--net")]
        with self._log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [*unshare, "--", sys.executable, "-I", "-c", _LAUNCHER, json.dumps(spec)],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _LIVE.add(self)
        deadline = time.monotonic() + 10
        while self._pid is None and time.monotonic() < deadline and self._proc.poll() is None:
            try:
                children = Path(f"/proc/{self._proc.pid}/task/{self._proc.pid}/children").read_text().split()
            except OSError:
                children = []
            if children:
                self._pid = int(children[0])
            else:
                time.sleep(0.01)
        if self._pid is None:
            self.stop()
            raise RuntimeError(f"the isolated server did not start:\n{self.log[-2000:]}")

    @property
    def pid(self) -> int:
        """Host PID of the command (PID 1 inside), for nsenter."""
        if self._pid is None:
            raise RuntimeError("not started")
        return self._pid

    def poll(self) -> int | None:
        """None while the command runs, else its exit status (negative: killed by that signal)."""
        if self._proc is None:
            raise RuntimeError("not started")
        return self._proc.poll()

    def wait_until_up(self, timeout: float = 60) -> None:
        """Wait until ``GET /`` answers 200; raises RuntimeError (with the log) when the server
        exits or the time runs out."""
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            if self.poll() is not None:
                raise RuntimeError(f"the server exited with {self.poll()}:\n{self.log[-3000:]}")
            try:
                status, _ = self.api("GET", "/", timeout=5)
                if status == 200:
                    return
                last = f"GET / answered {status}"
            except ConnectionError as e:
                last = str(e)
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server was not up after {timeout} s ({last}):\n{self.log[-3000:]}")
            time.sleep(0.2)

    def stop(self, timeout: float = 15) -> int | None:
        """SIGTERM the command, SIGKILL everything after ``timeout``; removes the private folders
        (and the models folder when this instance made it). Returns the exit status (negative:
        the signal that ended it)."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None and self._pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()  # unshare --kill-child SIGKILLs PID 1, which takes the namespace down
            proc.wait()
        _LIVE.discard(self)
        self._final_log = self.log
        # The mounts only ever existed in the server's mount namespace: on the host these are
        # plain folders (with the models folder when this instance made it; a caller's is elsewhere).
        shutil.rmtree(self.state_dir, ignore_errors=True)
        return proc.returncode

    def __enter__(self) -> OllamaServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def log(self) -> str:
        """Everything the command wrote to stdout and stderr so far (kept after :meth:`stop`)."""
        if self._final_log is not None:
            return self._final_log
        try:
            return self._log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # --- inside the namespaces ---

    def exec(self, argv: Sequence[str], timeout: float = 30) -> ExecResult:
        """Run ``argv`` as the kubelet runs an exec hook or probe: in the server's namespaces and
        root, as the container's user, with the container env, stdin /dev/null; killed (with all it
        started in the same session) at ``timeout``."""
        args = ["nsenter", f"--target={self.pid}", "--net", "--mount", "--pid", "--root", "--wd", "--"]
        if self.user is not None:
            uid, gid, groups = self.user
            args += ["setpriv", f"--reuid={uid}", f"--regid={gid}"]
            args += [f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups", "--"]
        args += argv
        proc = subprocess.Popen(
            args,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        timed_out = False
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        return ExecResult(
            list(argv), proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"), timed_out
        )

    @property
    def port(self) -> int:
        """The port from the container's OLLAMA_HOST (11434 when unset or without one)."""
        host = self.env.get("OLLAMA_HOST", "").split("://")[-1].rstrip("/")
        _, sep, port = host.rpartition(":")
        return int(port) if sep and port.isdigit() else 11434

    def api(self, method: str, path: str, body: Any = None, *, timeout: float = 120) -> tuple[int, Any]:
        """One HTTP request to the server from inside its network namespace: ``(status, answer)``,
        the answer decoded as JSON (a list for streamed NDJSON, the text when neither).
        Raises ConnectionError when the server cannot be reached."""
        if self.poll() is not None:
            raise ConnectionError(f"{method} {path}: the server is not running (exit status {self.poll()})")
        data = "" if body is None else body if isinstance(body, str) else json.dumps(body)
        url = f"http://127.0.0.1:{self.port}{path}"
        done = subprocess.run(
            [
                "nsenter",
                f"--target={self.pid}",
                "--net",
                "--",
                sys.executable,
                "-I",
                "-c",
                _HTTP_CLIENT,
                method,
                url,
                data,
                str(timeout),
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout + 30,
        )
        if done.returncode == 3:
            raise ConnectionError(f"{method} {path}: {done.stdout.strip()}")
        if done.returncode != 0:
            raise RuntimeError(
                f"{method} {path}: the client failed ({done.returncode}): {done.stderr.strip()}"
            )
        answer = json.loads(done.stdout)
        return int(answer["status"]), _decode_body(answer["body"])

    def create_model(
        self, name: str, gguf_path: Path | None = None, *, embedding: bool = False, timeout: float = 120
    ) -> None:
        """``ollama create NAME`` inside the container from a Modelfile ``FROM`` the GGUF (copied
        into the container's /tmp). Without ``gguf_path`` a tiny model is written
        (:func:`write_tiny_gguf` with ``embedding``). Raises RuntimeError with the CLI's output
        when it fails."""
        folder = self.tmp_dir / "gpupin-create"
        folder.mkdir(exist_ok=True)
        slug = "".join(c if c.isalnum() else "-" for c in name)
        local = folder / f"{slug}.gguf"
        if gguf_path is None:
            write_tiny_gguf(local, embedding=embedding)
        else:
            shutil.copyfile(gguf_path, local)
        (folder / f"{slug}.Modelfile").write_text(f"FROM /tmp/gpupin-create/{slug}.gguf\n")
        done = self.exec(["ollama", "create", name, "-f", f"/tmp/gpupin-create/{slug}.Modelfile"], timeout)
        local.unlink()
        if done.returncode != 0:
            raise RuntimeError(
                f"ollama create {name} failed ({'timed out' if done.timed_out else done.returncode}):"
                f"\n{done.stdout[-1500:]}{done.stderr[-1500:]}"
            )
