"""Copy mode against a hostile or stalled engine answering the archive API (a fake engine speaking HTTP).

The behaviour under test is ours, not Docker's: what the host does when the engine's archive stream
stops making progress. A real dockerd never drips, so the engine here is a small HTTP server on a
unix socket that answers ``/version`` and then sends the head of an archive and one byte at a time.
"""

from __future__ import annotations

import asyncio
import io
import os
import socketserver
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dad_sandbox.errors import EngineError
from dad_sandbox.sandbox import _remote_rundir
from dad_sandbox.sandbox._policy import load_policy
from dad_sandbox.sandbox._remote_rundir import RemoteRunDir
from dad_sandbox.sandbox.engine._docker import DockerEngine

RUN_ID = "run_drip"


def _head() -> bytes:
    """A tar header announcing a 10 MiB file in the run's folder (its data never comes)."""
    info = tarfile.TarInfo(f"{RUN_ID}/big")
    info.size = 10 << 20
    return info.tobuf(format=tarfile.USTAR_FORMAT)


class _Handler(socketserver.StreamRequestHandler):
    stop: threading.Event

    def handle(self) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            data = self.connection.recv(4096)
            if not data:
                return
            request += data
        line = request.split(b"\r\n", 1)[0]
        if line.startswith(b"PUT"):
            self.stop.wait()  # takes the request, never reads the body, never answers
            return
        if b"/archive" not in line:
            body = b'{"ApiVersion": "1.41", "Version": "20.10.0", "MinAPIVersion": "1.12"}'
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            return
        # an archive that claims a gigabyte and drips: every read makes progress, none fills a chunk
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-tar\r\n"
                         b"Content-Length: 1073741824\r\n\r\n" + _head())
        self.wfile.flush()
        try:
            while not self.stop.wait(0.05):
                self.connection.sendall(b"x")
        except OSError:
            return  # the host hung up: what a bounded reader does


@pytest.fixture
def dripping_engine() -> Iterator[str]:
    folder = tempfile.mkdtemp(prefix="dad-drip-", dir="/tmp")  # short: a unix socket path is < 108 bytes
    path = os.path.join(folder, "engine.sock")
    stop = threading.Event()
    handler = type("Handler", (_Handler,), {"stop": stop})
    server = socketserver.ThreadingUnixStreamServer(path, handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"unix://{path}"
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        os.unlink(path)
        os.rmdir(folder)


def test_copy_out_ends_at_its_budget_when_the_engine_drips(
    dripping_engine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream that never fills a chunk must not hold finalization past the copy-out budget.

    The budget used to be checked only between chunks, and the SDK takes the socket's timeout away
    for a stream: an engine that sends a byte now and then (or nothing at all after the headers)
    kept the copy-out, the run's finalization and a worker thread forever.
    """
    monkeypatch.setattr(_remote_rundir, "COPY_OUT_BUDGET_SECONDS", 1.0)
    monkeypatch.setattr(_remote_rundir, "_CUT_GRACE_SECONDS", 0.5)
    run_dir = tmp_path / RUN_ID
    run_dir.mkdir()
    plan = RemoteRunDir(DockerEngine(base_url=dripping_engine, call_timeout=5.0), RUN_ID, run_dir)

    async def main() -> object:
        # the outer bound only keeps a regression from hanging the suite; the assertion is the status
        return await asyncio.wait_for(plan.copy_out("c0ffee", load_policy("untrusted")), 20)

    t0 = time.monotonic()
    done = asyncio.run(main())
    assert done.limit == "budget", done  # type: ignore[attr-defined]
    assert time.monotonic() - t0 < 30
    assert not (run_dir / "big").exists() or (run_dir / "big").stat().st_size < 1 << 20


def test_copy_in_fails_when_the_engine_stops_answering(dripping_engine: str) -> None:
    """An engine that takes an archive and never answers fails the copy-in instead of hanging it.

    ``put_archive`` used a client without any read timeout (a big archive takes a while to
    unpack): a stalled engine kept the run in ``preparing`` and a worker thread forever.
    """
    engine = DockerEngine(base_url=dripping_engine, call_timeout=2.0)

    async def main() -> None:
        # the outer bound only keeps a regression from hanging the suite
        await asyncio.wait_for(engine.put_archive("c0ffee", "/dad/load/run", io.BytesIO(bytes(10240))), 20)

    with pytest.raises(EngineError):
        asyncio.run(main())
