"""The ``gpupin`` command's small parts: the cluster flags of ``operator`` and ``agent``, and the
``version`` and ``completion`` commands.

- ``--kubeconfig PATH`` and ``--context NAME`` choose the cluster every request of the process
  goes to (:func:`gpupin.kube.connect`; kopf's own login reads the same, see
  :mod:`gpupin.controller.kopftuning`).
- ``gpupin version [-o json]``: gpupin's version (json: with Python's and its main libraries').
- ``gpupin completion bash|zsh``: a completion script written from the parser itself, so it
  offers exactly the subcommands, flags and choices the command has (zsh through bashcompinit).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
from importlib import metadata
from typing import Any

from gpupin import __version__
from gpupin.loading import InputError

LIBRARIES = ("kopf", "pydantic", "kubernetes", "aiohttp")


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """``--kubeconfig`` and ``--context`` (for commands that talk to the API server)."""
    parser.add_argument(
        "--kubeconfig",
        default=None,
        metavar="PATH",
        help="kubeconfig file (default: in-cluster in a pod, else $KUBECONFIG or ~/.kube/config)",
    )
    parser.add_argument(
        "--context", default=None, metavar="NAME", help="kubeconfig context (default: its current-context)"
    )


def connect(args: argparse.Namespace, component: str) -> None:
    """Point every API client of this process at ``--kubeconfig``/``--context`` and name
    ``component`` in their User-Agent; :class:`InputError` naming the flag when they are unusable."""
    from gpupin.kube import KubeconfigError
    from gpupin.kube import connect as kube_connect

    try:
        kube_connect(args.kubeconfig, args.context, component)
    except KubeconfigError as exc:
        raise InputError(str(exc)) from None


def add_version_command(sub: Any) -> None:
    """``gpupin version``."""
    version = sub.add_parser("version", help="print gpupin's version (json: and its libraries')")
    version.add_argument("-o", "--output", choices=("text", "json"), default="text")
    version.set_defaults(run=_version)


def versions() -> dict[str, str | None]:
    """gpupin's version, Python's, and each of :data:`LIBRARIES`' (None: not installed)."""
    found: dict[str, str | None] = {"version": __version__, "python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def _version(args: argparse.Namespace) -> int:
    if args.output == "json":
        print(json.dumps(versions(), indent=2))
    else:
        print(f"gpupin {__version__}")
    return 0


def add_completion_command(sub: Any, parser: argparse.ArgumentParser) -> None:
    """``gpupin completion bash|zsh``, written from ``parser`` (gpupin's whole parser)."""
    completion = sub.add_parser(
        "completion",
        help="print a shell completion script (bash: source <(gpupin completion bash); zsh alike)",
    )
    completion.add_argument("shell", choices=("bash", "zsh"))
    completion.set_defaults(run=lambda args: _completion(args, parser))


def _completion(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    name = os.path.basename(parser.prog) or "gpupin"
    sys.stdout.write(completion_script(parser, args.shell, name))
    return 0


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """A parser's subcommands by name (none: {})."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _walk(parser: argparse.ArgumentParser, path: str = "") -> list[tuple[str, argparse.ArgumentParser]]:
    """Every (sub)command as (path, parser); the path is ``""``, ``/plan``, ``/models/show``…"""
    found = [(path, parser)]
    for name, child in _commands(parser).items():
        found += _walk(child, f"{path}/{name}")
    return found


def completion_script(parser: argparse.ArgumentParser, shell: str, name: str = "gpupin") -> str:
    """A bash completion function for ``parser`` (zsh: the same, after ``bashcompinit``).

    It walks the words before the cursor to find the subcommand (skipping each flag's value), then
    offers the values of the flag before the cursor (its choices; files when it has none) or that
    subcommand's subcommands, flags and positional choices. Raises ValueError for another shell."""
    if shell not in ("bash", "zsh"):
        raise ValueError(f"shell {shell!r}: bash or zsh")
    function = "_" + "".join(c if c.isalnum() else "_" for c in name)
    descend: list[str] = []
    skip: list[str] = []
    values: list[str] = []
    offers: list[str] = []
    for path, command in _walk(parser):
        words: list[str] = list(_commands(command))
        descend += [f"{path}/{child}" for child in _commands(command)]
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            if not action.option_strings:
                words += [str(c) for c in action.choices or ()]
                continue
            words += action.option_strings
            if action.nargs == 0:
                continue
            patterns = "|".join(shlex.quote(f"{path}/{o}") for o in action.option_strings)
            skip.append(patterns)
            choices = " ".join(str(c) for c in action.choices or ())
            reply = (
                f'COMPREPLY=($(compgen -W {shlex.quote(choices)} -- "$cur"))' if choices else "COMPREPLY=()"
            )
            values.append(f"        {patterns}) {reply}; return ;;")
        offers.append(f"        {shlex.quote(path or '/')}) words={shlex.quote(' '.join(words))} ;;")
    lines = [
        f"# {shell} completion for {name}, generated by `{name} completion {shell}`",
        *(["autoload -U +X bashcompinit && bashcompinit"] if shell == "zsh" else []),
        f"{function}() {{",
        '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"',
        '    local path="" word words="" i skip=0',
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        '        word="${COMP_WORDS[i]}"',
        "        if ((skip)); then skip=0; continue; fi",
        '        case "$path/$word" in',
        *(
            f'        {"|".join(shlex.quote(d) for d in descend)}) path="$path/$word" ;;'
            for _ in [0]
            if descend
        ),
        *(f"        {patterns}) skip=1 ;;" for patterns in skip),
        "        esac",
        "    done",
        '    case "$path/$prev" in',
        *values,
        "    esac",
        '    case "${path:-/}" in',
        *offers,
        "    esac",
        '    COMPREPLY=($(compgen -W "$words" -- "$cur"))',
        "}",
        f"complete -o default -F {function} {name}",
    ]
    return "\n".join(lines) + "\n"
