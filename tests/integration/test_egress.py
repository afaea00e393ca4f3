"""Egress by allow-list (policy ``network = "allowlist"``), on loopback only.

Network safety: the test servers listen on 127.0.0.1, the proxy's resolver override maps the test
host names to them, and with an override set the proxy connects nowhere else. The in-container
probes aim at 127.0.0.1 (the container's own ``lo``) and at 192.0.2.1 (TEST-NET-1, with no
interface but ``lo`` the kernel has no route, so no packet is sent).
"""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import docker
import pytest

from dad_sandbox.run import RunStatus
from dad_sandbox.sandbox._egress_proxy import resolver_override
from tests.integration._runs import run_cmd

BIG = 64 << 10


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"x" * BIG if self.path == "/big" else f"hello from {self.headers.get('Host')}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _serve(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[dict[str, object]]:
    """A plain HTTP and a TLS server on 127.0.0.1, the TLS one with a self-signed cert for tls.allowed.test."""
    certs = tmp_path / "egress_project"
    certs.mkdir()
    certs.chmod(0o755)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=tls.allowed.test",
         "-addext", "subjectAltName=DNS:tls.allowed.test", "-keyout", str(tmp_path / "key.pem"),
         "-out", str(certs / "ca.pem")], check=True, capture_output=True)
    plain = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    tls = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs / "ca.pem", tmp_path / "key.pem")
    tls.socket = ctx.wrap_socket(tls.socket, server_side=True)
    _serve(plain), _serve(tls)
    mapping = {
        "plain.allowed.test:80": ("127.0.0.1", plain.server_address[1]),
        "tls.allowed.test:443": ("127.0.0.1", tls.server_address[1]),
        "blocked.allowed.test:80": ("127.0.0.1", plain.server_address[1]),
        "denied.test:80": ("127.0.0.1", plain.server_address[1]),
    }
    yield {"project": certs, "mapping": mapping, "plain_port": plain.server_address[1]}
    plain.shutdown(), tls.shutdown()
    plain.server_close(), tls.server_close()


PROBE = r'''
import json, socket, ssl, urllib.request, urllib.error
out = {}
def get(name, url, **kw):
    try:
        with urllib.request.urlopen(url, timeout=15, **kw) as r:
            out[name] = [r.status, r.read().decode()[:80]]
    except urllib.error.HTTPError as e:
        out[name] = [e.code, e.read().decode()[:200]]
    except Exception as e:
        out[name] = ["error", repr(e)[:200]]
ca = ssl.create_default_context(cafile="/dad/project/ca.pem")
get("plain", "http://plain.allowed.test/hello")
get("tls", "https://tls.allowed.test/hello", context=ca)
get("denied", "http://denied.test/")
get("deny_list", "http://blocked.allowed.test/")
get("raw_ip", "http://192.0.2.1/")
get("hex_ip", "http://0x7f000001/")
get("tls_denied", "https://denied.test/", context=ca)
s = socket.create_connection(("127.0.0.1", 3128), timeout=10)
s.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
out["not_http"] = s.recv(100).decode(errors="replace")
s.close()
for name, addr in (("direct_lo", ("127.0.0.1", PLAIN_PORT)), ("direct_net", ("192.0.2.1", 80))):
    try:
        socket.create_connection(addr, timeout=3).close()
        out[name] = "connected"
    except OSError as e:
        out[name] = repr(e)
out["interfaces"] = sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").readlines()[2:])
json.dump(out, open("probe.json", "w"))
'''


def _policy(**extra: object) -> dict[str, object]:
    return {"network": "allowlist", "egress_allow": ["*.allowed.test", "denied-not.test"],
            "egress_deny": ["blocked.allowed.test"], **extra}


def _spans(run_dir: Path) -> list[dict]:
    lines = (run_dir / ".trace" / "trace.jsonl").read_text().splitlines()
    return [s for s in map(json.loads, lines) if s["name"] == "dad.egress.connection"]


def _run_probe(servers: dict, **policy: object) -> tuple[dict, object, object]:
    script = PROBE.replace("PLAIN_PORT", str(servers["plain_port"]))
    with resolver_override(servers["mapping"]):
        ctx, result = run_cmd(servers["project"], f"python3 -c '{script}'", **_policy(**policy))
    probe = json.loads((ctx.run_dir / "probe.json").read_text())
    return probe, ctx, result


def test_allowlisted_hosts_answer_and_everything_else_is_refused(servers: dict) -> None:
    """Allowed names answer over HTTP and TLS; denied names, addresses, junk and direct sockets are refused, each attempt traced."""
    probe, ctx, result = _run_probe(servers)
    assert result.status == RunStatus.COMPLETED, result.error
    assert probe["plain"] == [200, "hello from plain.allowed.test"]
    assert probe["tls"][0] == 200 and probe["tls"][1].startswith("hello from")
    assert probe["denied"][0] == 403 and "egress_allow" in probe["denied"][1]
    assert probe["deny_list"][0] == 403 and "egress_deny" in probe["deny_list"][1]
    assert probe["raw_ip"][0] == 403 and probe["hex_ip"][0] == 403
    assert probe["tls_denied"][0] == "error" and "403" in probe["tls_denied"][1]
    assert probe["not_http"].startswith("HTTP/1.1 400")
    assert probe["direct_lo"] != "connected" and probe["direct_net"] != "connected"
    assert probe["interfaces"] == ["lo"]

    spans = {(s["attributes"]["dad.egress.host"], s["attributes"]["dad.egress.reason"]) for s in _spans(ctx.run_dir)}
    assert {("plain.allowed.test", "allowed"), ("tls.allowed.test", "allowed"), ("denied.test", "not_allowed"),
            ("blocked.allowed.test", "deny_list"), ("192.0.2.1", "ip_literal"), ("0x7f000001", "ip_literal"),
            ("", "not_http")} <= spans
    allowed = [s for s in _spans(ctx.run_dir) if s["attributes"]["dad.egress.allowed"]]
    assert all(s["attributes"]["dad.egress.bytes_down"] > 0 and s["attributes"]["dad.egress.bytes_up"] > 0 for s in allowed)
    egress = ctx.metadata.model_dump()["egress"]
    assert egress["attempts"] == 8 and egress["allowed"] == 2 and egress["refused"] == 6
    assert egress["hosts"] == ["plain.allowed.test:80", "tls.allowed.test:443"]


LIMITS = r'''
import json, urllib.request, urllib.error
out = []
for path in ("/one", "/two", "/big", "/three"):
    try:
        with urllib.request.urlopen("http://plain.allowed.test" + path, timeout=15) as r:
            out.append([r.status, len(r.read())])
    except urllib.error.HTTPError as e:
        out.append([e.code, 0])
    except Exception as e:
        out.append(["error", repr(e)[:100]])
json.dump(out, open("limits.json", "w"))
'''


def test_connection_and_byte_limits_hold(servers: dict) -> None:
    """Past egress_max_bytes the connection is cut and later ones refused; past egress_max_connections attempts are refused."""
    with resolver_override(servers["mapping"]):
        ctx, result = run_cmd(servers["project"], f"python3 -c '{LIMITS}'",
                              **_policy(egress_max_bytes=16 << 10, egress_max_connections=3))
    assert result.status == RunStatus.COMPLETED, result.error
    out = json.loads((ctx.run_dir / "limits.json").read_text())
    assert out[0][0] == 200 and out[1][0] == 200
    assert out[2][0] == "error" or out[2][1] < BIG  # cut mid-body
    assert out[3][0] in (429, "error")
    egress = ctx.metadata.model_dump()["egress"]
    assert egress["limit_hit"] == "bytes"
    assert egress["bytes_down"] <= (16 << 10) + (64 << 10)  # at most one chunk past the limit

    with resolver_override(servers["mapping"]):
        ctx, result = run_cmd(servers["project"], f"python3 -c '{LIMITS}'", **_policy(egress_max_connections=2))
    out = json.loads((ctx.run_dir / "limits.json").read_text())
    assert [o[0] for o in out] == [200, 200, 429, 429]
    reasons = [s["attributes"]["dad.egress.reason"] for s in _spans(ctx.run_dir)]
    assert reasons.count("limit_connections") == 2 and ctx.metadata.model_dump()["egress"]["limit_hit"] == "connections"


def _runsc_has_host_uds() -> bool:
    runtimes = docker.APIClient(version="auto").info().get("Runtimes", {})
    args = (runtimes.get("runsc") or {}).get("runtimeArgs") or []
    return any(a.startswith("--host-uds=") and a.split("=", 1)[1] in ("open", "all") for a in args)


def test_allowlist_works_under_gvisor(servers: dict) -> None:
    """Under gVisor the run reaches an allowed host through the proxy's socket and nothing else."""
    if not _runsc_has_host_uds():
        pytest.skip("runsc is not registered with --host-uds=open (scripts/engine.sh does so; the running "
                    "engine predates it and was not restarted here)")
    probe, ctx, result = _run_probe(servers, runtime="runsc", pids_limit=512)
    assert result.status == RunStatus.COMPLETED, result.error
    assert probe["plain"] == [200, "hello from plain.allowed.test"]
    assert probe["tls"][0] == 200
    assert probe["denied"][0] == 403 and probe["raw_ip"][0] == 403
    assert probe["direct_lo"] != "connected" and probe["direct_net"] != "connected"


NET_COMPONENT = '''
import urllib.request, urllib.error
from dad_sandbox import AgentDefinition, FlowDefinition
def fetch(ctx):
    out = {}
    for name in ("plain.allowed.test", "denied.test"):
        try:
            out[name] = urllib.request.urlopen("http://" + name + "/", timeout=15).read().decode()
        except urllib.error.HTTPError as e:
            out[name] = e.code
    return out
net_agent = AgentDefinition("net", flows=[FlowDefinition("main").node("fetch", fetch)])
'''


def test_component_runs_reach_allowed_hosts(project: Path, servers: dict) -> None:
    """A component run (the entrypoint behind the forwarder) reaches an allowed host, and is refused a denied one."""
    import asyncio

    from dad_sandbox import AgentRunner, IsolatedExecution, RunContext, load_policy

    (project / "sbx_components" / "net.py").write_text(NET_COMPONENT)
    from sbx_components.net import net_agent

    ctx = RunContext(net_agent.id, project)
    ctx.setup_run()
    policy = load_policy("untrusted").with_overrides(**_policy())

    async def go():
        async with IsolatedExecution(ctx, policy) as execution:
            return await execution.run(AgentRunner(net_agent, ctx))

    with resolver_override(servers["mapping"]):
        result = asyncio.run(go())
    assert result.status == RunStatus.COMPLETED, result.error
    assert result.nodes[0]["output"] == {"plain.allowed.test": "hello from plain.allowed.test", "denied.test": 403}
    assert ctx.metadata.model_dump()["egress"]["attempts"] == 2


def test_forwarder_and_proxy_work_inside_gvisor(servers: dict, tmp_path: Path) -> None:
    """Under gVisor's own network stack (``runsc do``, host-uds=open) the forwarder reaches the proxy's socket."""
    import asyncio
    import os
    import shutil
    import sys

    from dad_sandbox.sandbox._egress_proxy import EgressProxy, forwarder_command, proxy_env

    if shutil.which("runsc") is None or os.geteuid() != 0:
        pytest.skip("needs runsc and root for 'runsc do'")
    code = ("import urllib.request as u, urllib.error as e\n"
            "for n in ('plain.allowed.test', 'denied.test'):\n"
            "  try: print(u.urlopen('http://' + n + '/', timeout=10).read().decode())\n"
            "  except e.HTTPError as x: print(x.code)\n")

    async def go() -> tuple[str, dict]:
        with resolver_override(servers["mapping"]):
            proxy = EgressProxy(["*.allowed.test"], [], max_connections=None, max_bytes=None)
        await proxy.start()
        assert proxy.host_dir is not None
        argv = forwarder_command(str(proxy.host_dir / proxy.socket_name), [sys.executable, "-c", code])
        argv[0] = sys.executable
        proc = await asyncio.create_subprocess_exec(
            "runsc", "--network=none", "--platform=ptrace", "--host-uds=open", f"--root={tmp_path / 'runsc'}", "do",
            "env", *[f"{k}={v}" for k, v in proxy_env().items()], *argv,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
        return out.decode() + err.decode()[-400:], await proxy.close()

    output, summary = asyncio.run(go())
    assert output.splitlines()[:2] == ["hello from plain.allowed.test", "403"], output
    assert summary["allowed"] == 1 and summary["refused"] == 1
