"""The ``dad-sandbox`` command. Thin: it parses, calls :mod:`dad_sandbox.sync`, and maps outcomes
to documented exit codes in one place.

Imports of the heavy layers happen inside the commands, so ``dad-sandbox --help`` starts fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click

from dad_sandbox._version import __version__

#: Exit codes, one per outcome (also in the README and in --help).
EXIT_CODES = {
    "completed": 0,
    "failed": 1,
    # 2 is click's usage error
    "timed_out": 3,
    "oom_killed": 4,
    "crashed": 5,
    "abandoned": 5,
    "cancelled": 6,
    "sandbox_error": 7,
}
EXIT_HELP = (
    "Exit codes: 0 completed, 1 failed, 2 usage error, 3 timed_out, 4 oom_killed, "
    "5 crashed/abandoned, 6 cancelled, 7 the sandbox could not run it (engine, image, policy)."
)


class SandboxError(click.ClickException):
    """A dad-sandbox error shown to the user with exit code 7."""

    exit_code = EXIT_CODES["sandbox_error"]


def _fail(exc: Exception) -> SandboxError:
    return SandboxError(str(exc))


def _print_output(run_dir: Path) -> None:
    """Replay the run's captured stdout/stderr (already capped by the policy)."""
    logs = run_dir / ".trace" / "logs.jsonl"
    if logs.is_symlink() or not logs.is_file():
        return
    with open(logs, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("source") != "container":
                continue
            stream = sys.stderr if rec.get("stream") == "stderr" else sys.stdout
            stream.write(rec.get("message", "") + ("" if rec.get("partial") else "\n"))
    sys.stdout.flush()


def _finish(result: Any, as_json: bool, *, show_output: bool) -> None:
    if as_json:
        click.echo(json.dumps(result.summary(), indent=2, default=str))
    else:
        if show_output:
            _print_output(result.run_dir)
        _print_summary(result)
    sys.exit(EXIT_CODES.get(result.status.value, 1))


def _print_summary(result: Any) -> None:
    colour = "green" if result.ok else "red"
    err = sys.stderr
    click.echo("", err=True)
    click.secho(f"run      {result.run_id}", file=err)
    status = result.status.value + (f" ({result.reason})" if result.reason else "")
    click.secho(f"status   {status}", fg=colour, bold=True, file=err)
    if result.exit_code is not None:
        click.echo(f"exit     {result.exit_code}", err=True)
    if result.duration_seconds is not None:
        click.echo(f"duration {result.duration_seconds:.3f}s", err=True)
    click.echo(f"run dir  {result.run_dir}", err=True)
    for node in result.nodes:
        out = json.dumps(node.get("output"), default=str)
        if len(out) > 100:
            out = out[:97] + "..."
        click.echo(f"  node {node['hierarchy_path']:<30} {node['status']:<10} {out}", err=True)
    if result.error and not result.ok:
        click.secho("error:", fg="red", file=err)
        click.echo("  " + "\n  ".join(result.error.strip().splitlines()[-25:]), err=True)


def _configure_logging(verbose: bool) -> None:
    from dad_sandbox._logging import configure_logging

    configure_logging(level="debug" if verbose else "warning")


_policy_opt = click.option(
    "--policy", default="untrusted", show_default=True, metavar="NAME|PATH", help="Policy name or TOML file."
)
_timeout_opt = click.option("--timeout", type=float, metavar="SECONDS", help="Override the policy's wall-clock timeout.")
_run_root_opt = click.option(
    "--run-root", type=click.Path(file_okay=False, path_type=Path), help="Where run dirs go [default: ./runs]."
)
_json_opt = click.option("--json", "as_json", is_flag=True, help="Print the final result as one JSON object.")
_prefix_opt = click.option("--prefix", "run_id_prefix", metavar="PREFIX", help="Run id prefix.")


@click.group(help=f"dad-sandbox {__version__}: run DAD agents and commands, each in its own container.\n\n{EXIT_HELP}")
@click.version_option(__version__, prog_name="dad-sandbox")
@click.option("-v", "--verbose", is_flag=True, help="Log what the supervisor does.")
def main(verbose: bool) -> None:
    _configure_logging(verbose)


@main.command("exec", help=f"Run ARGV as one run in a fresh container.\n\n{EXIT_HELP}")
@_policy_opt
@_timeout_opt
@_run_root_opt
@_json_opt
@_prefix_opt
@click.argument("argv", nargs=-1, required=True)
def exec_cmd(policy: str, timeout: float | None, run_root: Path | None, as_json: bool, run_id_prefix: str | None, argv: tuple[str, ...]) -> None:
    from dad_sandbox.errors import DadSandboxError
    from dad_sandbox.sync import exec_command

    try:
        result = exec_command(list(argv), policy=policy, timeout=timeout, project_root=Path.cwd(),
                              run_root=run_root, run_id_prefix=run_id_prefix)
    except DadSandboxError as exc:
        raise _fail(exc) from exc
    _finish(result, as_json, show_output=True)


@main.command("run", help=f"Run the component MODULE:ATTRIBUTE (importable from --project-root) in a container.\n\n{EXIT_HELP}")
@click.argument("reference", metavar="MODULE:ATTRIBUTE")
@_policy_opt
@_timeout_opt
@_run_root_opt
@_json_opt
@_prefix_opt
@click.option("--project-root", type=click.Path(file_okay=False, exists=True, path_type=Path), default=Path("."),
              show_default=True, help="Project folder, mounted read-only; REFERENCE is imported from it.")
@click.option("--inputs", "inputs_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Static inputs JSON: {node_id_or_path: {field: value}}.")
def run_cmd(reference: str, policy: str, timeout: float | None, run_root: Path | None, as_json: bool,
            run_id_prefix: str | None, project_root: Path, inputs_file: Path | None) -> None:
    from dad_sandbox.errors import DadSandboxError
    from dad_sandbox.sync import run_component

    try:
        result = run_component(reference, policy=policy, timeout=timeout, project_root=project_root,
                               run_root=run_root, run_id_prefix=run_id_prefix, static_inputs_file=inputs_file)
    except DadSandboxError as exc:
        raise _fail(exc) from exc
    _finish(result, as_json, show_output=False)


@main.command("gc", help="Find containers whose supervisor is gone; finalize their runs and remove them.")
@click.option("--dry-run", is_flag=True, help="Only list what would be cleaned.")
@_json_opt
def gc_cmd(dry_run: bool, as_json: bool) -> None:
    import asyncio

    from dad_sandbox.errors import DadSandboxError
    from dad_sandbox.sandbox import Supervisor

    async def gc() -> list[Any]:
        async with Supervisor(recover_on_start=False) as sup:
            return await sup.gc(dry_run=dry_run)

    try:
        found = asyncio.run(gc())
    except DadSandboxError as exc:
        raise _fail(exc) from exc
    if as_json:
        import dataclasses

        click.echo(json.dumps([dataclasses.asdict(o) for o in found], indent=2))
        return
    if not found:
        click.echo("no dad-sandbox containers on this engine")
        return
    for o in found:
        status = f" -> {o.status}" if o.status else ""
        click.echo(f"{o.container_id[:12]}  {o.run_id:<40} {o.state:<8} {o.action.value}{status}"
                   + (f"  ({o.detail})" if o.detail else ""))


@main.group("image", help="The runner image.")
def image_group() -> None:
    pass


def _images_dir() -> Path:
    package = Path(__file__).resolve().parent
    for candidate in (package / "_images", package.parent / "images"):
        if (candidate / "build.sh").is_file():
            return candidate
    raise SandboxError("images/build.sh not found: this installation has no image sources")


@image_group.command("build", help="Build the base and runner images (no registry needed on root Debian).")
@click.option("--force", is_flag=True, help="Rebuild even if the inputs did not change.")
def image_build(force: bool) -> None:
    script = _images_dir() / "build.sh"
    env = dict(os.environ, PYTHON=sys.executable)
    code = subprocess.call(["bash", str(script), *(["--force"] if force else [])], env=env)
    if code:
        raise SandboxError(f"image build failed (exit {code})")


if __name__ == "__main__":
    main()
