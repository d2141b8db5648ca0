"""Logging: structlog, JSON lines when not on a terminal (in a pod), readable on a terminal."""

from __future__ import annotations

import logging
import sys

import structlog


def configure(level: str = "INFO", json_output: bool | None = None) -> None:
    """Route structlog and the standard library (kopf logs there) through one renderer."""
    if json_output is None:
        json_output = not sys.stderr.isatty()
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json_output else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # kopf logs every handler call at INFO; gpupin's own lines say what happened
    for noisy in ("urllib3", "kubernetes", "aiohttp.access", "kopf.objects"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get(name: str = "gpupin") -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return]
