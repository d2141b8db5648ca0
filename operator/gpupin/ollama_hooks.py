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
"""First words of the readiness probe's failure output (the operator looks for them)."""

# One HTTP/1.0 request to the local server: `http METHOD PATH BODY` prints the status code on
# the first line and the body after it. Exit 1 when the server cannot be reached.
_HTTP = r"""http() {
  exec 3<>"/dev/tcp/127.0.0.1/$PORT" 2>/dev/null || return 1
  printf '%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %s\r\n\r\n%s' \
    "$1" "$2" "${#3}" "$3" >&3
  local response; response=$(cat <&3); exec 3<&-
  local status=${response#HTTP/* }; status=${status%% *}
  printf '%s\n%s\n' "$status" "${response#*$'\r\n\r\n'}"
}
error_of() {  # the "error" of an answer (';' would split the readiness report: ',' instead)
  local text=${1:0:300}; [[ $1 =~ \"error\":\"([^\"]*)\" ]] && text=${BASH_REMATCH[1]}
  text=${text//;/,}; printf '%s' "${text//$'\n'/ }"
}
"""


def _header(port: int, models: Sequence[str]) -> str:
    return f"PORT={port}\nMODELS=({' '.join(shlex.quote(m) for m in models)})\n{_HTTP}"


def ollama_names(models: Sequence[str]) -> list[str]:
    """Model names as ``/api/ps`` and ``ollama ps`` print them: an untagged name gets ``:latest``."""
    return [m if ":" in m.rsplit("/", 1)[-1] else f"{m}:latest" for m in models]


def pull_script(models: Sequence[str], port: int) -> str:
    """Init container: start a private server, pull each model, stop. Exit 1 names the model that failed.

    A model already in the cache is kept when the registry cannot be reached (an offline cluster
    with a pre-filled volume), with a warning."""
    return (
        _header(port, models)
        + r"""ollama serve >/tmp/pull-server.log 2>&1 &
for _ in $(seq 1 60); do ollama list >/dev/null 2>&1 && break; sleep 1; done
if ! ollama list >/dev/null 2>&1; then
  echo "gpupin: the Ollama server did not start in 60 s:"; tail -n 5 /tmp/pull-server.log; exit 1
fi
failed=0
for m in "${MODELS[@]}"; do
  echo "gpupin: pulling $m"
  if out=$(ollama pull "$m" 2>&1); then continue; fi
  if ollama show "$m" >/dev/null 2>&1; then
    echo "gpupin: warning: cannot pull $m, using the copy in the cache: ${out##*$'\n'}"
  else
    echo "gpupin: cannot pull model $m: ${out##*$'\n'}"; failed=1
  fi
done
exit $failed
"""
    )


def preload_script(models: Sequence[str], port: int) -> str:
    """postStart hook: load every model in the background (no generation) and return at once.

    Loading keeps the model resident for the server's ``OLLAMA_KEEP_ALIVE`` (gpupin renders -1:
    forever); the request carries no keep_alive of its own. Each model gets one line in
    :data:`PRELOAD_LOG`: ``MODEL loading``, ``MODEL loaded`` or ``MODEL failed: ERROR``."""
    body = (
        _header(port, ollama_names(models))
        + f"LOG={PRELOAD_LOG}\n"
        + r""": >"$LOG"
for _ in $(seq 1 300); do [ "$(http GET / '' | head -n 1)" = 200 ] && break; sleep 1; done
for m in "${MODELS[@]}"; do
  echo "$m loading" >>"$LOG"
  response=$(http POST /api/generate "{\"model\":\"$m\",\"prompt\":\"\",\"stream\":false}")
  if [ "$(head -n 1 <<<"$response")" = 400 ] && [[ $response == *"does not support generate"* ]]; then
    response=$(http POST /api/embed "{\"model\":\"$m\",\"input\":\"\"}")
  fi
  if [ "$(head -n 1 <<<"$response")" = 200 ]; then
    # an empty prompt only loads ("done_reason":"load"); anything else means the server generated
    if [[ $response == *'"done_reason":'* && $response != *'"done_reason":"load"'* ]]; then
      echo "$m loaded (and generated: the server did not treat the empty prompt as load-only)" >>"$LOG"
    else
      echo "$m loaded" >>"$LOG"
    fi
  else
    echo "$m failed: $(error_of "${response:-the server did not answer}")" >>"$LOG"
  fi
done
"""
    )
    # A background subshell: the hook returns at once (the kubelet runs no probe before the hook ends).
    return f"(\n{body}) >/dev/null 2>&1 </dev/null &\nexit 0\n"


def readiness_script(models: Sequence[str], port: int, require_gpu: bool) -> str:
    """Readiness probe: exit 0 when every model is loaded (and wholly in GPU memory when
    ``require_gpu``); otherwise print ``gpupin: not serving: M: REASON; …`` and exit 1."""
    return (
        _header(port, ollama_names(models))
        + f"LOG={PRELOAD_LOG}\nREQUIRE_GPU={1 if require_gpu else 0}\nPREFIX={shlex.quote(READINESS_PREFIX)}\n"
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
for m in "${MODELS[@]}"; do
  if [ -z "${size[$m]:-}" ]; then
    state=""
    while read -r logged rest; do [ "$logged" = "$m" ] && state=$rest; done <"$LOG" 2>/dev/null
    case $state in
      failed:*) problems+=("$m: failed to load: ${state#failed: }") ;;
      loaded) problems+=("$m: not loaded (unloaded after it was preloaded)") ;;
      *) problems+=("$m: not loaded yet") ;;
    esac
  elif [ "$REQUIRE_GPU" = 1 ] && [ "${vram[$m]}" != "${size[$m]}" ]; then
    problems+=("$m: on CPU: ${vram[$m]} of ${size[$m]} bytes in GPU memory")
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


def parse_readiness(output: str) -> list[ModelReport] | None:
    """The per-model reports in a readiness probe's output (as the kubelet's Event quotes it),
    or None when the text did not come from :func:`readiness_script`."""
    start = output.find(READINESS_PREFIX)
    if start < 0:
        return None
    text = output[start + len(READINESS_PREFIX) :].strip()
    reports: list[ModelReport] = []
    for part in (p.strip() for p in text.split(";")):
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
