"""Session logic on the in-memory FakeEngine: lifecycle, limits, spans, refusals; no Docker."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from dad_sandbox import Session, SessionLimits, load_policy
from dad_sandbox.errors import SessionError, SessionLimitError
from dad_sandbox.run import RunStatus, read_metadata
from dad_sandbox.testing import FakeEngine

POLICY = load_policy("untrusted").with_overrides(metrics_interval=0.05)


def session(tmp_path: Path, engine: FakeEngine, **kw) -> Session:
    (tmp_path / "project").mkdir(exist_ok=True)
    return Session(policy=kw.pop("policy", POLICY), project_root=tmp_path / "project", run_root=tmp_path / "runs",
                   engine=engine, **kw)


def spans(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / ".trace" / "trace.jsonl").read_text().splitlines()]


def test_execs_share_one_container_and_end_completed(tmp_path: Path) -> None:
    """Several execs run in the one session container; a normal exit ends the run completed and removes it."""
    engine = FakeEngine()

    async def go():
        async with session(tmp_path, engine) as s:
            first = await s.exec(["print", "hello"])
            second = await s.exec(["eprint", "oops", ";", "exit", "3"])
            return s, first, second

    s, first, second = asyncio.run(go())
    assert (first.exit_code, first.stdout, first.ok) == (0, "hello\n", True)
    assert (second.exit_code, second.stderr, second.ok) == (3, "oops\n", False)
    assert engine.calls.count("create") == 1 and engine.containers == {}
    md = read_metadata(s.run_dir)
    assert md.status == RunStatus.COMPLETED and md.run_id.startswith("session_run_")
    recorded = [sp for sp in spans(s.run_dir) if sp["name"] == "session.exec"]
    assert [sp["attributes"]["dad.exec.exit_code"] for sp in recorded] == [0, 3]
    assert recorded[0]["attributes"]["dad.exec.stdout_bytes"] == 6
    assert recorded[1]["status"]["code"] == "STATUS_CODE_ERROR"


def test_output_is_capped_and_flagged(tmp_path: Path) -> None:
    """Output past the per-exec limit is dropped and flagged; the span counts every byte seen."""
    engine = FakeEngine()

    async def go():
        async with session(tmp_path, engine, limits=SessionLimits(output=4)) as s:
            return s, await s.exec(["print", "0123456789"])

    s, result = asyncio.run(go())
    assert (result.stdout_bytes, result.stdout_truncated, result.stderr_truncated) == (b"0123", True, False)
    assert spans(s.run_dir)[0]["attributes"]["dad.exec.stdout_bytes"] == 11


def test_exec_timeout_wraps_the_command(tmp_path: Path) -> None:
    """A per-exec timeout runs the command under `timeout -k 1` and reports timed_out."""
    engine = FakeEngine()

    async def go():
        async with session(tmp_path, engine) as s:
            return await s.exec(["sleep", "5"], timeout=0.2)

    result = asyncio.run(go())
    assert result.timed_out and result.exit_code == 124
    assert engine.execs[0].argv[:3] == ("/usr/bin/timeout", "-k", "1")


def test_other_user_and_big_input_are_refused(tmp_path: Path) -> None:
    """exec as another user (root) and input over the write limit are refused with messages naming why."""
    engine = FakeEngine()

    async def go():
        async with session(tmp_path, engine, limits=SessionLimits(write_file=3)) as s:
            with pytest.raises(SessionError, match="no root"):
                await s.exec(["print", "x"], user="root")
            with pytest.raises(SessionLimitError, match="limit of 3 bytes") as err:
                await s.write_file("f.txt", "four")
            assert err.value.limit == 3 and err.value.size == 4

    asyncio.run(go())
    assert [e.argv for e in engine.execs] == [("/bin/sh", "-c", "kill -TERM 1")]  # only close's stop


def test_error_in_body_cancels_the_session(tmp_path: Path) -> None:
    """An exception inside `async with` kills the container and records the run as cancelled."""
    engine = FakeEngine()
    holder: list[Session] = []

    async def go():
        async with session(tmp_path, engine) as s:
            holder.append(s)
            raise RuntimeError("the agent broke")

    with pytest.raises(RuntimeError):
        asyncio.run(go())
    assert read_metadata(holder[0].run_dir).status == RunStatus.CANCELLED
    assert engine.containers == {}


def test_exec_after_deadline_says_the_session_ended(tmp_path: Path) -> None:
    """Once the session's deadline passed, exec raises SessionError naming the timed_out status."""
    engine = FakeEngine()

    async def go():
        async with session(tmp_path, engine, timeout=0.3) as s:
            await asyncio.sleep(0.6)
            with pytest.raises(SessionError, match="timed_out"):
                await s.exec(["print", "late"])
            return s

    s = asyncio.run(go())
    assert read_metadata(s.run_dir).status == RunStatus.TIMED_OUT


def test_stream_yields_chunks_then_exit(tmp_path: Path) -> None:
    """exec_stream yields each output chunk as it comes, then one exit event with the code."""
    engine = FakeEngine()

    async def go():
        async with session(tmp_path, engine) as s:
            return [e async for e in s.exec_stream(["print", "a", ";", "sleep", "0.05", ";", "eprint", "b", ";",
                                                     "exit", "2"])]

    events = asyncio.run(go())
    assert [(e.kind, e.data) for e in events[:-1]] == [("stdout", b"a\n"), ("stderr", b"b\n")]
    assert (events[-1].kind, events[-1].exit_code) == ("exit", 2)


def test_use_outside_the_block_is_refused(tmp_path: Path) -> None:
    """A session not entered, or already closed, refuses exec with a message saying how to use it."""
    engine = FakeEngine()

    async def go():
        s = session(tmp_path, engine)
        with pytest.raises(SessionError, match="unopened"):
            await s.exec(["print", "x"])
        async with s:
            pass
        with pytest.raises(SessionError, match="closed"):
            await s.exec(["print", "x"])

    asyncio.run(go())
