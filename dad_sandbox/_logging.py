"""structlog set-up: readable on a terminal, JSON lines elsewhere and in files.

Libraries should not configure logging at import, so nothing here runs until the CLI or the
in-container entrypoint calls :func:`configure_logging`. Per-run context (``run_id``) is bound
with ``structlog.contextvars.bound_contextvars`` by whoever drives the run, so two runs in one
process never mix their records.
"""

from __future__ import annotations

import logging
import sys
from typing import IO, Any

import structlog


def get_logger(name: str) -> Any:
    """A structlog logger carrying the module name."""
    return structlog.get_logger(name)


def configure_logging(*, json: bool | None = None, stream: IO[str] | None = None, level: str = "info") -> None:
    """Configure structlog for a process: console renderer on a TTY, JSON lines otherwise."""
    stream = stream or sys.stderr
    if json is None:
        json = not stream.isatty()
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.dict_tracebacks if json else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
