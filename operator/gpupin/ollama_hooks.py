"""The shell programs gpupin puts into Ollama pods, and the parser for what they report.

Pure: strings in, strings out. Each program runs in the stock ``ollama/ollama`` image, which
has bash but neither curl nor wget, so they speak HTTP/1.0 to the local server over bash's
``/dev/tcp`` (the server closes the connection after each answer, so ``cat`` reads it whole).

Why not the ``ollama`` CLI (checked in Ollama v0.12.6 and v0.17.4, ``cmd/cmd.go``):

- ``ollama run --keepalive -1`` parses the flag with Go's ``time.ParseDuration``, which rejects
  ``-1`` ("missing unit in duration");
- ``ollama run MODEL ''`` with stdin not a terminal (a CRI exec) prepends stdin and sends the
  prompt ``" "``: a full generation runs; only an empty prompt makes the server load and stop
  (``server/routes.go`` GenerateHandler);
- embedding models refuse ``/api/generate`` with 400 "does not support generate"; ``POST
  /api/embed`` with an empty input loads them.

The three programs:

- :func:`pull_script` (init container): pulls every model; exits non-zero naming the model
  and Ollama's error when one cannot be had (the init container is retried with backoff and
  its last lines become the termination message the operator reports).
- :func:`preload_script` (postStart hook): returns at once and loads the models in the
  background, one after the other, without generating; writes one line per model to
  :data:`PRELOAD_LOG`. It never fails, so a missing model cannot crash-loop the container.
- :func:`readiness_script` (readiness probe): Ready only when every model is loaded and, unless
  CPU is allowed, wholly in GPU memory (``GET /api/ps``: ``size_vram == size``). When not, it
  prints one line naming each model and why (:func:`parse_readiness` reads it back from the
  kubelet's Event); the operator turns that into status.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

PRELOAD_LOG = "/tmp/gpupin-preload.log"
"""Where the postStart hook records each model's load result, for the readiness probe."""

READINESS_PREFIX = "gpupin: not serving:"
"""First words of the readiness probe's failure output (the operator looks for them). The
probe's own text never contains them in one piece, so a kubelet message that quotes the
command (a probe that timed out) is not mistaken for a report."""

LOAD_ATTEMPTS = 3
"""Tries per model in the postStart hook, 10 s apart (a load can fail while the GPU is busy)."""

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
    """Model names as ``/api/ps`` and ``ollama ps`` print them: an untagged name gets ``:latest``
    and the official namespace ``library/`` is dropped (``library/llama3`` → ``llama3:latest``)."""
    names = []
    for model in models:
        name = model if ":" in model.rsplit("/", 1)[-1] else f"{model}:latest"
        names.append(name.removeprefix("library/"))
    return names


def pull_script(models: Sequence[str], port: int) -> str:
    """Init container: start a private server, pull each model, stop. Its last line names every
    model that could not be had, with Ollama's error, and it exits 1 (the kubelet retries it).

    A model already in the cache is kept when the registry cannot be reached (an offline cluster
    with a pre-filled volume), with a warning."""
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
    forever); the request carries no keep_alive of its own. A failed load is tried
    :data:`LOAD_ATTEMPTS` times. Each model gets lines in :data:`PRELOAD_LOG`: ``NAME loading``,
    then ``NAME loaded`` or ``NAME failed: ERROR``."""
    body = (
        _header(port, models, 0)
        + f"ATTEMPTS={LOAD_ATTEMPTS}\n"
        + r""": >"$LOG"
for _ in $(seq 1 300); do [ "$(http GET / '' | head -n 1)" = 200 ] && break; sleep 1; done
for i in "${!MODELS[@]}"; do
  m=${MODELS[$i]} name=${NAMES[$i]}
  echo "$name loading" >>"$LOG"
  for attempt in $(seq 1 "$ATTEMPTS"); do
    response=$(http POST /api/generate "{\"model\":\"$m\",\"prompt\":\"\",\"stream\":false}")
    if [ "$(head -n 1 <<<"$response")" = 400 ] && [[ $response == *"does not support generate"* ]]; then
      response=$(http POST /api/embed "{\"model\":\"$m\",\"input\":\"\"}")
    fi
    [ "$(head -n 1 <<<"$response")" = 200 ] && break
    [ "$attempt" -lt "$ATTEMPTS" ] && sleep 10
  done
  if [ "$(head -n 1 <<<"$response")" = 200 ]; then
    # an empty prompt only loads ("done_reason":"load"); anything else means the server generated
    if [[ $response == *'"done_reason":'* && $response != *'"done_reason":"load"'* ]]; then
      echo "$name loaded (and generated: the server did not treat the empty prompt as load-only)" >>"$LOG"
    else
      echo "$name loaded" >>"$LOG"
    fi
  else
    echo "$name failed: $(error_of "${response:-the server did not answer}")" >>"$LOG"
  fi
done
"""
    )
    # A background subshell: the hook returns at once (the kubelet runs no probe before the hook ends).
    return f"(\n{body}) >/dev/null 2>&1 </dev/null &\nexit 0\n"


def readiness_script(models: Sequence[str], port: int, require_gpu: bool) -> str:
    """Readiness probe: exit 0 when the hook has loaded every model, /api/ps lists it and, with
    ``require_gpu``, it is wholly in GPU memory (``size_vram == size``); otherwise print one line
    ``gpupin: not serving: NAME: REASON; …`` and exit 1. Each request gives up after 3 s, within
    the probe's timeout. (Ollama lists a model in /api/ps while its weights still load, so the
    hook's "loaded" is what says the load finished.)"""
    head, tail = READINESS_PREFIX.split(" ", 1)
    return (
        _header(port, models, 3)
        + f"REQUIRE_GPU={1 if require_gpu else 0}\n"
        + f'PREFIX="{head}"" {tail}"\n'
        + r"""response=$(http GET /api/ps '') || { echo "$PREFIX the Ollama server does not answer"; exit 1; }
[ "$(head -n 1 <<<"$response")" = 200 ] || { echo "$PREFIX GET /api/ps answered $(head -n 1 <<<"$response")"; exit 1; }
body=$(tail -n +2 <<<"$response")
declare -A size vram
while IFS= read -r entry; do
  [[ $entry =~ \"name\":\"([^\"]*)\" ]] || continue; name=${BASH_REMATCH[1]}
  [[ $entry =~ \"size\":([0-9]+) ]] && size[$name]=${BASH_REMATCH[1]}
  [[ $entry =~ \"size_vram\":([0-9]+) ]] && vram[$name]=${BASH_REMATCH[1]} || vram[$name]=0
done <<<"${body//\},\{\"name\":/$'\n'\{\"name\":}"
problems=()
for name in "${NAMES[@]}"; do
  state=$(state_of "$name")
  if [ -z "${size[$name]:-}" ] || [[ $state != loaded* ]]; then
    case $state in
      failed:*) problems+=("$name: failed to load: ${state#failed: }") ;;
      loaded*) problems+=("$name: not loaded (unloaded after it was preloaded)") ;;
      *) problems+=("$name: not loaded yet") ;;
    esac
  elif [ "$REQUIRE_GPU" = 1 ] && [ "${vram[$name]}" != "${size[$name]}" ]; then
    problems+=("$name: on CPU: ${vram[$name]} of ${size[$name]} bytes in GPU memory")
  fi
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
    """``on-cpu``, ``failed``, ``loading``, ``unloaded`` or ``down`` (the server did not answer)."""
    detail: str
    gpu_bytes: int | None = None
    """With ``on-cpu``: bytes of the model in GPU memory, as Ollama's /api/ps says (size_vram)."""
    total_bytes: int | None = None
    """With ``on-cpu``: the model's whole size in memory, as Ollama's /api/ps says (size)."""


_ON_CPU = re.compile(r"^on CPU: (\d+) of (\d+) bytes in GPU memory$")


KUBELET_READINESS_FAILED = "Readiness probe failed:"
"""How the kubelet starts the message of an Unhealthy Event for a failed readiness probe."""
_COMBINED = "(combined from similar events): "


def parse_readiness(output: str) -> list[ModelReport] | None:
    """The per-model reports of a readiness probe's output, as printed or as the kubelet's Event
    quotes it (``Readiness probe failed: …``, possibly ``(combined from similar events): …``),
    or None when the text is not a report of :func:`readiness_script` (only the first line
    counts: the kubelet appends stderr)."""
    text = output.strip().removeprefix(_COMBINED).removeprefix(KUBELET_READINESS_FAILED).strip()
    if not text.startswith(READINESS_PREFIX):
        return None
    rest = text[len(READINESS_PREFIX) :].strip()
    first_line = rest.splitlines()[0] if rest else ""
    reports: list[ModelReport] = []
    for part in (p.strip() for p in first_line.split(";")):
        if not part:
            continue
        model, sep, detail = part.partition(": ")
        if not sep:
            reports.append(ModelReport(model="", state="down", detail=part))
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
