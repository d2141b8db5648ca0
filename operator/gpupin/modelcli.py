"""``gpupin models`` and the model-metadata flags ``gpupin plan`` shares with it.

- ``gpupin models show NAME``: the facts gpupin sizes a model from and where they come from.
- ``gpupin models refresh``: regenerate a model-data file (by default the bundled
  ``data/models.yaml``) from the models' own metadata (:mod:`gpupin.modeldata`).
- :func:`engines_for`: the engine registry ``gpupin plan`` sizes with: the bundled data,
  ``--model-data`` files over it, and (online) what :mod:`gpupin.modelsource` reads for the rest.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from gpupin.api.v1alpha1 import LLMDeploymentSpec
from gpupin.engines import ENGINES, EngineRegistry
from gpupin.loading import InputError, read_text
from gpupin.modelsource import ModelSource, SourceError, resolve_models
from gpupin.sizing import ModelDataError, parse_model_data

EXIT_OK = 0
EXIT_REFUSED = 1


def add_models_command(sub: Any) -> None:
    """The ``models`` subcommand and its own subcommands, on ``gpupin``'s subparsers."""
    models = sub.add_parser(
        "models",
        help="model data: show what gpupin knows of a model, or regenerate a model-data file from the models' metadata",
    )
    models_sub = models.add_subparsers(dest="models_command", metavar="COMMAND", required=True)
    show = models_sub.add_parser(
        "show", help="the facts gpupin sizes a model from, and where they come from (data, or read online)"
    )
    show.add_argument("name", help="an Ollama name (qwen3:8b) or a Hugging Face id (Qwen/Qwen3-8B)")
    show.add_argument("--engine", choices=("ollama", "vllm"), default=None, help="whose naming to try first")
    add_metadata_arguments(show)
    add_debug_argument(show)
    show.set_defaults(run=_models_show)
    refresh_cmd = models_sub.add_parser(
        "refresh",
        help="re-read every entry of a model-data file (default gpupin's bundled models.yaml) from Hugging Face "
        "and the Ollama registry, and write it back",
    )
    refresh_cmd.add_argument(
        "--data", metavar="FILE", default=None, help="the model-data file (default: the bundled one)"
    )
    refresh_cmd.add_argument(
        "--output", "-o", metavar="FILE", default=None, help="where to write it (default: stdout)"
    )
    refresh_cmd.add_argument(
        "--only", action="append", default=[], metavar="ID", help="refresh only this entry (repeatable)"
    )
    add_metadata_arguments(refresh_cmd, with_mode=False)
    add_debug_argument(refresh_cmd)
    refresh_cmd.set_defaults(run=_models_refresh)


def add_debug_argument(parser: argparse.ArgumentParser, default: Any = argparse.SUPPRESS) -> None:
    """``--debug``, on ``gpupin`` and on each one-shot subcommand: an internal error (a bug)
    prints its traceback instead of one line. Subcommands default to SUPPRESS so that their
    default does not undo ``gpupin --debug plan``."""
    parser.add_argument(
        "--debug",
        action="store_true",
        default=default,
        help="on an internal error (a bug in gpupin), print the traceback (env GPUPIN_DEBUG=1)",
    )


def add_metadata_arguments(parser: argparse.ArgumentParser, with_mode: bool = True) -> None:
    if with_mode:
        parser.add_argument(
            "--model-metadata",
            choices=("online", "offline"),
            default=_default_metadata_mode(),
            help="online (default): read the metadata of models gpupin's data does not know from Hugging Face or "
            "the Ollama registry (config.json, safetensors and GGUF headers; no weights); offline: size them "
            "from their name. Default offline when GPUPIN_MODEL_METADATA=offline or HF_HUB_OFFLINE=1",
        )
        parser.add_argument(
            "--model-data",
            action="append",
            default=[],
            metavar="FILE",
            help="more model data in the format of gpupin's bundled models.yaml (repeatable); it wins over the "
            "bundled data",
        )
    parser.add_argument(
        "--hf-endpoint",
        default=None,
        metavar="URL",
        help="Hugging Face endpoint or mirror (default $HF_ENDPOINT)",
    )
    parser.add_argument(
        "--ollama-registry",
        default=None,
        metavar="URL",
        help="Ollama registry (default $GPUPIN_OLLAMA_REGISTRY or the public registry)",
    )


def _models_show(args: argparse.Namespace) -> int:
    scheme = {"ollama": "ollama", "vllm": "huggingface"}.get(args.engine or "", "")
    if not scheme:
        scheme = (
            "huggingface"
            if "/" in args.name and not args.name.lower().startswith("hf.co/") and ":" not in args.name
            else "ollama"
        )
    engines = engines_for(args, [])
    facts = engines.catalog.lookup(args.name, scheme)  # type: ignore[arg-type]
    if facts is None and args.model_metadata == "online":
        try:
            facts = ModelSource(hf_endpoint=args.hf_endpoint, ollama_registry=args.ollama_registry).facts(
                args.name, scheme
            )
        except SourceError as err:
            print(f"gpupin: {args.name}: {err}", file=sys.stderr)
            return EXIT_REFUSED
    if facts is None:
        print(f"gpupin: {args.name}: not in the model data (and metadata is offline)", file=sys.stderr)
        return EXIT_REFUSED
    shown = {k: v for k, v in dataclasses.asdict(facts).items() if v not in (None, (), {}, "", 0, False)}
    yaml.safe_dump(shown, sys.stdout, sort_keys=False, width=110, allow_unicode=True)
    return EXIT_OK


def _models_refresh(args: argparse.Namespace) -> int:
    from importlib import resources

    from gpupin.modeldata import refresh

    if args.data:
        text = read_text(args.data)
    else:
        text = resources.files("gpupin").joinpath("data/models.yaml").read_text()
    try:
        parse_model_data(text, args.data or "models.yaml")
    except ModelDataError as err:
        raise InputError(str(err)) from None
    result, problems = refresh(
        text, ModelSource(hf_endpoint=args.hf_endpoint, ollama_registry=args.ollama_registry), args.only
    )
    for problem in problems:
        print(f"gpupin: warning: {problem} (entry kept as it was)", file=sys.stderr)
    ids = {str(entry.id) for entry in parse_model_data(text, args.data or "models.yaml")}
    for wanted in sorted(set(args.only) - ids):
        print(f"gpupin: warning: --only {wanted}: no entry has that id", file=sys.stderr)
        problems.append(wanted)
    if args.output:
        try:
            Path(args.output).write_text(result, encoding="utf-8")
        except OSError as err:
            raise InputError(f"{args.output}: {err.strerror or err}") from None
    else:
        sys.stdout.write(result)
    return EXIT_REFUSED if problems else EXIT_OK


def _default_metadata_mode() -> str:
    offline = os.environ.get("GPUPIN_MODEL_METADATA") == "offline" or os.environ.get("HF_HUB_OFFLINE") in (
        "1",
        "true",
    )
    return "offline" if offline else "online"


def engines_for(args: argparse.Namespace, specs: Sequence[LLMDeploymentSpec]) -> EngineRegistry:
    """The engines sizing from the bundled data, ``--model-data`` files over it, and (online) the
    metadata read for models neither knows; a note on stderr for each model not read."""
    catalog = ENGINES.catalog
    extra = []
    for path in getattr(args, "model_data", []):
        text = read_text(path)
        try:
            extra += parse_model_data(text, path)
        except ModelDataError as err:
            raise InputError(str(err)) from None
    registry = ENGINES.with_catalog(catalog.overlay(extra)) if extra else ENGINES
    source = None
    if args.model_metadata == "online":
        source = ModelSource(hf_endpoint=args.hf_endpoint, ollama_registry=args.ollama_registry)
    registry, notes = resolve_models(specs, registry, source)
    for note in notes:
        print(f"gpupin: warning: {note}", file=sys.stderr)
    return registry
