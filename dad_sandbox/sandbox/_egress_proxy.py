"""The host-side egress proxy of one run (policy ``network = "allowlist"``).

The run's container has no network interface but ``lo``. Its only way out is this proxy, which
listens on a unix socket in a host-owned folder bind-mounted (read-only) into that container alone;
inside, ``_egress_forwarder`` exposes it as ``127.0.0.1:<port>`` for ``HTTP(S)_PROXY``.

Why a proxy that speaks HTTP and decides on names: the run never resolves or connects anything
itself. It asks for ``CONNECT host:port`` (TLS) or ``GET http://host/...`` (plain HTTP); the proxy
checks the NAME against the policy (deny list first, then allow list; addresses are refused), and
only then does the host resolve it and connect. A resolved address that is not public (loopback,
private, link-local: the host's own services, a cloud metadata endpoint) is refused as well, so a
name that resolves inwards gains nothing. Tests replace resolution with a fixed map
(:func:`resolver_override`); with a map set, the proxy connects only to what the map names.

Every attempt becomes one record (host, port, allowed, reason, bytes each way, duration), written
by the host into the run's ``trace.jsonl`` as a span and summed into the metadata. Per-run limits
(connections, bytes both ways) come from the policy; past them the proxy refuses or cuts.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ipaddress
import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dad_sandbox._limits import EGRESS_CONNECT_TIMEOUT as CONNECT_TIMEOUT
from dad_sandbox._limits import EGRESS_HEAD_TIMEOUT as HEAD_TIMEOUT
from dad_sandbox._logging import get_logger
from dad_sandbox.run import _safe_fs
from dad_sandbox.run._layout import TRACE_DIR, TRACE_FILE
from dad_sandbox.sandbox._egress_rules import HostRule, first_match, is_ip_literal, normalize_host, parse_rule

log = get_logger(__name__)

#: Where the socket folder appears inside the container, and the port the forwarder listens on.
CONTAINER_DIR = "/dad/egress"
FORWARDER_PORT = 3128
#: A request head larger than this is not a proxy request.
MAX_HEAD_BYTES = 16 << 10
CHUNK = 64 << 10
#: Client connections open at once; past it new ones are closed at once, so a run cannot spend the
#: supervisor's file descriptors (shared with every other run) by holding sockets open.
MAX_OPEN = 64
#: Attempts per run (refused ones included); past it the proxy stops listening, so a run looping on
#: refused requests cannot keep the supervisor's event loop busy. Also: attempts logged one by one.
MAX_ATTEMPTS = 10_000
LOGGED_ATTEMPTS = 50
#: Records kept per run (the rest are only counted), so a connect loop cannot bloat the trace.
MAX_RECORDS = 5_000

_OVERRIDE: contextvars.ContextVar[Mapping[str, tuple[str, int]] | None] = contextvars.ContextVar(
    "dad_egress_resolver_override", default=None
)


@contextlib.contextmanager
def resolver_override(mapping: Mapping[str, tuple[str, int]]) -> Iterator[None]:
    """Map ``"host:port"`` to ``(address, port)`` for proxies started in this context (tests).

    With a map set, nothing is resolved by DNS: a name missing from the map is refused, so a test
    proxy can only ever connect where the test said.
    """
    token = _OVERRIDE.set(dict(mapping))
    try:
        yield
    finally:
        _OVERRIDE.reset(token)


@dataclass(slots=True)
class Attempt:
    """One connection attempt through the proxy, as recorded in the trace."""

    host: str
    port: int
    method: str
    allowed: bool
    reason: str
    start: float = field(default_factory=time.time)
    end: float | None = None
    bytes_up: int = 0  # run -> destination
    bytes_down: int = 0  # destination -> run


class _Refused(Exception):
    """An attempt the proxy answers with an HTTP error and closes."""

    def __init__(self, status: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason = status, reason


class EgressProxy:
    """One run's proxy: start it before the container is created, close it after the run."""

    def __init__(
        self,
        allow: list[str],
        deny: list[str],
        *,
        max_connections: int | None,
        max_bytes: int | None,
        run_id: str = "",
    ) -> None:
        self.allow: tuple[HostRule, ...] = tuple(parse_rule(r) for r in allow)
        self.deny: tuple[HostRule, ...] = tuple(parse_rule(r) for r in deny)
        self.max_connections, self.max_bytes, self.run_id = max_connections, max_bytes, run_id
        self.override = _OVERRIDE.get()
        self.records: list[Attempt] = []
        self.attempts = 0
        self.connections = 0  # attempts the policy let through (the connection limit counts these)
        self.total_bytes = 0
        self.bytes_up = self.bytes_down = 0  # totals (records past MAX_RECORDS are not kept)
        self.bytes_limit_hit = False
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.host_dir: Path | None = None
        self.socket_name = f"proxy-{secrets.token_hex(6)}.sock"

    @property
    def container_socket(self) -> str:
        return f"{CONTAINER_DIR}/{self.socket_name}"

    async def start(self) -> None:
        """Listen on a fresh socket in a new host-owned folder (0711: others may not list it)."""
        self.host_dir = Path(tempfile.mkdtemp(prefix="dad-egress-"))
        self.host_dir.chmod(0o711)
        path = self.host_dir / self.socket_name
        self._server = await asyncio.start_unix_server(self._accept, path=str(path), limit=MAX_HEAD_BYTES)
        path.chmod(0o666)  # the run's uid differs from the host's; only this run's container sees the folder
        log.info("egress proxy listening", run_id=self.run_id, socket=str(path))

    async def close(self) -> dict[str, Any]:
        """Stop listening, cut every open connection, remove the folder; returns the summary."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=5)
        if self.host_dir is not None:
            shutil.rmtree(self.host_dir, ignore_errors=True)
        return self.summary()

    def summary(self) -> dict[str, Any]:
        """The counts recorded in the run's metadata under ``egress``."""
        allowed = [r for r in self.records if r.allowed]
        return {
            "attempts": self.attempts,
            "allowed": self.connections,
            "refused": self.attempts - self.connections,
            "records_dropped": max(0, self.attempts - len(self.records)),
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
            "limit_hit": "bytes" if self.bytes_limit_hit else "attempts" if self.attempts >= MAX_ATTEMPTS else
                         "connections" if any(r.reason == "limit_connections" for r in self.records) else None,
            "hosts": sorted({f"{r.host}:{r.port}" for r in allowed})[:100],
        }

    # ------------------------------------------------------------------ one connection

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One client connection (asyncio runs each in its own task; close() cancels them all)."""
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self.attempts += 1
        if self.attempts >= MAX_ATTEMPTS and self._server is not None and self._server.is_serving():
            log.warning("egress attempt limit reached: the proxy stops listening", run_id=self.run_id, limit=MAX_ATTEMPTS)
            self._server.close()
        attempt = Attempt(host="", port=0, method="", allowed=False, reason="not_http")
        if len(self.records) < MAX_RECORDS:
            self.records.append(attempt)
        if len(self._tasks) > MAX_OPEN:
            attempt.reason, attempt.end = "too_many_open", time.time()
            writer.close()
            return
        self._writers.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            head = await self._read_head(reader)
            method, host, port, first = self._parse(head, attempt)
            self._decide(attempt)
            up_reader, upstream = await self._connect(host, port, attempt)
            self._writers.add(upstream)
            attempt.allowed, attempt.reason = True, "allowed"
            if method == "CONNECT":
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                upstream.write(first)
                attempt.bytes_up += len(first)
                self.bytes_up += len(first)
                self._count(len(first))
            await asyncio.gather(self._pipe(reader, upstream, attempt, up=True),
                                 self._pipe(up_reader, writer, attempt, up=False))
        except _Refused as refusal:
            attempt.allowed, attempt.reason = False, refusal.reason
            body = f"dad-sandbox egress proxy: {refusal}\n".encode()
            with contextlib.suppress(Exception):
                writer.write(f"HTTP/1.1 {refusal.status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
                             "Connection: close\r\n\r\n".encode() + body)
                await asyncio.wait_for(writer.drain(), timeout=5)
        except Exception:
            pass
        finally:
            attempt.end = time.time()
            for w in (writer, upstream):
                if w is not None:
                    self._writers.discard(w)
                    w.close()
            if self.attempts <= LOGGED_ATTEMPTS:
                log.info("egress", run_id=self.run_id, host=attempt.host, port=attempt.port, allowed=attempt.allowed,
                         reason=attempt.reason, bytes_up=attempt.bytes_up, bytes_down=attempt.bytes_down)

    @staticmethod
    async def _read_head(reader: asyncio.StreamReader) -> bytes:
        try:
            return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=HEAD_TIMEOUT)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as exc:
            raise _Refused("400 Bad Request", "not_http", "expected an HTTP proxy request (CONNECT or http:// URL)") from exc

    @staticmethod
    def _parse(head: bytes, attempt: Attempt) -> tuple[str, str, int, bytes]:
        """``(method, host, port, request to send upstream)`` from a proxy request head."""
        not_http = _Refused("400 Bad Request", "not_http", "expected an HTTP proxy request (CONNECT or http:// URL)")
        try:
            text = head.decode("ascii")
        except UnicodeDecodeError:
            raise not_http from None
        request_line, _, rest = text.partition("\r\n")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[0].isalpha() or not parts[0].isupper() or parts[2] not in ("HTTP/1.0", "HTTP/1.1"):
            raise not_http
        method, target, version = parts
        attempt.method = method
        if method == "CONNECT":
            host, sep, port_text = target.rpartition(":")
            if not sep or not port_text.isdigit():
                raise not_http
            path = ""
        else:
            url = urlsplit(target)
            if url.scheme != "http":
                raise _Refused("400 Bad Request", "not_http",
                               "send https:// through CONNECT and plain http:// as an absolute URL")
            host, port_text = url.hostname or "", str(url.port or 80)
            path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        attempt.host, attempt.port = host.lower()[:255], int(port_text) if len(port_text) <= 5 else 0
        if not 1 <= attempt.port <= 65535:
            raise _Refused("400 Bad Request", "bad_port", f"port {port_text[:8]!r} is not a port")
        if is_ip_literal(host):
            raise _Refused("403 Forbidden", "ip_literal", f"{host[:64]} is an address; the policy allows host names only")
        name = normalize_host(host)
        if name is None:
            raise _Refused("400 Bad Request", "bad_host", f"{host[:64]!r} is not a host name")
        attempt.host = name
        if method == "CONNECT":
            return method, name, attempt.port, b""
        headers = [line for line in rest.split("\r\n") if line and not line.lower().startswith(
            ("proxy-", "connection:", "keep-alive:", "host:"))]
        hostport = name if attempt.port == 80 else f"{name}:{attempt.port}"
        first = "\r\n".join([f"{method} {path} {version}", f"Host: {hostport}", *headers, "Connection: close", "", ""])
        return method, name, attempt.port, first.encode("ascii")

    def _decide(self, attempt: Attempt) -> None:
        where = f"{attempt.host}:{attempt.port}"
        if first_match(self.deny, attempt.host, attempt.port) is not None:
            raise _Refused("403 Forbidden", "deny_list", f"{where} is in the policy's egress_deny")
        if first_match(self.allow, attempt.host, attempt.port) is None:
            raise _Refused("403 Forbidden", "not_allowed", f"{where} is not in the policy's egress_allow")
        if self.max_connections is not None and self.connections >= self.max_connections:
            raise _Refused("429 Too Many Requests", "limit_connections",
                           f"the run used its {self.max_connections} egress connections (egress_max_connections)")
        if self.bytes_limit_hit:
            raise _Refused("429 Too Many Requests", "limit_bytes",
                           f"the run moved its {self.max_bytes} egress bytes (egress_max_bytes)")
        self.connections += 1  # counted before the connect, so parallel attempts cannot race past the limit

    async def _connect(self, host: str, port: int, attempt: Attempt) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Resolve on the host (or through the test map) and connect; only public addresses without a map."""
        if self.override is not None:
            target = self.override.get(f"{host}:{port}")
            if target is None:
                raise _Refused("502 Bad Gateway", "unresolved", f"{host}:{port} is not in the resolver override")
            addresses = [target]
        else:
            loop = asyncio.get_running_loop()
            try:
                infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=1), timeout=CONNECT_TIMEOUT)
            except (OSError, TimeoutError) as exc:
                raise _Refused("502 Bad Gateway", "unresolved", f"{host} could not be resolved: {exc}") from exc
            addresses = [(str(info[4][0]), port) for info in infos if ipaddress.ip_address(str(info[4][0])).is_global]
            if not addresses:
                raise _Refused("403 Forbidden", "non_public_address", f"{host} resolves to no public address")
        try:
            return await asyncio.wait_for(asyncio.open_connection(*addresses[0], limit=CHUNK), timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise _Refused("502 Bad Gateway", "connect_failed", f"could not connect to {host}:{port}: {exc}") from exc

    def _count(self, n: int) -> None:
        self.total_bytes += n
        if self.max_bytes is not None and self.total_bytes > self.max_bytes and not self.bytes_limit_hit:
            self.bytes_limit_hit = True
            log.warning("egress byte limit reached: cutting every connection", run_id=self.run_id, limit=self.max_bytes)
            for writer in list(self._writers):
                writer.close()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, attempt: Attempt, *, up: bool) -> None:
        try:
            while not self.bytes_limit_hit:
                data = await src.read(CHUNK)
                if not data:
                    break
                if up:
                    attempt.bytes_up += len(data)
                    self.bytes_up += len(data)
                else:
                    attempt.bytes_down += len(data)
                    self.bytes_down += len(data)
                self._count(len(data))
                if self.bytes_limit_hit:
                    attempt.reason = "limit_bytes"
                    break
                dst.write(data)
                await dst.drain()
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                if dst.can_write_eof():
                    dst.write_eof()
            if self.bytes_limit_hit:
                dst.close()


def proxy_env(port: int = FORWARDER_PORT) -> dict[str, str]:
    """The run's proxy variables: everything but in-container loopback goes through the forwarder."""
    url = f"http://127.0.0.1:{port}"
    no_proxy = "localhost,127.0.0.1,::1"
    return {"HTTP_PROXY": url, "HTTPS_PROXY": url, "http_proxy": url, "https_proxy": url,
            "NO_PROXY": no_proxy, "no_proxy": no_proxy}


def forwarder_command(socket_path: str, argv: list[str], port: int = FORWARDER_PORT) -> list[str]:
    """The container command: start the forwarder, then exec the run's own command."""
    return ["python3", "-m", "dad_sandbox.sandbox._egress_forwarder", str(port), socket_path, "--", *argv]


def span_records(proxy: EgressProxy, trace_id: str) -> list[dict[str, Any]]:
    """One span per attempt, in the OpenTelemetry-like shape of the run's ``trace.jsonl``."""
    spans = []
    for r in proxy.records:
        end = r.end if r.end is not None else time.time()
        spans.append({
            "trace_id": trace_id, "span_id": secrets.token_hex(8), "parent_span_id": None,
            "name": "dad.egress.connection", "kind": "SPAN_KIND_CLIENT",
            "start_time_unix_nano": int(r.start * 1e9), "end_time_unix_nano": int(end * 1e9),
            "status": {"code": "STATUS_CODE_OK" if r.allowed else "STATUS_CODE_ERROR",
                       "message": None if r.allowed else r.reason},
            "attributes": {"dad.run_id": proxy.run_id, "dad.egress.host": r.host, "dad.egress.port": r.port,
                           "dad.egress.method": r.method, "dad.egress.allowed": r.allowed,
                           "dad.egress.reason": r.reason, "dad.egress.bytes_up": r.bytes_up,
                           "dad.egress.bytes_down": r.bytes_down,
                           "dad.egress.duration_seconds": round(end - r.start, 6)},
        })
    return spans


def write_trace(run_dir: Path, proxy: EgressProxy) -> None:
    """Append the proxy's spans to ``.trace/trace.jsonl`` (host-written; blocking: call in a thread)."""
    trace_id = secrets.token_hex(16)
    data = "".join(json.dumps(s) + "\n" for s in span_records(proxy, trace_id)).encode()
    if not data:
        return
    with _safe_fs.opened_dir(run_dir, TRACE_DIR) as fd:
        out = _safe_fs.open_append(fd, TRACE_FILE)
        try:
            _safe_fs.write_all(out, data)
        finally:
            os.close(out)


async def start_for(policy: Any, run_id: str) -> EgressProxy:
    """The started proxy for a policy with ``network = "allowlist"``."""
    proxy = EgressProxy(list(policy.egress_allow), list(policy.egress_deny), max_connections=policy.egress_max_connections,
                        max_bytes=policy.egress_max_bytes, run_id=run_id)
    await proxy.start()
    return proxy

