"""Egress rules, policy validation and the host-side proxy's decisions, without a container.

The proxy tests talk to its unix socket directly; every upstream is a server on 127.0.0.1 reached
through the resolver override, so nothing is resolved by DNS and nothing leaves loopback.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from dad_sandbox.errors import PolicyError
from dad_sandbox.sandbox._egress_proxy import EgressProxy, resolver_override, span_records
from dad_sandbox.sandbox._egress_rules import is_ip_literal, parse_rule
from dad_sandbox.sandbox._policy import load_policy
from dad_sandbox.sandbox._spec import build_spec


@pytest.mark.parametrize(("rule", "host", "port", "expected"), [
    ("pypi.org", "pypi.org", 443, True),
    ("pypi.org", "pypi.org", 80, True),
    ("pypi.org", "pypi.org", 22, False),
    ("pypi.org", "evilpypi.org", 443, False),
    ("PyPI.org.", "pypi.org", 443, True),
    ("*.example.com", "a.b.example.com", 443, True),
    ("*.example.com", "example.com", 443, False),
    ("*.example.com", "badexample.com", 443, False),
    ("*.example.com:8443", "a.example.com", 8443, True),
    ("*.example.com:8443", "a.example.com", 443, False),
    ("api.test:*", "api.test", 5000, True),
])
def test_rule_matching(rule: str, host: str, port: int, expected: bool) -> None:
    """A rule matches its name (or strict subdomains for '*.'), on web ports unless it names a port."""
    assert parse_rule(rule).matches(host, port) is expected


@pytest.mark.parametrize(("rule", "words"), [
    ("10.0.0.1", "IP address"),
    ("[::1]:443", "not a URL or an address"),
    ("https://pypi.org", "not a URL"),
    ("*.com", "needs a domain with a dot"),
    ("a.*.com", "leading '*.'"),
    ("pypi.org:70000", "port must be"),
    ("bad_name.org", "not a valid host name"),
    ("", "empty"),
])
def test_bad_rules_are_refused_with_a_reason(rule: str, words: str) -> None:
    """Each malformed rule is refused with a message saying what is wrong."""
    with pytest.raises(ValueError, match=words.replace("*", r"\*").replace(".", r"\.").replace("[", r"\[")):
        parse_rule(rule)


def test_address_forms_are_ip_literals() -> None:
    """Short, hex and v6 address forms that getaddrinfo would accept all count as addresses."""
    assert all(is_ip_literal(h) for h in ("127.0.0.1", "127.1", "0x7f000001", "2130706433", "::1", "[::1]"))
    assert not is_ip_literal("pypi.org")


def test_policy_validation() -> None:
    """allowlist needs rules, rules need allowlist, and bad rules name the key in the policy error."""
    base = load_policy("untrusted")
    ok = base.with_overrides(network="allowlist", egress_allow=["PyPI.org", "*.example.com:443"])
    assert ok.egress_allow == ["pypi.org", "*.example.com:443"]
    with pytest.raises(PolicyError, match="needs egress_allow"):
        base.with_overrides(network="allowlist")
    with pytest.raises(PolicyError, match="only with network = 'allowlist'"):
        base.with_overrides(egress_allow=["pypi.org"])
    with pytest.raises(PolicyError, match="'egress_allow'.*IP address"):
        base.with_overrides(network="allowlist", egress_allow=["1.2.3.4"])


def test_spec_has_no_network_and_the_forwarder(tmp_path: Path) -> None:
    """An allowlist run's container gets no network, the socket folder read-only, proxy variables and the forwarder."""
    from dad_sandbox.run import RunContext
    from dad_sandbox.sandbox._ownership import RunUser

    (tmp_path / "p").mkdir()
    ctx = RunContext("exec", tmp_path / "p", run_root=tmp_path / "runs")
    ctx.setup_run()
    policy = load_policy("untrusted").with_overrides(network="allowlist", egress_allow=["pypi.org"])
    proxy = EgressProxy(["pypi.org"], [], max_connections=None, max_bytes=None)
    proxy.host_dir = tmp_path / "egress"
    spec = build_spec(ctx, policy, RunUser(1000, 1000, 1000, 1000), ["true"], deadline=0.0, egress=proxy)
    assert spec.network == "none"
    run_argv = spec.command[spec.command.index("--") + 1:]  # what dad-init (PID 1) starts as the run's user
    assert run_argv[:3] == ("python3", "-m", "dad_sandbox.sandbox._egress_forwarder") and run_argv[-1] == "true"
    assert any(m.source == str(tmp_path / "egress") and m.read_only for m in spec.mounts)
    assert spec.env["HTTPS_PROXY"] == "http://127.0.0.1:3128" and spec.env["no_proxy"]


async def _upstream() -> tuple[asyncio.AbstractServer, int]:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        body = head  # echo the request the proxy sent upstream
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _ask(proxy: EgressProxy, request: bytes) -> bytes:
    assert proxy.host_dir is not None
    reader, writer = await asyncio.open_unix_connection(str(proxy.host_dir / proxy.socket_name))
    writer.write(request)
    data = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    return data


def test_proxy_decides_on_names_and_rewrites_plain_http() -> None:
    """The proxy forwards an allowed http:// request in origin form without proxy headers and refuses the rest."""
    async def go() -> tuple[list[bytes], dict, list[dict]]:
        server, port = await _upstream()
        with resolver_override({"ok.test:80": ("127.0.0.1", port), "deny.ok.test:80": ("127.0.0.1", port)}):
            proxy = EgressProxy(["*.ok.test", "ok.test"], ["deny.ok.test"], max_connections=None, max_bytes=None)
        await proxy.start()
        answers = [
            await _ask(proxy, b"GET http://ok.test/path?q=1 HTTP/1.1\r\nHost: ok.test\r\nProxy-Authorization: x\r\n\r\n"),
            await _ask(proxy, b"GET http://deny.ok.test/ HTTP/1.1\r\n\r\n"),
            await _ask(proxy, b"GET http://other.test/ HTTP/1.1\r\n\r\n"),
            await _ask(proxy, b"CONNECT 127.0.0.1:80 HTTP/1.1\r\n\r\n"),
            await _ask(proxy, b"GET https://ok.test/ HTTP/1.1\r\n\r\n"),
            await _ask(proxy, b"SSH-2.0-OpenSSH\r\n\r\n"),
            await _ask(proxy, b"GET http://x.ok.test/ HTTP/1.1\r\n\r\n"),  # allowed, but not in the map
        ]
        summary = await proxy.close()
        spans = span_records(proxy, "0" * 32)
        server.close()
        return answers, summary, spans

    answers, summary, spans = asyncio.run(go())
    assert answers[0].startswith(b"HTTP/1.1 200") and b"GET /path?q=1 HTTP/1.1\r\nHost: ok.test\r\n" in answers[0]
    assert b"Proxy-Authorization" not in answers[0] and b"Connection: close" in answers[0]
    assert [a.split(b"\r\n")[0] for a in answers[1:]] == [
        b"HTTP/1.1 403 Forbidden", b"HTTP/1.1 403 Forbidden", b"HTTP/1.1 403 Forbidden",
        b"HTTP/1.1 400 Bad Request", b"HTTP/1.1 400 Bad Request", b"HTTP/1.1 502 Bad Gateway"]
    assert [s["attributes"]["dad.egress.reason"] for s in spans] == [
        "allowed", "deny_list", "not_allowed", "ip_literal", "not_http", "not_http", "unresolved"]
    assert summary["attempts"] == 7 and summary["hosts"] == ["ok.test:80"]
    json.dumps(spans)  # the trace lines are JSON


def test_close_removes_the_socket_folder() -> None:
    """Closing the proxy removes its host folder, so nothing of a finished run stays reachable."""
    async def go() -> Path:
        proxy = EgressProxy(["ok.test"], [], max_connections=1, max_bytes=1)
        await proxy.start()
        assert proxy.host_dir is not None and (proxy.host_dir / proxy.socket_name).exists()
        await proxy.close()
        return proxy.host_dir

    assert not asyncio.run(go()).exists()


def test_open_connections_are_capped() -> None:
    """Past MAX_OPEN idle connections, new ones are closed at once and recorded, so a run cannot hoard host sockets."""
    from dad_sandbox.sandbox import _egress_proxy

    async def go() -> tuple[bytes, list[str]]:
        proxy = EgressProxy(["ok.test"], [], max_connections=None, max_bytes=None)
        await proxy.start()
        assert proxy.host_dir is not None
        path = str(proxy.host_dir / proxy.socket_name)
        idle = [await asyncio.open_unix_connection(path) for _ in range(_egress_proxy.MAX_OPEN)]
        await asyncio.sleep(0.2)
        reader, writer = await asyncio.open_unix_connection(path)
        extra = await asyncio.wait_for(reader.read(), timeout=5)  # closed without an answer
        for _, w in idle:
            w.close()
        writer.close()
        await proxy.close()
        return extra, [r.reason for r in proxy.records]

    extra, reasons = asyncio.run(go())
    assert extra == b"" and "too_many_open" in reasons


def test_proxy_stops_listening_after_the_attempt_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_ATTEMPTS the proxy closes its socket, so a refusal loop cannot keep the supervisor busy."""
    from dad_sandbox.sandbox import _egress_proxy

    monkeypatch.setattr(_egress_proxy, "MAX_ATTEMPTS", 3)

    async def go() -> tuple[dict, bool]:
        proxy = EgressProxy(["ok.test"], [], max_connections=None, max_bytes=None)
        await proxy.start()
        for _ in range(3):
            await _ask(proxy, b"GET http://no.test/ HTTP/1.1\r\n\r\n")
        try:
            await _ask(proxy, b"GET http://no.test/ HTTP/1.1\r\n\r\n")
            refused = False
        except OSError:
            refused = True
        return await proxy.close(), refused

    summary, refused = asyncio.run(go())
    assert refused and summary["attempts"] == 3 and summary["limit_hit"] == "attempts"
