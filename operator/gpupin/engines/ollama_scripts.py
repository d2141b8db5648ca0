"""The shell programs gpupin puts into Ollama pods, and the parser for what they report.

Pure: strings in, strings out. Each program runs in the stock ``ollama/ollama`` image, which
has bash but neither curl nor wget, so they speak HTTP/1.0 to the local server over bash's
``/dev/tcp`` (the server closes the connection after each answer, so ``cat`` reads it whole).

Why not the ``ollama`` CLI (``cmd/cmd.go``):

- ``ollama run --keepalive -1`` parses the flag with Go's ``time.ParseDuration``, which rejects
  ``-1`` ("missing unit in duration"; v0.12.6 and v0.17.4);
- ``ollama run MODEL ''`` with stdin not a terminal (a CRI exec) prepended stdin and sent the
  prompt ``" "`` in v0.12.6: a full generation; only an empty prompt makes the server load and
  stop (``server/routes.go`` GenerateHandler, ``done_reason: "load"``);
- embedding models refuse ``/api/generate`` with 400 "does not support generate" (the v0.17.4
  CLI refuses them without input text); ``POST /api/embed`` with an empty input loads them.

The three programs:

- :func:`pull_script` (init container): pulls every model; its last line names every model that
  could not be had, with Ollama's error, and it exits 1 (the kubelet retries with backoff; that
  line starts the termination message the operator reports).
- :func:`preload_script` (postStart hook): returns at once; a background process loads the
  models one after the other without generating, logs each to :data:`PRELOAD_LOG`, then stays
  to retry failed loads and reload models that left memory. It never fails, so a missing model
  cannot crash-loop the container.
- :func:`readiness_script` (readiness probe): Ready only when every model is in ``/api/ps``
  (matched by blob digest), not still being loaded, and, unless CPU is allowed, wholly in GPU
  memory (``size_vram == size``). When not, it prints one line naming each model and why
  (:func:`parse_readiness` reads it back from the kubelet's Event); the operator turns that
  into status.
"""

from __future__ import annotations

import functools
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from gpupin import constants

PRELOAD_LOG = "/tmp/gpupin-preload.log"
"""Where the postStart hook records each model's load result, for the readiness probe."""

READINESS_PREFIX = "gpupin: not serving:"
"""First words of the readiness probe's failure output (the operator looks for them). The
probe's own text never contains them in one piece, so a kubelet message that quotes the
command (a probe that timed out) is not mistaken for a report."""

WATCH_SECONDS = 30
"""How often the postStart hook's background loop checks that every model is still loaded."""

DEFAULT_REGISTRY = "registry.ollama.ai"
"""The host Ollama omits from model names (``types/model/name.go``, Ollama v0.17.4)."""

# One HTTP/1.0 request to the local server: `http METHOD PATH BODY` prints the status code on
# the first line and the body after it; exit 1 when the server cannot be reached or says
# nothing within $HTTP_TIMEOUT seconds (0: no limit).
_HTTP = r"""http() {
  { exec 3<>"/dev/tcp/127.0.0.1/$PORT"; } 2>/dev/null || return 1
  printf '%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %s\r\n\r\n%s' \
    "$1" "$2" "${#3}" "$3" >&3 2>/dev/null
  local response; response=$(timeout "$HTTP_TIMEOUT" cat <&3 2>/dev/null); exec 3<&-
  [ -n "$response" ] || return 1
  local status=${response#HTTP/* }; status=${status%% *}
  printf '%s\n%s\n' "$status" "${response#*$'\r\n\r\n'}"
}
error_of() {  # the "error" of an answer, on one line, without ';' (which splits the readiness report)
  local text=${1:0:300}; [[ $1 =~ \"error\":\"(([^\"\\]|\\.)*)\" ]] && text=${BASH_REMATCH[1]}
  text=${text//;/,}; printf '%s' "${text//$'\n'/ }"
}
state_of() {  # the last line the postStart hook logged for model $1, less the name
  local logged rest state=""
  [ -r "$LOG" ] && while read -r logged rest; do [ "$logged" = "$1" ] && state=$rest; done <"$LOG"
  printf '%s' "$state"
}
entries() {  # the objects of a /api/tags or /api/ps answer, one per line
  local body=$1; printf '%s\n' "${body//\},\{\"name\":/$'\n'\{\"name\":}"
}
read_state() {  # fills DIGEST[name] from /api/tags and SIZE/VRAM[digest] from /api/ps; 1 if unreachable
  local response entry name digest
  DIGEST=() SIZE=() VRAM=()
  response=$(http GET /api/tags '') && [ "$(head -n 1 <<<"$response")" = 200 ] || return 1
  while IFS= read -r entry; do
    [[ $entry =~ \"name\":\"([^\"]*)\" ]] || continue; name=${BASH_REMATCH[1]}
    [[ $entry =~ \"digest\":\"([^\"]*)\" ]] && DIGEST[$name]=${BASH_REMATCH[1]}
  done < <(entries "$(tail -n +2 <<<"$response")")
  response=$(http GET /api/ps '') && [ "$(head -n 1 <<<"$response")" = 200 ] || return 1
  while IFS= read -r entry; do
    [[ $entry =~ \"digest\":\"([^\"]*)\" ]] || continue; digest=${BASH_REMATCH[1]}
    [[ $entry =~ \"size\":([0-9]+) ]] && SIZE[$digest]=${BASH_REMATCH[1]}
    [[ $entry =~ \"size_vram\":([0-9]+) ]] && VRAM[$digest]=${BASH_REMATCH[1]} || VRAM[$digest]=0
  done < <(entries "$(tail -n +2 <<<"$response")")
}
listed() {  # is model $1 (as /api/tags names it) in /api/ps? Matched by blob: names sharing one are one model
  local digest=${DIGEST[$1]:-}; [ -n "$digest" ] && [ -n "${SIZE[$digest]:-}" ]
}
declare -A DIGEST SIZE VRAM
"""


def _array(name: str, values: Sequence[str]) -> str:
    return f"{name}=({' '.join(shlex.quote(v) for v in values)})\n"


def _header(port: int, models: Sequence[str], http_timeout: int) -> str:
    """Shell variables every program starts with: the port, the models as written in the spec
    (what requests name) and as /api/ps names them, where the hook logs, the HTTP helpers."""
    return (
        f"PORT={port}\nHTTP_TIMEOUT={http_timeout}\nLOG={PRELOAD_LOG}\n"
        + _array("MODELS", models)
        + _array("NAMES", ollama_names(models))
        + _HTTP
    )


def ollama_names(models: Sequence[str]) -> list[str]:
    """Model names as Ollama's ``/api/tags`` and ``/api/ps`` print them (``DisplayShortest`` of
    ``types/model/name.go``, v0.17.4): no scheme, the default registry host and the ``library``
    namespace left out (both compared ignoring case), ``latest`` when there is no tag:
    ``library/llama3`` → ``llama3:latest``, ``user/model`` stays ``user/model:latest``."""
    names = []
    for model in models:
        rest = model.split("://", 1)[-1]
        base, _, digest = rest.partition("@")
        path, sep, tag = base.rpartition(":") if ":" in base.rsplit("/", 1)[-1] else (base, "", "")
        parts = path.split("/")
        if len(parts) == 3 and parts[0].lower() == DEFAULT_REGISTRY:
            parts = parts[1:]
        if len(parts) == 2 and parts[0].lower() == "library":
            parts = parts[1:]
        names.append(
            "/".join(parts) + ":" + (tag if sep and tag else "latest") + (f"@{digest}" if digest else "")
        )
    return names


def pull_script(models: Sequence[str], port: int) -> str:
    """Init container: start a private server, pull each model, stop. Its last line names every
    model that could not be had, with Ollama's error, and it exits 1 (the kubelet retries it).

    A model already in the cache is kept when the registry cannot be reached (an offline cluster
    with a pre-filled volume), with a warning."""
    return _pull_script(tuple(models), port)


@functools.lru_cache(maxsize=4096)
def _pull_script(models: tuple[str, ...], port: int) -> str:
    """The text of :func:`pull_script`, made once per set of arguments (every pod of the same models
    has the same script)."""
    return (
        _header(port, models, 0)
        + r"""ollama serve >/tmp/pull-server.log 2>&1 &
for _ in $(seq 1 60); do ollama list >/dev/null 2>&1 && break; sleep 1; done
if ! ollama list >/dev/null 2>&1; then
  echo "gpupin: the Ollama server did not start in 60 s:"; tail -n 5 /tmp/pull-server.log; exit 1
fi
failed="" first_error=""
for m in "${MODELS[@]}"; do
  echo "gpupin: pulling $m"
  if out=$(ollama pull "$m" 2>&1); then continue; fi
  if ollama show "$m" >/dev/null 2>&1; then
    echo "gpupin: warning: cannot pull $m, using the copy in the cache: ${out##*$'\n'}"
  else
    echo "gpupin: cannot pull model $m: ${out##*$'\n'}"
    failed+="${failed:+, }$m"; first_error=${first_error:-${out##*$'\n'}}
  fi
done
[ -z "$failed" ] && exit 0
# the last line becomes the start of the pod's termination message: the names first
echo "gpupin: cannot pull model(s) $failed: $first_error"
exit 1
"""
    )


def preload_script(models: Sequence[str], port: int) -> str:
    """postStart hook: load every model in the background (no generation) and return at once.

    Loading keeps the model resident for the server's ``OLLAMA_KEEP_ALIVE`` (gpupin renders -1:
    forever); the request carries no keep_alive of its own. A failed load is tried again with
    backoff (10 s doubling to 5 min), and every :data:`WATCH_SECONDS` the loop reloads a model
    that left memory (a client's own keep_alive, an evicted or crashed runner), so the pod heals
    and keeps the memory the planner budgeted. One process for the life of the container. Each
    model's lines in :data:`PRELOAD_LOG`: ``NAME loading``, then ``NAME loaded`` or
    ``NAME failed: ERROR``; ``NAME reloading`` when it left memory."""
    return _preload_script(tuple(models), port)


@functools.lru_cache(maxsize=4096)
def _preload_script(models: tuple[str, ...], port: int) -> str:
    """The text of :func:`preload_script`, made once per set of arguments (every pod of the same models
    has the same script)."""
    body = (
        _header(port, models, 0)
        + r"""load() {  # load model $1 (spec name) without generating; logs as $2 (/api/ps name)
  local response
  response=$(http POST /api/generate "{\"model\":\"$1\",\"prompt\":\"\",\"stream\":false}")
  if [ "$(head -n 1 <<<"$response")" = 400 ] && [[ $response == *"does not support generate"* ]]; then
    response=$(http POST /api/embed "{\"model\":\"$1\",\"input\":\"\"}")
  fi
  if [ "$(head -n 1 <<<"$response")" != 200 ]; then
    echo "$2 failed: $(error_of "${response:-the server did not answer}")" >>"$LOG"; return 1
  fi
  # an empty prompt only loads ("done_reason":"load"); anything else means the server generated
  if [[ $response == *'"done_reason":'* && $response != *'"done_reason":"load"'* ]]; then
    echo "$2 loaded (and generated: the server did not treat the empty prompt as load-only)" >>"$LOG"
  else
    echo "$2 loaded" >>"$LOG"
  fi
}
for _ in $(seq 1 300); do [ "$(http GET / '' | head -n 1)" = 200 ] && break; sleep 1; done
declare -A next_try backoff
for i in "${!MODELS[@]}"; do
  echo "${NAMES[$i]} loading" >>"$LOG"
  load "${MODELS[$i]}" "${NAMES[$i]}" || { backoff[$i]=10; next_try[$i]=$((SECONDS + 10)); }
done
while sleep "$WATCH"; do
  read_state || continue
  for i in "${!MODELS[@]}"; do
    listed "${NAMES[$i]}" && continue
    [ "${next_try[$i]:-0}" -le "$SECONDS" ] || continue
    case $(state_of "${NAMES[$i]}") in failed:*) ;; *) echo "${NAMES[$i]} reloading" >>"$LOG" ;; esac
    if load "${MODELS[$i]}" "${NAMES[$i]}"; then
      unset "backoff[$i]" "next_try[$i]"
    else
      backoff[$i]=$(( ${backoff[$i]:-5} * 2 > 300 ? 300 : ${backoff[$i]:-5} * 2 ))
      next_try[$i]=$((SECONDS + ${backoff[$i]}))
    fi
  done
done
"""
    )
    # The log exists before the hook returns (the kubelet probes only after it), then a background
    # subshell does the loading: the hook returns at once and never fails.
    return (
        f"{{ : >{PRELOAD_LOG}; }} 2>/dev/null || echo 'gpupin: cannot write {PRELOAD_LOG}' >&2\n"
        f"WATCH={WATCH_SECONDS}\n(\n{body}) >/dev/null 2>&1 </dev/null &\nexit 0\n"
    )


def readiness_script(models: Sequence[str], port: int, require_gpu: bool) -> str:
    """Readiness probe: exit 0 when every model is in /api/ps (matched by its blob, as /api/tags
    gives it), not still being loaded by the hook, and with ``require_gpu`` wholly in GPU memory
    (``size_vram == size``); otherwise print one line ``gpupin: not serving: NAME: REASON; …``
    and exit 1. Each request gives up after 3 s, within the probe's timeout. (Ollama lists a
    model in /api/ps while its weights still load: the hook's "loaded" says the load finished.)"""
    return _readiness_script(tuple(models), port, require_gpu)


@functools.lru_cache(maxsize=4096)
def _readiness_script(models: tuple[str, ...], port: int, require_gpu: bool) -> str:
    """The text of :func:`readiness_script`, made once per set of arguments (every pod of the same models
    has the same script)."""
    head, tail = READINESS_PREFIX.split(" ", 1)
    return (
        _header(port, models, 3)
        + f"REQUIRE_GPU={1 if require_gpu else 0}\n"
        + f'PREFIX="{head}"" {tail}"\n'
        + r"""[ -e "$LOG" ] || { echo "$PREFIX the postStart hook has not run (no $LOG)"; exit 1; }
[ -r "$LOG" ] || { echo "$PREFIX the postStart hook's log $LOG cannot be read"; exit 1; }
read_state || { echo "$PREFIX the Ollama server does not answer"; exit 1; }
problems=()
for name in "${NAMES[@]}"; do
  state=$(state_of "$name")
  if listed "$name" && [[ $state != loading && $state != reloading ]]; then
    digest=${DIGEST[$name]}
    if [ "$REQUIRE_GPU" = 1 ] && [ "${VRAM[$digest]}" != "${SIZE[$digest]}" ]; then
      problems+=("$name: on CPU: ${VRAM[$digest]} of ${SIZE[$digest]} bytes in GPU memory")
    fi
    continue
  fi
  case $state in
    failed:*) problems+=("$name: failed to load: ${state#failed: }") ;;
    loaded*|reloading) problems+=("$name: not loaded (unloaded after it was preloaded; reloading)") ;;
    *) problems+=("$name: not loaded yet") ;;
  esac
done
[ ${#problems[@]} -eq 0 ] && exit 0
printf '%s' "$PREFIX"; printf ' %s;' "${problems[@]}"; echo; exit 1
"""
    )


@dataclass(frozen=True)
class ModelReport:
    """One model's line of a failed readiness probe."""

    model: str
    state: str
    """``on-cpu``, ``failed``, ``loading``, ``unloaded`` or ``pod`` (no model: the server does not
    answer, the hook has not run)."""
    detail: str
    gpu_bytes: int | None = None
    """With ``on-cpu``: bytes of the model in GPU memory, as Ollama's /api/ps says (size_vram)."""
    total_bytes: int | None = None
    """With ``on-cpu``: the model's whole size in memory, as Ollama's /api/ps says (size)."""


_ON_CPU = re.compile(r"^on CPU: (\d+) of (\d+) bytes in GPU memory$")


def probe_text(message: str) -> str:
    """A readiness-probe Event's message less the kubelet's prefixes: what the probe printed."""
    return (
        message.strip()
        .removeprefix(constants.KUBELET_COMBINED)
        .removeprefix(constants.KUBELET_READINESS_FAILED)
        .strip()
    )


def parse_readiness(output: str) -> list[ModelReport] | None:
    """The per-model reports of a readiness probe's output, as printed or as the kubelet's Event
    quotes it (``Readiness probe failed: …``, possibly ``(combined from similar events): …``),
    or None when the text is not a report of :func:`readiness_script` (only the first line
    counts: the kubelet appends stderr)."""
    text = probe_text(output)
    if not text.startswith(READINESS_PREFIX):
        return None
    rest = text[len(READINESS_PREFIX) :].strip()
    first_line = rest.splitlines()[0] if rest else ""
    reports: list[ModelReport] = []
    parts = [p.strip() for p in first_line.split(";") if p.strip()]
    for part in parts:
        model, sep, detail = part.partition(": ")
        if not sep:  # about the pod, not a model (server down, no hook log) — or a cut-off fragment
            if len(parts) == 1:
                reports.append(ModelReport(model="", state="pod", detail=part))
            continue
        on_cpu = _ON_CPU.match(detail)
        if on_cpu:
            reports.append(ModelReport(model, "on-cpu", detail, int(on_cpu.group(1)), int(on_cpu.group(2))))
        elif detail.startswith("failed to load: "):
            reports.append(ModelReport(model, "failed", detail.removeprefix("failed to load: ")))
        elif detail.startswith("not loaded (unloaded"):
            reports.append(ModelReport(model, "unloaded", detail))
        else:
            reports.append(ModelReport(model, "loading", detail))
    return reports
