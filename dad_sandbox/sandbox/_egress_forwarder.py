"""In-container forwarder: ``python3 -m dad_sandbox.sandbox._egress_forwarder PORT SOCKET -- ARGV...``.

The run's container has only ``lo``; its one way out is the host's egress proxy, reached through a
unix socket mounted into the container. Tools expect an HTTP proxy at a TCP address, so this
listens on ``127.0.0.1:PORT`` and copies each connection to the socket, byte for byte: it decides
nothing (the host proxy does), so there is nothing here a hostile run could talk its way past.

Why fork and exec: the listening socket is bound BEFORE the run's command starts (its first request
cannot race the forwarder), and the run's command replaces this process, so its exit code and
signals are the container's as without the forwarder. The forwarder child dies with the container.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys

CHUNK = 64 << 10


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(CHUNK):
            dst.write(data)
            await dst.drain()
        if dst.can_write_eof():
            dst.write_eof()
    except (OSError, RuntimeError):
        dst.close()


async def _serve(listener: socket.socket, socket_path: str) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(socket_path, limit=CHUNK)
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()
            writer.close()

    server = await asyncio.start_server(handle, sock=listener, limit=CHUNK)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> None:
    if len(argv) < 4 or argv[2] != "--" or not argv[0].isdigit():
        print("usage: python3 -m dad_sandbox.sandbox._egress_forwarder PORT SOCKET -- ARGV...", file=sys.stderr)
        raise SystemExit(2)
    port, socket_path, command = int(argv[0]), argv[1], argv[3:]
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)
    # Double fork: the forwarder is re-parented to the container's init, so it is never a child
    # the run's command could wait for; its stdio is closed so it never holds the run's output open.
    child = os.fork()
    if child == 0:
        try:
            if os.fork() == 0:
                devnull = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(devnull, fd)
                asyncio.run(_serve(listener, socket_path))
        finally:
            os._exit(0)
    os.waitpid(child, 0)
    listener.close()
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        print(f"dad-sandbox: cannot run {command[0]!r}: {exc}", file=sys.stderr)
        raise SystemExit(127) from None


if __name__ == "__main__":
    main(sys.argv[1:])
