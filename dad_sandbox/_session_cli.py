"""``dad-sandbox session start|exec|cp|stop|ls``: sessions for shell users.

Why a background process: a session must outlive one command. ``start`` launches
``sandbox/_session_server.py`` detached (new process session, stdin/stdout on /dev/null, stderr to a
log file in the private session dir), waits on a pipe until it reports the session's id (its run
id) or why it could not start, prints that and exits. The other commands are thin stdlib clients
of its unix socket (``_session_client``). Every failure is one line with the README's exit codes;
an unknown session id is exit 7 (``kind: unknown_session``).
"""

from __future__ import annotations

import base64
import codecs
import json
import os
import re
import secrets
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import click

from dad_sandbox._cli_errors import STATUS_EXITS, SandboxError, UsageFailure

#: How long ``start`` waits for the session to be ready (the session's own start timeout, plus margin).
START_WAIT = 150.0
_REMOTE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*):(.*)$")
_json_opt = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


def _ask(session_id: str, req: dict[str, Any], *, timeout: float | None = None) -> list[dict[str, Any]]:
    """All answers to one request, or the one-line error it came back with (exit 7)."""
    return list(_answers(session_id, req, timeout=timeout))


def _answers(session_id: str, req: dict[str, Any], *, timeout: float | None = None) -> Any:
    from dad_sandbox._session_client import SessionUnreachable, UnsafeSessionDir, request

    try:
        for answer in request(session_id, req, timeout=timeout):
            if "error" in answer:
                raise SandboxError(answer["error"], kind=answer.get("kind") or "sandbox_error", session_id=session_id)
            yield answer
    except SessionUnreachable as exc:
        raise SandboxError(f"{exc}; see 'dad-sandbox session ls'", kind="unknown_session",
                           session_id=session_id) from exc
    except UnsafeSessionDir as exc:
        raise SandboxError(str(exc), kind="unsafe_session_dir") from exc


@click.group("session", help="Long-lived sandboxes for shell users: start one, exec in it, copy files, stop it.")
def session_group() -> None:
    pass


@session_group.command("start", help="Start a session in the background; print its id once it is ready.")
@click.option("--policy", default="untrusted", show_default=True, metavar="NAME|PATH", help="Policy name or TOML file.")
@click.option("--timeout", metavar="DURATION", help="The session's deadline, e.g. 30m [default: the policy's].")
@click.option("--run-root", type=click.Path(file_okay=False, path_type=Path), help="Where run dirs are [default: ./runs].")
@_json_opt
def start_cmd(policy: str, timeout: str | None, run_root: Path | None, as_json: bool) -> None:
    from dad_sandbox._session_client import session_dir
    from dad_sandbox.sandbox._resident_server import _private_dir

    directory = session_dir()
    _private_dir(directory)
    log_file = directory / f"starting-{secrets.token_hex(6)}.log"
    policy_ref = str(Path(policy).resolve()) if ("/" in policy or policy.endswith(".toml")) else policy
    argv = [sys.executable, "-m", "dad_sandbox.sandbox._session_server", "--policy", policy_ref,
            "--project-root", str(Path.cwd()), "--run-root", str((run_root or Path("runs")).resolve()),
            "--log-file", str(log_file)]
    if timeout is not None:
        argv += ["--timeout", timeout]
    read_end, write_end = os.pipe()
    log_fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        subprocess.Popen([*argv, "--ready-fd", str(write_end)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=log_fd, pass_fds=(write_end,), start_new_session=True, close_fds=True)
    finally:
        os.close(write_end)
        os.close(log_fd)
    report = _read_report(read_end, log_file)
    if "error" in report:
        raise SandboxError(report["error"], kind=report.get("kind") or "sandbox_error")
    report["log"] = str(directory / f"{report['session_id']}.log")
    if as_json:
        click.echo(json.dumps(report))
    else:
        click.echo(report["session_id"])


def _read_report(fd: int, log_file: Path) -> dict[str, Any]:
    """The server's one JSON line on the ready pipe; EOF without it means it died (see its log)."""
    data = b""
    end = time.monotonic() + START_WAIT
    try:
        while b"\n" not in data:
            left = end - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise SandboxError(f"the session was not ready after {START_WAIT:g}s; see {log_file}")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise SandboxError(f"the session server exited before the session was ready; see {log_file}")
            data += chunk
    finally:
        os.close(fd)
    answer: dict[str, Any] = json.loads(data.splitlines()[0])
    return answer


@session_group.command("exec", help="Run ARGV in session SESSION_ID; print its output and exit with its exit code.")
@click.argument("session_id")
@click.argument("argv", nargs=-1, required=True)
@click.option("--timeout", type=float, metavar="SECONDS", help="Kill the command (and its children) after this long.")
@click.option("--cwd", metavar="DIR", help="Working dir, relative to the session's run dir.")
@click.option("--env", "env_items", multiple=True, metavar="NAME=VALUE", help="Set a variable (repeatable).")
@_json_opt
def exec_cmd(session_id: str, argv: tuple[str, ...], timeout: float | None, cwd: str | None,
             env_items: tuple[str, ...], as_json: bool) -> None:
    from dad_sandbox._terminal import printable

    env: dict[str, str] = {}
    for item in env_items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageFailure(f"--env {item!r}: use NAME=VALUE")
        env[name] = value
    req = {"op": "exec", "argv": list(argv), "timeout": timeout, "cwd": cwd, "env": env}
    kept: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
    decoders = {name: codecs.getincrementaldecoder("utf-8")(errors="replace") for name in kept}
    end: dict[str, Any] = {}
    for answer in _answers(session_id, req):
        if "stream" in answer:
            name = "stderr" if answer["stream"] == "stderr" else "stdout"
            data = base64.b64decode(answer["data"])
            if as_json:
                kept[name].append(data)
            else:
                out = sys.stderr if name == "stderr" else sys.stdout
                text = decoders[name].decode(data)
                out.write(printable(text) if out.isatty() else text)
                out.flush()
        else:
            end = answer
    if "exit_code" not in end:
        raise SandboxError(f"session {session_id} ended the exec without an exit code (did the session end?)")
    code = int(end["exit_code"])
    if as_json:
        click.echo(json.dumps({"session_id": session_id, "exit_code": code, "timed_out": end.get("timed_out", False),
                               "truncated": end.get("truncated", False),
                               "stdout": b"".join(kept["stdout"]).decode("utf-8", "replace"),
                               "stderr": b"".join(kept["stderr"]).decode("utf-8", "replace")}))
    sys.exit(code if 0 <= code <= 255 else 1)


def _side(arg: str) -> tuple[str | None, str]:
    match = _REMOTE.match(arg)
    return (match.group(1), match.group(2)) if match else (None, arg)


@session_group.command("cp", help="Copy a file into or out of a session: 'cp FILE ID:PATH' or 'cp ID:PATH FILE'. "
                                  "Session paths are relative to its run dir; the session's file size limits apply.")
@click.argument("src")
@click.argument("dst")
@_json_opt
def cp_cmd(src: str, dst: str, as_json: bool) -> None:
    (src_id, src_path), (dst_id, dst_path) = _side(src), _side(dst)
    if (src_id is None) == (dst_id is None) or not (src_path and dst_path):
        raise UsageFailure("give exactly one side as SESSION_ID:PATH, e.g. 'cp main.py ID:main.py' "
                           "(a host path with ':' can be written ./a:b)")
    if dst_id is not None:
        data = _read_host(Path(src_path))
        _ask(dst_id, {"op": "write", "path": dst_path, "data": base64.b64encode(data).decode()})
        what = {"session_id": dst_id, "direction": "in", "path": dst_path, "bytes": len(data)}
    else:
        assert src_id is not None
        answer = _ask(src_id, {"op": "read", "path": src_path})[0]
        data = base64.b64decode(answer["data"])
        target = Path(dst_path)
        if target.is_dir():
            target = target / Path(src_path).name
        target.write_bytes(data)
        what = {"session_id": src_id, "direction": "out", "path": str(target), "bytes": len(data)}
    if as_json:
        click.echo(json.dumps(what))


def _read_host(path: Path) -> bytes:
    from dad_sandbox.sandbox._session import SessionLimits

    limit = SessionLimits().write_file
    if not path.is_file():
        raise SandboxError(f"{path} is not a file on this host", kind="not_found")
    with path.open("rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise SandboxError(f"refused to copy {path}: over the session's limit of {limit} bytes", kind="limit")
    return data


@session_group.command("stop", help="End a session: its run ends completed and its container is removed.")
@click.argument("session_id")
@_json_opt
def stop_cmd(session_id: str, as_json: bool) -> None:
    answer = _ask(session_id, {"op": "stop"})[-1]
    status = answer.get("status") or "unknown"
    if as_json:
        click.echo(json.dumps(answer))
    else:
        click.echo(f"session {session_id} {status}")
    _exit_for(status)


def _exit_for(status: str) -> NoReturn:
    sys.exit(STATUS_EXITS[status].exit_code if status in STATUS_EXITS else 0)


@session_group.command("ls", help="List the running sessions of this user.")
@_json_opt
def ls_cmd(as_json: bool) -> None:
    from dad_sandbox._session_client import session_ids

    rows = []
    for sid in session_ids():
        try:
            rows.append(_ask(sid, {"op": "info"}, timeout=10)[0])
        except SandboxError:
            continue  # ended between the listing and the question
    if as_json:
        click.echo(json.dumps(rows))
        return
    for row in rows:
        click.echo(f"{row['session_id']:<40} {row['policy']:<12} {row['seconds_left']:>8.0f}s left  {row['run_dir']}")
