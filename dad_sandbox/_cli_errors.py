"""How the ``dad-sandbox`` command fails: one exception class per documented exit code, one line out.

Why one place: every command raises, and :class:`ErrorHandlingGroup` turns whatever reaches it into
one line on stderr - and, when the command line asked for ``--json``, a JSON object
``{"error": ..., "kind": ...}`` on stdout - with the README's exit code. No traceback reaches the
user for an expected failure; an unexpected one says so in one line too (``-v`` shows the traceback).

Exit codes (README "The CLI", and ``--help``)::

    0 completed          3 TimedOutExit      6 CancelledExit
    1 RunFailedExit      4 OOMKilledExit     7 SandboxError (dad-sandbox could not do it)
    2 UsageFailure       5 CrashedExit
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Sequence
from typing import IO, Any, ClassVar

import click

#: How long one error line may get (a message is never a page).
MAX_LINE = 2000


def one_line(message: object) -> str:
    """``message`` on one line: whitespace collapsed, terminal escape characters dropped, capped."""
    text = " ".join(str(message).split())
    text = "".join(ch for ch in text if ch.isprintable())
    return text if len(text) <= MAX_LINE else text[: MAX_LINE - 3] + "..."


class CliError(click.ClickException):
    """Base: an expected failure shown as one line (or a JSON object under ``--json``)."""

    exit_code: ClassVar[int] = 7
    default_kind: ClassVar[str] = "sandbox_error"

    def __init__(self, message: object, *, kind: str | None = None, **details: Any) -> None:
        super().__init__(one_line(message))
        self.kind = kind or self.default_kind
        self.details = details

    def to_json(self) -> dict[str, Any]:
        return {"error": self.message, "kind": self.kind, **self.details}

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.message}", err=True)


class RunFailedExit(CliError):
    """Exit 1: the run (component or command) failed."""

    exit_code = 1
    default_kind = "failed"


class UsageFailure(CliError):
    """Exit 2: the command line itself is wrong (unknown option, missing argument)."""

    exit_code = 2
    default_kind = "usage"


class TimedOutExit(CliError):
    """Exit 3: the run passed its deadline."""

    exit_code = 3
    default_kind = "timed_out"


class OOMKilledExit(CliError):
    """Exit 4: the run went over its memory limit."""

    exit_code = 4
    default_kind = "oom_killed"


class CrashedExit(CliError):
    """Exit 5: the run crashed or was abandoned."""

    exit_code = 5
    default_kind = "crashed"


class CancelledExit(CliError):
    """Exit 6: the run (or the command) was cancelled."""

    exit_code = 6
    default_kind = "cancelled"


class SandboxError(CliError):
    """Exit 7: dad-sandbox could not do it (engine, image, policy, unknown run, invalid request)."""

    exit_code = 7
    default_kind = "sandbox_error"


#: Exit code of each final run status (``abandoned`` shares ``crashed``'s).
STATUS_EXITS: dict[str, type[CliError]] = {
    "failed": RunFailedExit,
    "timed_out": TimedOutExit,
    "oom_killed": OOMKilledExit,
    "crashed": CrashedExit,
    "abandoned": CrashedExit,
    "cancelled": CancelledExit,
}


def kind_of(exc: BaseException) -> str:
    """A stable machine-readable name for a dad-sandbox error (the ``kind`` of the JSON object)."""
    from dad_sandbox import errors

    table: list[tuple[type[BaseException], str]] = [
        (errors.StaticInputsError, "invalid_inputs"),
        (errors.RerunTargetError, "rerun_target"),
        (errors.ComponentReferenceError, "component_load"),
        (errors.UnsafePathError, "unsafe_path"),
        (errors.RunError, "run_error"),
        (errors.PolicyError, "policy_error"),
        (errors.EngineUnavailable, "engine_unavailable"),
        (errors.ImageNotFound, "image_missing"),
        (errors.EngineError, "engine_error"),
        (errors.ExecutionStateError, "state_error"),
        (errors.RunOutcomeError, "run_outcome"),
    ]
    return next((kind for cls, kind in table if isinstance(exc, cls)), "sandbox_error")


def _wants(args: Sequence[str], *flags: str) -> bool:
    """Whether the command line holds one of ``flags`` (before a ``--``, after which argv is the run's)."""
    head = list(args)[: list(args).index("--")] if "--" in args else list(args)
    return any(a in flags for a in head)


class ErrorHandlingGroup(click.Group):
    """The root group: runs the command and turns every failure into one line and its exit code."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        try:
            super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except CliError as exc:
            _report(exc, argv)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "dad-sandbox"
            _report(UsageFailure(f"{exc.format_message()} (see '{where} --help')"), argv)
        except click.ClickException as exc:
            _report(SandboxError(exc.format_message()), argv)
        except click.Abort as exc:  # Ctrl-C, or SIGTERM/SIGHUP turned into it by dad_sandbox._signals
            name = getattr(exc.__cause__ or exc.__context__, "signal_name", "SIGINT")
            _report(CancelledExit(f"cancelled ({name})"), argv)
        except Exception as exc:
            from dad_sandbox.errors import DadSandboxError

            if isinstance(exc, DadSandboxError):
                _report(SandboxError(exc, kind=kind_of(exc)), argv)
            if isinstance(exc, OSError):
                _report(SandboxError(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""),
                                     kind="os_error"), argv)
            if _wants(argv, "-v", "--verbose"):
                traceback.print_exc()
            _report(SandboxError(f"internal error: {type(exc).__name__}: {exc} (run with -v for the traceback "
                                 "and please report it)", kind="internal"), argv)
        sys.exit(0)


def _report(exc: CliError, argv: Sequence[str]) -> None:
    """Print one error and exit with its code; under ``--json`` also the JSON object on stdout."""
    if _wants(argv, "--json"):
        click.echo(json.dumps(exc.to_json()))
    exc.show()
    sys.exit(exc.exit_code)
