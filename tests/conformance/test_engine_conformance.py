"""The Engine contract, checked on FakeEngine and on Docker alike (see conftest.py)."""

from __future__ import annotations

import asyncio
import json

import pytest

from dad_sandbox.errors import ContainerGone, ImageNotFound
from dad_sandbox.sandbox._pool import WAITER
from dad_sandbox.sandbox.engine import Engine, ExecSpec, OutputCallback
from tests.conformance.conftest import LABEL, SESSION, Case

GONE = "0" * 64  # a container id no engine has


def _collect() -> tuple[list[tuple[str, bytes]], OutputCallback]:
    got: list[tuple[str, bytes]] = []
    return got, lambda stream, data: got.append((stream, data))


def _text(got: list[tuple[str, bytes]], stream: str) -> str:
    return b"".join(d for s, d in got if s == stream).decode()


def test_info_names_the_engine(case: Case) -> None:
    """info() gives at least the engine's name, version, API version and kernel."""
    async def body(engine: Engine) -> None:
        info = await engine.info()
        assert {"engine", "version", "api_version", "kernel"} <= set(info)
        assert info["engine"] == engine.name
    case.run(body)


def test_missing_image(case: Case) -> None:
    """An image the engine lacks is ImageNotFound, for image_id and for create (nothing is pulled)."""
    async def body(engine: Engine) -> None:
        assert (await engine.image_id(case.image)).startswith("sha256:")
        with pytest.raises(ImageNotFound):
            await engine.image_id("dad-sandbox-no-such-image:0")
        spec = case.spec(("exit", "0"))
        with pytest.raises(ImageNotFound):
            await engine.create(type(spec)(**{**{f: getattr(spec, f) for f in spec.__dataclass_fields__},
                                              "image": "dad-sandbox-no-such-image:0"}))
    case.run(body)


def test_lifecycle_and_state(case: Case) -> None:
    """created -> running -> exited, with the exit code, times, labels and image id in inspect()."""
    async def body(engine: Engine) -> None:
        cid = await engine.create(case.spec(("sleep", "1"), ("exit", "3"), labels={"x.y": "z"}))
        created = await engine.inspect(cid)
        assert (created.status, created.running, created.started_at, created.finished_at) == ("created", False, None, None)
        assert created.labels[LABEL] == SESSION and created.labels["x.y"] == "z"
        await engine.start(cid)
        running = await engine.inspect(cid)
        assert running.status == "running" and running.running and running.started_at is not None
        assert await engine.wait(cid, timeout=60) == 3
        done = await engine.inspect(cid)
        assert (done.status, done.running, done.exit_code, done.oom_killed) == ("exited", False, 3, False)
        assert done.finished_at is not None and done.started_at is not None and done.finished_at >= done.started_at
        assert done.image_id == await engine.image_id(case.image)
    case.run(body)


def test_wait_times_out_on_a_running_container(case: Case) -> None:
    """wait() returns None when the timeout passes first, and kill() then ends the container with 137."""
    async def body(engine: Engine) -> None:
        cid = await engine.create(case.spec(("sleep", "30")))
        await engine.start(cid)
        assert await engine.wait(cid, timeout=0.5) is None
        await engine.kill(cid)
        assert await engine.wait(cid, timeout=30) == 137
        await engine.kill(cid)  # already stopped: no error
        assert await engine.stats(cid) is None
    case.run(body)


def test_gone_container(case: Case) -> None:
    """A removed or unknown container is ContainerGone for every call but remove(), which is idempotent."""
    async def body(engine: Engine) -> None:
        cid = await engine.create(case.spec(("exit", "0")))
        await engine.remove(cid)
        await engine.remove(cid)
        for target in (cid, GONE):
            for call in (engine.inspect(target), engine.start(target), engine.wait(target, 1), engine.kill(target)):
                with pytest.raises(ContainerGone):
                    await call
        assert await engine.stats(GONE) is None
    case.run(body)


def test_output_streams_apart(case: Case) -> None:
    """stream_output() attached before start sees stdout and stderr apart, and ends when the container exits."""
    async def body(engine: Engine) -> None:
        cid = await engine.create(case.spec(("print", "out", "line"), ("eprint", "err", "line"), ("exit", "0")))
        got, sink = _collect()
        attached = asyncio.Event()
        loop = asyncio.get_running_loop()
        pump = asyncio.create_task(engine.stream_output(cid, sink, on_attached=lambda: loop.call_soon_threadsafe(attached.set)))
        await asyncio.wait_for(attached.wait(), 30)
        await engine.start(cid)
        assert await engine.wait(cid, timeout=60) == 0
        await asyncio.wait_for(pump, 30)
        assert _text(got, "stdout") == "out line\n" and _text(got, "stderr") == "err line\n"
    case.run(body)


def test_signal_and_oom_endings(case: Case) -> None:
    """A process killed by a signal exits 128+N; one over its memory limit is OOMKilled with 137."""
    async def body(engine: Engine) -> None:
        cid = await engine.create(case.spec(("signal", "SIGSEGV")))
        await engine.start(cid)
        assert await engine.wait(cid, timeout=60) == 139
        cid = await engine.create(case.spec(("oom",), memory=64 << 20))
        await engine.start(cid)
        assert await engine.wait(cid, timeout=60) == 137
        state = await engine.inspect(cid)
        assert state.oom_killed and state.exit_code == 137
    case.run(body)


def test_list_by_label(case: Case) -> None:
    """list_by_label() finds containers by label, and by label and value, running or not."""
    async def body(engine: Engine) -> None:
        a = await engine.create(case.spec(("exit", "0"), labels={"dad.conformance.k": "a"}))
        b = await engine.create(case.spec(("exit", "0"), labels={"dad.conformance.k": "b"}))
        assert {c.id for c in await engine.list_by_label(LABEL, SESSION)} == {a, b}
        assert [c.id for c in await engine.list_by_label("dad.conformance.k", "b")] == [b]
    case.run(body)


def _waiter_spec(case: Case):  # a warm-pool container: the waiter reads one request line on stdin
    if case.kind == "fake":
        return case.spec(stdin_open=True)
    return type(case.spec())(**{**{f: getattr(case.spec(), f) for f in case.spec().__dataclass_fields__},
                                "command": ("python3", "-c", WAITER), "stdin_open": True})


def test_stdin_is_written_once(case: Case) -> None:
    """open_stdin() + write_stdin() hand a request to the waiter, which runs it; a handle is spent after one write."""
    async def body(engine: Engine) -> None:
        cid = await engine.create(_waiter_spec(case))
        got, sink = _collect()
        pump = asyncio.create_task(engine.stream_output(cid, sink))
        await engine.start(cid)
        handle = await engine.open_stdin(cid)
        assert handle.container_id == cid and not handle.closed
        await engine.write_stdin(handle, (json.dumps({"argv": list(case.prog.argv(("print", "hi"), ("exit", "4")))}) + "\n").encode())
        assert handle.closed
        with pytest.raises(ValueError):
            await engine.write_stdin(handle, b"again\n")
        assert await engine.wait(cid, timeout=60) == 4
        await asyncio.wait_for(pump, 30)
        assert _text(got, "stdout") == "hi\n"
    case.run(body)


def test_closing_stdin_unwritten_gives_eof(case: Case) -> None:
    """close_stdin() without a write: the waiter reads EOF and exits 0; closing twice is no error."""
    async def body(engine: Engine) -> None:
        cid = await engine.create(_waiter_spec(case))
        await engine.start(cid)
        handle = await engine.open_stdin(cid)
        await engine.close_stdin(handle)
        await engine.close_stdin(handle)
        assert await engine.wait(cid, timeout=60) == 0
    case.run(body)


def test_exec_stream(case: Case) -> None:
    """exec_stream() runs a process in a running container: its output apart, its exit code, its stdin;
    a container that is not running is ContainerGone."""
    async def body(engine: Engine) -> None:
        cid = await engine.create(case.spec(("sleep", "30")))
        await engine.start(cid)
        stats = await engine.stats(cid)
        assert stats is not None and {"memory_bytes", "pids"} <= set(stats)
        got, sink = _collect()
        ended = await engine.exec_stream(cid, ExecSpec(case.prog.argv(("print", "a"), ("eprint", "b"), ("exit", "5"))), sink)
        assert ended.exit_code == 5 and _text(got, "stdout") == "a\n" and _text(got, "stderr") == "b\n"
        got, sink = _collect()
        ended = await engine.exec_stream(cid, ExecSpec(case.prog.argv(("cat",)), stdin=b"piped\n"), sink)
        assert ended.exit_code == 0 and _text(got, "stdout") == "piped\n"
        await engine.kill(cid)
        await engine.wait(cid, timeout=30)
        with pytest.raises(ContainerGone):
            await engine.exec_stream(cid, ExecSpec(case.prog.argv(("exit", "0"))), sink)
    case.run(body)
