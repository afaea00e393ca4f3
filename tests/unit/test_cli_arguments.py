"""Argument handling of every CLI command, through click's CliRunner: missing arguments, wrong
types, bad choices and --help. None of these needs an engine: click refuses them before the command
body runs, and the error handler turns each into one usage line (exit 2), JSON under --json.
"""

from __future__ import annotations

import json

import click
import pytest

from dad_sandbox._cli_errors import UsageFailure
from tests.unit.test_cli_errors import COMMANDS, _lookup, assert_one_line, invoke


def _required(path: tuple[str, ...]) -> list[click.Parameter]:
    return [p for p in _lookup(path).params if p.required]


WITH_REQUIRED = [c for c in COMMANDS if _required(c)]
NUMERIC = [(c, p) for c in COMMANDS for p in _lookup(c).params
           if isinstance(p, click.Option) and isinstance(p.type, click.types._NumberParamTypeBase)]


def test_the_walk_finds_required_and_numeric_parameters() -> None:
    """The cases below are not empty: the commands that need arguments and take numbers are found."""
    assert {("exec",), ("rerun",), ("runs", "diff"), ("session", "exec")} <= set(WITH_REQUIRED)
    assert {(("runs", "ls"), "limit"), (("serve",), "max_parallel")} <= {(c, p.name) for c, p in NUMERIC}


@pytest.mark.parametrize("command", WITH_REQUIRED, ids=" ".join)
def test_missing_argument_is_one_usage_line(command: tuple[str, ...]) -> None:
    """Leaving out a required argument or option is one usage line naming it, exit 2, no traceback."""
    result = invoke(*command)
    assert_one_line(result, UsageFailure.exit_code)
    first = _required(command)[0]
    shown = first.opts[0] if isinstance(first, click.Option) else (first.human_readable_name or "").upper()
    assert shown.lower() in result.stderr.lower(), result.stderr


@pytest.mark.parametrize(("command", "param"), NUMERIC, ids=lambda v: v.name if isinstance(v, click.Parameter) else " ".join(v))
def test_non_number_is_one_usage_line(command: tuple[str, ...], param: click.Option) -> None:
    """A numeric option given a word is refused as a usage error that names the option."""
    args = [*command, param.opts[0], "lots"]
    args += [a for p in _required(command) for a in ([p.opts[0], "x"] if isinstance(p, click.Option) else ["x"])]
    result = invoke(*args)
    assert_one_line(result, UsageFailure.exit_code)
    assert param.opts[0] in result.stderr


def test_missing_argument_under_json_is_a_json_object() -> None:
    """``runs show --json`` without RUN_ID answers {"error", "kind": "usage"} on stdout."""
    result = invoke("runs", "show", "--json")
    assert result.exit_code == UsageFailure.exit_code
    assert json.loads(result.stdout)["kind"] == "usage"


def test_unknown_command_is_one_usage_line() -> None:
    """A mistyped command is one usage line, exit 2."""
    assert_one_line(invoke("exce", "true"), UsageFailure.exit_code)
    assert_one_line(invoke("runs", "lss"), UsageFailure.exit_code)


def test_exec_refuses_an_empty_argv() -> None:
    """``exec --`` with nothing after it is a usage error, not a run of nothing."""
    assert_one_line(invoke("exec", "--"), UsageFailure.exit_code)


@pytest.mark.parametrize("command", [(), *COMMANDS], ids=lambda c: " ".join(c) or "main")
def test_help_answers_for_every_command(command: tuple[str, ...]) -> None:
    """``--help`` prints usage and exits 0 for the group and every command."""
    result = invoke(*command, "--help")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("Usage:")


def test_version_of_the_group_is_in_its_help() -> None:
    """The group's help names the version the user runs (what a bug report should quote)."""
    from dad_sandbox import __version__

    assert __version__ in invoke("--help").stdout
