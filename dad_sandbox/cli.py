"""The ``dad-sandbox`` command. Thin: it parses, calls the library, and maps outcomes to the
documented exit codes in one place.

Imports of the heavy layers happen inside the commands, so ``dad-sandbox --help`` starts fast.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from dad_sandbox._cli_errors import STATUS_EXITS, ErrorHandlingGroup, SandboxError
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
    "Exit codes: 0 completed (or the command succeeded), 1 failed (or doctor found problems), "
    "2 usage error, 3 timed_out, 4 oom_killed, 5 crashed/abandoned, 6 cancelled, "
    "7 dad-sandbox could not do it (engine, image, policy, unknown run, a request refused before any node ran: "
    "invalid inputs, bad re-run start, component that does not load). Errors are one line on stderr; "
    "with --json also {\"error\": ..., \"kind\": ...} on stdout."
)


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


# ---------------------------------------------------------------------------- run output


def _shown(text: Any, stream: Any = None) -> str:
    """Run data as it may be printed: control sequences escaped when it goes to a terminal."""
    from dad_sandbox._terminal import printable

    text = str(text)
    return printable(text) if (stream or sys.stdout).isatty() else text


def _print_output(run_dir: Path) -> None:
    """Replay the run's captured stdout/stderr (already capped by the policy), made safe for a terminal."""
    from dad_sandbox.run import LOGS_FILE, iter_jsonl

    for _, rec in iter_jsonl(run_dir, LOGS_FILE):
        if rec.get("source") != "container":
            continue
        stream = sys.stderr if rec.get("stream") == "stderr" else sys.stdout
        stream.write(_shown(rec.get("message", ""), stream) + ("" if rec.get("partial") else "\n"))
    sys.stdout.flush()


def _print_summary(summary: dict[str, Any]) -> None:
    err = sys.stderr
    ok = summary["status"] == "completed"
    click.echo("", err=True)
    click.echo(f"run      {summary['run_id']}", err=True)
    status = summary["status"] + (f" ({summary['reason']})" if summary.get("reason") else "")
    click.secho(f"status   {status}", fg="green" if ok else "red", bold=True, file=err)
    if summary.get("exit_code") is not None:
        click.echo(f"exit     {summary['exit_code']}", err=True)
    if summary.get("duration_seconds") is not None:
        click.echo(f"duration {summary['duration_seconds']:.3f}s", err=True)
    click.echo(f"run dir  {summary['run_dir']}", err=True)
    for node in summary.get("nodes") or []:
        out = json.dumps(node.get("output"), default=str)
        out = out if len(out) <= 100 else out[:97] + "..."
        click.echo(_shown(f"  node {node['hierarchy_path']:<32} {node['status']!s:<10} {out}", err), err=True)
    if summary.get("error") and not ok:
        click.secho("error:", fg="red", file=err)
        click.echo(_shown("  " + "\n  ".join(str(summary["error"]).strip().splitlines()[-25:]), err), err=True)


def _finish(summary: dict[str, Any], as_json: bool, *, show_output: bool) -> None:
    from dad_sandbox.sandbox._report import REQUEST_REASONS

    if summary["status"] == "failed" and summary.get("reason") in REQUEST_REASONS:
        # refused before any node ran: the user's request is wrong, not the run - one line, exit 7
        first = (str(summary.get("error") or "the request was refused").strip().splitlines() or [""])[0]
        raise SandboxError(first, kind=summary["reason"], run_id=summary["run_id"], status="failed")
    if as_json:
        _echo_json(summary)
    else:
        if show_output:
            _print_output(Path(summary["run_dir"]))
        _print_summary(summary)
    code = STATUS_EXITS[summary["status"]].exit_code if summary["status"] in STATUS_EXITS else 0
    sys.exit(code if summary["status"] != "completed" else 0)


def _say(notes: list[str], as_json: bool) -> None:
    """Tell the user what a re-run or replay reproduces and what was overridden (stderr, not under --json)."""
    if not as_json:
        for note in notes:
            click.echo(f"{note}", err=True)


def _run_root(run_root: Path | None) -> Path:
    return (run_root or Path("runs")).resolve()


# ---------------------------------------------------------------------------- options

_policy_opt = click.option(
    "--policy", default="untrusted", show_default=True, metavar="NAME|PATH", help="Policy name or TOML file."
)
_timeout_opt = click.option("--timeout", type=float, metavar="SECONDS", help="Override the policy's wall-clock timeout.")
_run_root_opt = click.option(
    "--run-root", type=click.Path(file_okay=False, path_type=Path), help="Where run dirs are [default: ./runs]."
)
_json_opt = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
_prefix_opt = click.option("--prefix", "run_id_prefix", metavar="PREFIX", help="Run id prefix.")
_inputs_opt = click.option("--inputs", "inputs_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
                           help="Static inputs JSON: {node_id_or_path: {field: value}}.")


@click.group(cls=ErrorHandlingGroup, help=f"dad-sandbox {__version__}: run DAD agents and commands, each in its own container.\n\n{EXIT_HELP}")
@click.version_option(__version__, prog_name="dad-sandbox")
@click.option("-v", "--verbose", is_flag=True, help="Log what the supervisor does (to stderr).")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    ctx.obj = {"verbose": verbose}
    if ctx.invoked_subcommand == "exec":
        # exec first tries the resident supervisor: a thin client that needs neither asyncio nor
        # structlog (~65 ms of imports). It sets them up only if it supervises the run itself.
        _light_signals()
        return
    _setup(verbose)


def _setup(verbose: bool) -> None:
    from dad_sandbox import _signals
    from dad_sandbox._logging import configure_logging

    _signals.install()  # SIGINT/SIGTERM/SIGHUP cancel this process's runs, whatever was inherited
    configure_logging(level="debug" if verbose else "error")


def _light_signals() -> None:
    """SIGINT, SIGTERM and SIGHUP end a thin client as Ctrl-C does, whatever was inherited (an
    ignored SIGINT included): it then closes its socket, and the server cancels the run."""
    import signal

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupted)


# ---------------------------------------------------------------------------- running


@main.command("exec", help="Run ARGV as one run in a fresh container.\n\n"
                            "The first exec in a project starts a resident supervisor in the background (it says so "
                            "on stderr) that later execs go through, and that ends after 10 idle minutes; "
                            "DAD_SANDBOX_AUTOSTART=0 (or --no-server) opts out. See 'dad-sandbox serve'."
                            f"\n\n{EXIT_HELP}")
@_policy_opt
@_timeout_opt
@_run_root_opt
@_json_opt
@_prefix_opt
@click.option("--no-server", is_flag=True, help="Supervise the run from this process; neither use nor start a resident supervisor.")
@click.argument("argv", nargs=-1, required=True)
def exec_cmd(policy: str, timeout: float | None, run_root: Path | None, as_json: bool, run_id_prefix: str | None,
             no_server: bool, argv: tuple[str, ...]) -> None:
    if run_root is None and not no_server and os.environ.get("DAD_SANDBOX_NO_SERVER") != "1":
        _served_exec(list(argv), policy, timeout, run_id_prefix, as_json)  # returns only if no server serves it
    _setup(bool((click.get_current_context().find_root().obj or {}).get("verbose")))
    from dad_sandbox._progress import Progress
    from dad_sandbox.sync import exec_command

    with Progress(f"exec {argv[0]}", quiet=as_json or not sys.stderr.isatty()) as progress:
        result = exec_command(list(argv), policy=policy, timeout=timeout, project_root=Path.cwd(),
                              run_root=_run_root(run_root), run_id_prefix=run_id_prefix, on_event=progress.observe)
    _finish(result.summary(), as_json, show_output=True)


def _served_exec(argv: list[str], policy: str, timeout: float | None, prefix: str | None, as_json: bool) -> None:
    """Run through a resident supervisor for this project, if one listens; exits when done.

    If none listens, start one for the next exec (unless opted out) and return: this run is
    supervised from this process meanwhile, so the first exec waits for no server start-up.
    """
    from dad_sandbox._resident_client import NoResidentServer, default_socket_path, served_exec

    policy_ref = str(Path(policy).resolve()) if ("/" in policy or policy.endswith(".toml")) else policy
    request = {"argv": argv, "policy": policy_ref, "timeout": timeout, "prefix": prefix, "project_root": str(Path.cwd())}
    socket_path = default_socket_path(Path.cwd())
    run_id = None
    try:
        for answer in served_exec(request, socket_path=socket_path):
            if "run_id" in answer:
                run_id = answer["run_id"]
            elif "result" in answer:
                _finish(answer["result"], as_json, show_output=True)
    except NoResidentServer as exc:
        if run_id is None:
            if not exc.listening:
                _autostart(socket_path)
            return
        raise
    except KeyboardInterrupt:  # the server cancels the run when we go away
        click.echo(f"\ncancelled run {run_id}", err=True)
        sys.exit(EXIT_CODES["cancelled"])
    raise SandboxError(f"the supervisor ended the connection before run {run_id} finished; see 'dad-sandbox runs show {run_id}'")


def _autostart(socket_path: Path) -> None:
    """Start a resident supervisor for this project on first use, and say so once (on stderr)."""
    from dad_sandbox._resident_client import autostart, autostart_enabled, idle_seconds

    if not autostart_enabled():
        return
    try:
        pid = autostart(Path.cwd(), socket_path)
    except Exception as exc:  # a server is an optimisation: the run goes on without one
        click.echo(f"dad-sandbox: could not start a resident supervisor ({exc}); running without one", err=True)
        return
    if pid is not None:
        click.echo(f"dad-sandbox: started a resident supervisor for {Path.cwd()} (pid {pid}) so the next exec "
                   f"starts faster; it ends after {idle_seconds() / 60:g} idle minutes. Stop it: "
                   "'dad-sandbox serve --stop'; never start one: DAD_SANDBOX_AUTOSTART=0", err=True)


def _run_component(reference: str, *, as_json: bool, **kwargs: Any) -> None:
    from dad_sandbox._progress import Progress
    from dad_sandbox.runner import check_reference
    from dad_sandbox.sync import run_component

    label = check_reference(reference).rsplit(":", 1)[-1]
    if as_json:
        result = run_component(reference, **kwargs)
    else:
        with Progress(label) as progress:
            result = run_component(reference, on_event=progress.observe, **kwargs)
    _finish(_with_reproduction(result), as_json, show_output=False)


def _with_reproduction(result: Any) -> dict[str, Any]:
    summary: dict[str, Any] = result.summary()
    for key in ("reproduction", "replay_of"):
        if getattr(result.metadata, key):
            summary[key] = getattr(result.metadata, key)
    return summary


@main.command("run", help=f"Run the component MODULE:ATTRIBUTE (importable from --project-root) in a container. "
                          f"The component is imported only inside the container, never on this host.\n\n{EXIT_HELP}")
@click.argument("reference", metavar="MODULE:ATTRIBUTE")
@_policy_opt
@_timeout_opt
@_run_root_opt
@_json_opt
@_prefix_opt
@_inputs_opt
@click.option("--project-root", type=click.Path(file_okay=False, exists=True, path_type=Path), default=Path("."),
              show_default=True, help="Project folder, mounted read-only; REFERENCE is imported from it (in the container).")
def run_cmd(reference: str, policy: str, timeout: float | None, run_root: Path | None, as_json: bool,
            run_id_prefix: str | None, inputs_file: Path | None, project_root: Path) -> None:
    _run_component(reference, as_json=as_json, policy=policy, timeout=timeout, project_root=project_root,
                   run_root=_run_root(run_root), run_id_prefix=run_id_prefix, static_inputs_file=inputs_file)


@main.command("rerun", help="Re-run RUN_ID from HIERARCHY_PATH: earlier elements are loaded from RUN_ID, not executed. "
                            "It reproduces RUN_ID: its recorded policy and image id, and its static inputs with "
                            f"--inputs overlaid per node.\n\n{EXIT_HELP}")
@click.argument("run_id")
@click.option("--from", "start", required=True, metavar="HIERARCHY_PATH", help="e.g. my_agent.main.node3")
@click.option("--policy", default=None, metavar="NAME|PATH", help="Use this policy instead of RUN_ID's recorded one.")
@click.option("--image", default=None, metavar="IMAGE", help="Use this image instead of RUN_ID's recorded image id.")
@_timeout_opt
@_run_root_opt
@_json_opt
@_inputs_opt
@click.option("--replace-inputs", is_flag=True,
              help="Use only --inputs (drop RUN_ID's static inputs) instead of overlaying them per node.")
def rerun_cmd(run_id: str, start: str, policy: str | None, image: str | None, timeout: float | None,
              run_root: Path | None, as_json: bool, inputs_file: Path | None, replace_inputs: bool) -> None:
    from dad_sandbox.sandbox._reproduce import plan, previous_run

    root = _run_root(run_root)
    _, md = previous_run(root, run_id)
    if not md.component or ":" not in md.component:
        what = f"the command {' '.join(md.command or [])[:60]!r}" if md.command else f"{md.component!r} from an object"
        raise SandboxError(f"run {run_id} ran {what}, not a component reference, so it cannot be re-run from a node; "
                           f"'dad-sandbox replay {run_id}' runs it again", kind="rerun_target")
    _say(plan(md, policy=policy, image=image, timeout=timeout).notes, as_json)
    _run_component(md.component, as_json=as_json, policy=policy, image=image, timeout=timeout,
                   project_root=md.project_root, run_root=root, static_inputs_file=inputs_file,
                   replace_inputs=replace_inputs, previous_run_id=run_id, start_hierarchy_path=start, run_id_prefix=None)


@main.command("replay", help="Run RUN_ID again from its metadata alone: the same component or command, static inputs, "
                             "policy and image id. Compare the two with 'dad-sandbox runs diff'.\n\n" + EXIT_HELP)
@click.argument("run_id")
@click.option("--image", default=None, metavar="IMAGE", help="Use this image if RUN_ID's image id is gone.")
@_run_root_opt
@_json_opt
def replay_cmd(run_id: str, image: str | None, run_root: Path | None, as_json: bool) -> None:
    from dad_sandbox._progress import Progress
    from dad_sandbox.sandbox._reproduce import plan, previous_run
    from dad_sandbox.sync import replay

    root = _run_root(run_root)
    _, md = previous_run(root, run_id)
    _say(plan(md, image=image).notes, as_json)
    if as_json:
        result = replay(run_id, run_root=root, image=image)
    else:
        with Progress(f"replay {run_id}") as progress:
            result = replay(run_id, run_root=root, image=image, on_event=progress.observe)
        click.echo(f"compare: dad-sandbox runs diff {run_id} {result.run_id}", err=True)
    _finish(_with_reproduction(result), as_json, show_output=bool(md.command and not md.component))


# ---------------------------------------------------------------------------- runs


@main.command("serve", help="Keep a supervisor (with a warm pool) running for this project; "
                            "'dad-sandbox exec' then runs through it instead of starting cold. "
                            "--status shows the one serving this project, --stop ends it.")
@click.option("--warm-pool", "pools", multiple=True, metavar="POLICY=SIZE", default=["untrusted=2"], show_default=True,
              help="Containers kept started ahead, per policy (repeatable; SIZE 0 for none).")
@click.option("--max-parallel", type=int, default=8, show_default=True)
@click.option("--socket", "socket_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Unix socket [default: $DAD_SANDBOX_SOCKET or this project's socket in /tmp/dad-sandbox-<uid>].")
@click.option("--idle-timeout", type=float, metavar="SECONDS", help="End after this long with no run [default: never].")
@click.option("--status", "show_status", is_flag=True, help="Print the serving supervisor's state (JSON) and exit; 1 if none.")
@click.option("--stop", "stop", is_flag=True, help="Stop the serving supervisor (its runs are cancelled); 0 also if none.")
@click.option("--lock-fd", type=int, hidden=True, help="The socket's lock, already held (passed by exec's auto-start).")
@_run_root_opt
def serve_cmd(pools: tuple[str, ...], max_parallel: int, socket_path: Path | None, idle_timeout: float | None,
              show_status: bool, stop: bool, lock_fd: int | None, run_root: Path | None) -> None:
    import asyncio

    from dad_sandbox._resident_client import default_socket_path

    path = socket_path or default_socket_path(Path.cwd())
    if show_status or stop:
        _serve_control(path, stop=stop)
        return
    if max_parallel < 1:
        raise SandboxError(f"--max-parallel {max_parallel}: give at least 1 (runs at the same time)", kind="invalid_argument")
    if idle_timeout is not None and idle_timeout <= 0:
        raise SandboxError(f"--idle-timeout {idle_timeout:g}: give a positive number of seconds", kind="invalid_argument")

    from dad_sandbox.sandbox import Supervisor
    from dad_sandbox.sandbox._resident_server import ResidentServer

    warm: dict[str, int] = {}
    for item in pools:
        name, sep, size = item.partition("=")
        if not sep or not size.isdigit():
            raise SandboxError(f"--warm-pool {item!r}: use POLICY=SIZE, e.g. untrusted=2", kind="invalid_argument")
        if int(size):
            warm[name] = int(size)
    supervisor = Supervisor(project_root=Path.cwd(), run_root=_run_root(run_root), max_parallel=max_parallel,
                            warm_pool=warm)
    asyncio.run(ResidentServer(supervisor, path, idle_timeout=idle_timeout, lock_fd=lock_fd).serve_forever())


def _serve_control(path: Path, *, stop: bool) -> None:
    """``serve --status`` / ``serve --stop``: ask the server on ``path``; for --stop, wait until it is gone."""
    from dad_sandbox._resident_client import NoResidentServer, control

    try:
        answer = control("stop" if stop else "status", socket_path=path)
    except NoResidentServer:
        click.echo(f"no dad-sandbox supervisor serves on {path}", err=True)
        sys.exit(0 if stop else 1)
    if not stop:
        _echo_json(answer)
        return
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and os.path.lexists(path):
        time.sleep(0.05)  # it removes its socket last, after its runs and warm pool are cleaned up
    if os.path.lexists(path):
        raise SandboxError(f"the supervisor (pid {answer.get('pid')}) did not stop within 60 s; it ends on SIGTERM")
    click.echo(f"stopped the dad-sandbox supervisor (pid {answer.get('pid')}) on {path}", err=True)


@main.group("runs", help="Inspect runs: ls, show, logs, trace, diff, export-otlp.")
def runs_group() -> None:
    pass


def _what(md: Any) -> str:
    if md.component:
        return str(md.component)
    if md.command:
        return " ".join(md.command)[:60]
    return str(md.root_component_id)


@runs_group.command("ls", help="List runs, newest first.")
@_run_root_opt
@_json_opt
@click.option("--limit", type=int, default=50, show_default=True)
def runs_ls(run_root: Path | None, as_json: bool, limit: int) -> None:
    from dad_sandbox.run import list_runs

    runs = list_runs(_run_root(run_root))[:limit]
    if as_json:
        _echo_json([{"run_id": m.run_id, "status": m.status.value, "reason": m.reason, "created_at": m.created_at,
                     "duration_seconds": m.duration_seconds, "what": _what(m)} for m in runs])
        return
    if not runs:
        click.echo(f"no runs under {_run_root(run_root)}")
        return
    click.echo(f"{'RUN ID':<42} {'STATUS':<11} {'REASON':<13} {'DURATION':>9}  WHAT")
    for m in runs:
        dur = f"{m.duration_seconds:.2f}s" if m.duration_seconds is not None else "-"
        click.echo(f"{m.run_id:<42} {m.status.value:<11} {(m.reason or '-'):<13} {dur:>9}  {_what(m)}")


@runs_group.command("show", help="Show one run's metadata and nodes.")
@click.argument("run_id")
@_run_root_opt
@_json_opt
def runs_show(run_id: str, run_root: Path | None, as_json: bool) -> None:
    from dad_sandbox.run import TRACE_FILE, find_run, iter_jsonl, read_metadata

    run_dir = find_run(_run_root(run_root), run_id)
    md = read_metadata(run_dir)
    if as_json:
        click.echo(md.model_dump_json(indent=2))
        return
    rows = [("run", md.run_id), ("status", md.status.value + (f" ({md.reason})" if md.reason else "")),
            ("what", _what(md)), ("created", md.created_at),
            ("duration", f"{md.duration_seconds}s" if md.duration_seconds is not None else "-"),
            ("exit code", md.exit_code if md.exit_code is not None else "-"), ("execution", md.execution or "-"),
            ("policy", f"{md.policy_name or '-'}" + (f" ({md.policy_hash[:12]})" if md.policy_hash else "")),
            ("image", f"{md.image or '-'}" + (f" {md.image_id[:19]}" if md.image_id else "")), ("run dir", run_dir)]
    if md.rerun:
        rows.append(("re-run of", f"{md.rerun.previous_run_id} from {md.rerun.start_hierarchy_path}"))
    if md.replay_of:
        rows.append(("replay of", md.replay_of))
    if md.outcome_branch:
        rows.append(("outcome", f"{md.outcome_branch} {(md.outcome_commit or '')[:12]}"))
    if md.resources:
        rows.append(("resources", ", ".join(f"{k}={v}" for k, v in md.resources.items())))
    if md.output:
        rows.append(("output", f"{md.output.bytes_kept} bytes kept, {md.output.bytes_dropped} dropped"
                               + (" (truncated)" if md.output.truncated else "")))
    for key, value in rows:
        click.echo(_shown(f"{key:<10} {value}"))
    nodes = [s for _, s in iter_jsonl(run_dir, TRACE_FILE) if "dad.node.status" in s["attributes"]]
    for span in nodes:
        a = span["attributes"]
        duration = a.get("dad.duration_seconds")
        duration = f"{duration:.3f}s" if isinstance(duration, int | float) else "?"
        click.echo(_shown(f"  node {a.get('dad.hierarchy_path', '?')!s:<34} {a.get('dad.node.status', '?')!s:<10} {duration}"))
    if md.error:
        click.echo(_shown("error:\n  " + "\n  ".join(md.error.strip().splitlines()[-25:])))


def _format_log(rec: dict[str, Any]) -> str:
    if rec.get("source") == "runner":
        fields = " ".join(f"{k}={v}" for k, v in (rec.get("fields") or {}).items())
        return f"[{rec.get('level', 'info')}] {rec.get('event')} {fields}".rstrip()
    if rec.get("source") == "container":
        return str(rec.get("message", ""))
    return f"[{rec.get('source')}] {rec.get('message', '')}"


@runs_group.command("logs", help="Print a run's logs (container output and runner records).")
@click.argument("run_id")
@_run_root_opt
@_json_opt
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the run is final.")
def runs_logs(run_id: str, run_root: Path | None, as_json: bool, follow: bool) -> None:
    from dad_sandbox.run import LOGS_FILE, find_run, iter_jsonl, read_metadata

    run_dir = find_run(_run_root(run_root), run_id)
    offset = 0
    while True:
        for position, rec in iter_jsonl(run_dir, LOGS_FILE, start=offset):
            offset = position  # where a follower resumes
            click.echo(json.dumps(rec) if as_json else _shown(_format_log(rec)))
        if not follow or read_metadata(run_dir).status.is_terminal:
            break
        time.sleep(0.3)
    if follow:  # whatever was written between the last read and the final status
        for _, rec in iter_jsonl(run_dir, LOGS_FILE, start=offset):
            click.echo(json.dumps(rec) if as_json else _shown(_format_log(rec)))


@runs_group.command("trace", help="Show a run's spans as a tree with durations.")
@click.argument("run_id")
@_run_root_opt
@_json_opt
def runs_trace(run_id: str, run_root: Path | None, as_json: bool) -> None:
    from dad_sandbox.run import TRACE_FILE, find_run, iter_jsonl

    spans = [s for _, s in iter_jsonl(find_run(_run_root(run_root), run_id), TRACE_FILE)]
    if as_json:
        _echo_json(spans)
        return
    children: dict[str | None, list[dict[str, Any]]] = {}
    ids = {s["span_id"] for s in spans}
    for s in sorted(spans, key=lambda s: s["start_time_unix_nano"]):
        parent = s["parent_span_id"] if s["parent_span_id"] in ids and s["parent_span_id"] != s["span_id"] else None
        children.setdefault(parent, []).append(s)
    if not spans:
        click.echo("no spans recorded")
    # Depth-first without recursion; each span id is shown once, so a parent cycle cannot loop.
    shown: set[str] = set()
    stack = [(root, 0) for root in reversed(children.get(None, []))]
    while stack:
        span, depth = stack.pop()
        if span["span_id"] in shown:
            continue
        shown.add(span["span_id"])
        attrs = span["attributes"]
        dur = ((span["end_time_unix_nano"] or 0) - span["start_time_unix_nano"]) / 1e9
        code = span["status"]["code"].removeprefix("STATUS_CODE_")
        mark = {"OK": "ok", "ERROR": "ERROR", "UNSET": ""}.get(code, code)
        loaded = " (loaded from previous run)" if attrs.get("dad.rerun.loaded_from") else ""
        kind = attrs.get("dad.element.type", "")
        click.echo(_shown(f"{'  ' * min(depth, 40)}{span['name']}  {dur * 1000:.1f} ms  {kind}  {mark}{loaded}".rstrip()))
        stack.extend((child, depth + 1) for child in reversed(children.get(span["span_id"], [])))


@runs_group.command("diff", help="What changed between two runs' outcomes (the outcome repository).")
@click.argument("run_a")
@click.argument("run_b")
@_run_root_opt
@_json_opt
@click.option("--stat", "stat_only", is_flag=True, help="Only the list of changed files.")
def runs_diff(run_a: str, run_b: str, run_root: Path | None, as_json: bool, stat_only: bool) -> None:
    from dad_sandbox.run import find_run, read_metadata
    from dad_sandbox.run._layout import RunLayout
    from dad_sandbox.run._outcome import OutcomeRepository

    root = _run_root(run_root)
    md = read_metadata(find_run(root, run_a))
    find_run(root, run_b)
    repo = OutcomeRepository(RunLayout(root, run_a, Path(md.project_root).name).outcome_repo_dir)
    if as_json:
        _echo_json(repo.changed_files(run_a, run_b))
    else:
        click.echo(_shown(repo.diff(run_a, run_b, stat_only=stat_only) or "no differences"))


@runs_group.command("export-otlp", help="Send a run's spans to an OTLP/HTTP collector (POST <endpoint>/v1/traces).")
@click.argument("run_id")
@click.option("--endpoint", required=True, metavar="URL", help="e.g. http://127.0.0.1:4318")
@_run_root_opt
@_json_opt
def runs_export_otlp(run_id: str, endpoint: str, run_root: Path | None, as_json: bool) -> None:
    from urllib.parse import urlsplit

    from dad_sandbox.run import find_run
    from dad_sandbox.run._otlp import export_otlp

    url = urlsplit(endpoint)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise SandboxError(f"--endpoint {endpoint!r} is not an http(s) URL; give the collector's base URL, "
                           "e.g. http://127.0.0.1:4318", kind="invalid_argument")
    run_dir = find_run(_run_root(run_root), run_id)
    count = export_otlp(run_dir, run_id, endpoint)
    if as_json:
        _echo_json({"run_id": run_id, "endpoint": endpoint, "spans": count})
    else:
        click.echo(f"sent {count} spans of {run_id} to {endpoint}")


# ---------------------------------------------------------------------------- maintenance


@main.command("gc", help="Find containers whose supervisor is gone; finalize their runs and remove them.")
@click.option("--dry-run", is_flag=True, help="Only list what would be cleaned.")
@_json_opt
def gc_cmd(dry_run: bool, as_json: bool) -> None:
    from dad_sandbox import _signals
    from dad_sandbox.sandbox import Supervisor

    async def gc() -> list[Any]:
        async with Supervisor(recover_on_start=False) as sup:
            return await sup.gc(dry_run=dry_run, everywhere=True)

    found = _signals.run(gc())
    if as_json:
        _echo_json([dataclasses.asdict(o) for o in found])
        return
    if not found:
        click.echo("no dad-sandbox containers on this engine")
    for o in found:
        status = f" -> {o.status}" if o.status else ""
        click.echo(f"{o.container_id[:12]}  {o.run_id:<40} {o.state:<8} {o.action.value}{status}"
                   + (f"  ({o.detail})" if o.detail else ""))


@main.command("doctor", help="Check the engine, runtimes, images, disk and policies; say how to fix what is wrong.")
@_run_root_opt
@_json_opt
def doctor_cmd(run_root: Path | None, as_json: bool) -> None:
    from dad_sandbox._doctor import run_checks

    checks = run_checks(_run_root(run_root))
    if as_json:
        _echo_json([dataclasses.asdict(c) for c in checks])
    else:
        for c in checks:
            mark = click.style("ok  ", fg="green") if c.ok else click.style("FAIL", fg="red", bold=True)
            click.echo(f"{mark} {c.name:<14} {c.detail}")
            if not c.ok and c.fix:
                click.echo(f"     {'':<14} fix: {c.fix}")
    sys.exit(0 if all(c.ok for c in checks) else 1)


@main.group("policy", help="Show, validate and describe policies.")
def policy_group() -> None:
    pass


@policy_group.command("show", help="Show the effective settings of a policy (name or file).")
@click.argument("policy", default="untrusted")
@_json_opt
def policy_show(policy: str, as_json: bool) -> None:
    from dad_sandbox.sandbox import load_policy

    p = load_policy(policy)
    if as_json:
        click.echo(p.model_dump_json(indent=2))
        return
    for key, value in p.model_dump().items():
        click.echo(f"{key:<18} {value}")
    click.echo(f"{'image (resolved)':<18} {p.image_ref}")
    click.echo(f"{'hash':<18} {p.hash}")


@policy_group.command("validate", help="Validate policy files; exit 7 with the file, key and allowed values if not.")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_json_opt
def policy_validate(paths: tuple[Path, ...], as_json: bool) -> None:
    from dad_sandbox.sandbox._policy import load_policy_file

    checked = []
    for path in paths:
        policy = load_policy_file(path)
        checked.append({"path": str(path), "ok": True, "name": policy.name, "hash": policy.hash})
        if not as_json:
            click.echo(f"ok  {path}")
    if as_json:
        _echo_json(checked)


@policy_group.command("schema", help="Print the JSON Schema of policy files (for editors).")
@_json_opt
def policy_schema(as_json: bool) -> None:
    from dad_sandbox.sandbox import Policy

    _echo_json(Policy.model_json_schema())


@runs_group.command("schema", help="Print the JSON Schema of .trace/dad_metadata.json (a closed, versioned contract).")
@_json_opt
def runs_schema(as_json: bool) -> None:
    from dad_sandbox.run._metadata import metadata_schema

    _echo_json(metadata_schema())


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


# ---------------------------------------------------------------------------- sessions

from dad_sandbox._session_cli import session_group  # noqa: E402  (stdlib + click only: no import cost)

main.add_command(session_group)


if __name__ == "__main__":
    main()
