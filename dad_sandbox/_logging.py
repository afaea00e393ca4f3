"""structlog set-up: readable on a terminal, JSON lines elsewhere and in files.

Libraries should not configure logging at import, so nothing here runs until the CLI or the
in-container entrypoint calls :func:`configure_logging`. Per-run context (``run_id``) is bound
with ``structlog.contextvars.bound_contextvars`` by whoever drives the run, so two runs in one
process never mix their records.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog


class _Logger:
    """A module logger that follows the application's structlog configuration when there is one,
    and otherwise writes readable lines to stderr - never to stdout, which belongs to the program
    (``dad-sandbox exec --json`` prints its result there)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._fallback: Any = None

    def _resolve(self) -> Any:
        if structlog.is_configured():
            return structlog.get_logger(self._name)
        if self._fallback is None:
            self._fallback = structlog.wrap_logger(
                structlog.PrintLogger(sys.stderr),
                processors=[
                    structlog.contextvars.merge_contextvars,
                    structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=True),
                    structlog.dev.ConsoleRenderer(colors=False),
                ],
                wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
            )
        return self._fallback

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._resolve(), attr)


def get_logger(name: str) -> Any:
    """A structlog logger for a module (see :class:`_Logger`)."""
    return _Logger(name)


def configure_logging(
    *, json: bool | None = None, stream: TextIO | None = None, level: str = "info", line_prefix: str = ""
) -> None:
    """Configure structlog for a process: console renderer on a TTY, JSON lines otherwise.

    ``line_prefix`` starts every rendered line: the in-container runner marks its records with its
    run's channel prefix so the host never mistakes a program's own output for them.
    """
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
            *([lambda _l, _m, line: line_prefix + line] if line_prefix else []),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
