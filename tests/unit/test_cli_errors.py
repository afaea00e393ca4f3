"""Every CLI command fails in one line with the README's exit code, and as JSON under --json.

Runs the real ``main`` group in-process (click's CliRunner); none of these cases needs an engine:
each fails before one would be asked.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from dad_sandbox import cli
from dad_sandbox._cli_errors import STATUS_EXITS, CliError, SandboxError, UsageFailure, one_line


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            out.extend(_commands(command, (*prefix, name)))
        else:
            out.append((*prefix, name))
    return out


COMMANDS = _commands(cli.main)


def invoke(*args: str, cwd: Path | None = None) -> click.testing.Result:
    runner = CliRunner()
    if cwd is None:
        return runner.invoke(cli.main, list(args), catch_exceptions=False)
    with runner.isolated_filesystem(temp_dir=cwd):
        return runner.invoke(cli.main, list(args), catch_exceptions=False)


def assert_one_line(result: click.testing.Result, code: int) -> None:
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr


def test_every_command_is_walked() -> None:
    """The walk below covers every command the CLI has, including replay."""
    assert {"exec", "run", "rerun", "replay", "serve", "gc", "doctor"} <= {c[0] for c in COMMANDS}
    assert ("runs", "export-otlp") in COMMANDS and ("policy", "validate") in COMMANDS


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_unknown_option_is_one_usage_line(command: tuple[str, ...]) -> None:
    """An unknown option is one line on stderr, exit 2, for every command."""
    result = invoke(*command, "--no-such-option")
    assert_one_line(result, UsageFailure.exit_code)
    assert "--no-such-option" in result.stderr


def _json_commands() -> list[tuple[str, ...]]:
    return [c for c in COMMANDS if any(p.name == "as_json" for p in _lookup(c).params)]


def _lookup(path: tuple[str, ...]) -> click.Command:
    command: click.Command = cli.main
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


def test_reading_commands_take_json() -> None:
    """Every reading command, policy validate and export-otlp accept --json."""
    have = set(_json_commands())
    want = {("runs", "ls"), ("runs", "show"), ("runs", "logs"), ("runs", "trace"), ("runs", "diff"),
            ("runs", "export-otlp"), ("policy", "show"), ("policy", "validate"), ("policy", "schema"),
            ("doctor",), ("gc",), ("exec",), ("run",), ("rerun",), ("replay",)}
    assert want <= have, want - have


@pytest.mark.parametrize("command", _json_commands(), ids=" ".join)
def test_usage_error_under_json_is_a_json_object(command: tuple[str, ...]) -> None:
    """Under --json a usage error is also {"error", "kind"} on stdout."""
    result = invoke(*command, "--json", "--no-such-option")
    assert result.exit_code == 2
    assert json.loads(result.stdout) == {"error": result.stderr.strip().removeprefix("error: "), "kind": "usage"}


def _bad_cases(tmp: Path) -> list[tuple[list[str], str]]:
    bad_policy = tmp / "bad.toml"
    bad_policy.write_text('image = "x"\ncpus = -1\n')
    root = ["--run-root", str(tmp / "runs")]
    missing = "run_20000101_000000_abcdef"
    return [
        (["run", "badmod x", *root], "component_load"),
        (["run", "__main__:x", *root], "component_load"),
        (["rerun", missing, "--from", "a.b", *root], "rerun_target"),
        (["rerun", "not-an-id", "--from", "a.b", *root], "rerun_target"),
        (["replay", missing, *root], "rerun_target"),
        (["runs", "show", missing, *root], "run_error"),
        (["runs", "show", "../../etc", *root], "run_error"),
        (["runs", "logs", missing, *root], "run_error"),
        (["runs", "trace", missing, *root], "run_error"),
        (["runs", "diff", missing, missing, *root], "run_error"),
        (["runs", "export-otlp", missing, "--endpoint", "notaurl", *root], "invalid_argument"),
        (["runs", "export-otlp", missing, "--endpoint", "http://127.0.0.1:9", *root], "run_error"),
        (["serve", "--max-parallel", "0", *root], "invalid_argument"),
        (["serve", "--warm-pool", "nonsense", *root], "invalid_argument"),
        (["policy", "show", "no_such_policy"], "policy_error"),
        (["policy", "validate", str(bad_policy)], "policy_error"),
        (["exec", "--policy", "no_such_policy", *root, "--", "true"], "policy_error"),
    ]


def test_bad_arguments_are_one_line_exit_7(tmp_path: Path) -> None:
    """Each expected failure is one line, exit 7, and {"error", "kind"} under --json."""
    for args, kind in _bad_cases(tmp_path):
        plain = invoke(*args)
        assert_one_line(plain, SandboxError.exit_code)
        head = args[: args.index("--")] if "--" in args else args
        tail = args[len(head):]
        as_json = invoke(*head, "--json", *tail) if _takes_json(args) else None
        if as_json is not None:
            assert as_json.exit_code == 7, (args, as_json.stderr)
            obj = json.loads(as_json.stdout)
            assert obj["kind"] == kind, (args, obj)
            assert obj["error"] == plain.stderr.strip().removeprefix("error: ")


def _takes_json(args: list[str]) -> bool:
    path = tuple(a for a in args[:2] if not a.startswith("-"))
    return any(path[:n] in set(_json_commands()) for n in (2, 1))


def test_json_flag_after_double_dash_belongs_to_the_run() -> None:
    """`exec -- prog --json` passes --json to the program: a failure is not reported as JSON."""
    result = invoke("exec", "--policy", "no_such_policy", "--run-root", "/nonexistent/x", "--", "prog", "--json")
    assert_one_line(result, 7)
    assert result.stdout == ""


def test_internal_error_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unexpected exception is one line asking for a report, not a traceback (-v shows it)."""
    def boom(*args, **kwargs):
        raise ZeroDivisionError("bug")

    monkeypatch.setattr("dad_sandbox.run._runs.list_runs", boom)
    result = invoke("runs", "ls", "--json")
    assert result.exit_code == 7 and json.loads(result.stdout)["kind"] == "internal"
    assert "ZeroDivisionError: bug" in result.stderr and "Traceback" not in result.stderr
    verbose = invoke("-v", "runs", "ls")
    assert verbose.exit_code == 7 and "Traceback" in verbose.stderr


def test_one_exception_class_per_exit_code() -> None:
    """Each documented non-zero exit code has its own CliError subclass."""
    classes = {c.exit_code: c for c in [*STATUS_EXITS.values(), UsageFailure, SandboxError]}
    assert sorted(classes) == [1, 2, 3, 4, 5, 6, 7]
    assert all(issubclass(c, CliError) for c in classes.values())
    assert STATUS_EXITS["abandoned"] is STATUS_EXITS["crashed"]


def test_one_line_strips_control_characters() -> None:
    """A message with newlines and terminal escapes becomes one printable line."""
    assert one_line("a\nb\x1b[31m c\t d") == "a b[31m c d"
