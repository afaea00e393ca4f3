"""Hostile runs started by a NON-ROOT host user (in the engine's group) through the real CLI.

The run then executes under the host user's own uid and shares every permission with the
supervisor. Each case must end with the honest status, the user's other files untouched, the
host-written state (policy copy, static inputs, final metadata) intact, and no container left.
``.trace/`` is hidden and ``static_inputs/`` read-only in the container, the runner writes into
``.runner/``, and the quota walk repairs what a same-uid run locked: see docs/SECURITY.md.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dad_sandbox.errors import DadSandboxError
from dad_sandbox.run import _safe_fs, read_metadata
from dad_sandbox.sandbox import load_policy
from tests.integration.conftest import labelled

from ._harness import snapshot
from ._unprivileged import Workspace, host_user, workspace  # noqa: F401 - fixtures

COMPLETED = {("completed", None)}
FAILED = {("failed", "exit_code")}


def policy_name(runtime: str) -> str:
    return "gvisor" if runtime == "runsc" else "untrusted"


def read_host_file(run_dir: Path, folder: str, name: str) -> bytes:
    """A host-written file of the run dir, read without following links (a planted link is tampering)."""
    with _safe_fs.opened_dir(run_dir, folder) as fd:
        data, _ = _safe_fs.read_bounded(fd, name, 1 << 20)
    return data


def hostile(ws: Workspace, runtime: str, docker_api: Any, record: list[dict[str, Any]], name: str, argv: list[str],
            *, expect: set[tuple[str, str | None]], defends: str, policy: str | None = None,
            cli: tuple[str, ...] = (), after: Callable[[Path], None] | None = None) -> Path:
    """Run ``argv`` through ``dad-sandbox exec`` (or ``cli``) as the unprivileged user; check the four
    properties and ``after(run_dir)``; only then is the row recorded as contained."""
    policy = policy or policy_name(runtime)
    before_host, before_sentinel = snapshot(ws.host), (ws.project / "sentinel.txt").read_bytes()
    entry = {"attack": f"nonroot-{name}", "runtime": runtime, "status": "?", "reason": None, "defended_by": defends,
             "contained": False}
    record.append(entry)
    args = cli or ("exec", "--json", "--policy", policy, "--prefix", name.replace("-", "_")[:30], "--", *argv)
    summary = ws.cli_json(*args)
    run_dir = Path(summary["run_dir"])
    left = labelled(docker_api, under=ws.base)
    for cid in left:
        docker_api.remove_container(cid, force=True)
    md = read_metadata(run_dir)
    entry.update(status=md.status.value, reason=md.reason)
    assert not left, f"{name}: {len(left)} container(s) left behind"
    assert (md.status.value, md.reason) in expect, f"{name}: got {(md.status.value, md.reason)}; error: {md.error}"
    assert summary["status"] == md.status.value, f"{name}: the CLI said {summary['status']}, the metadata {md.status}"
    assert snapshot(ws.host) == before_host, f"{name}: the user's files outside the run changed"
    assert (ws.project / "sentinel.txt").read_bytes() == before_sentinel, f"{name}: the project changed"
    try:
        copy = json.loads(read_host_file(run_dir, ".trace", "policy.json"))
    except (OSError, ValueError, DadSandboxError) as exc:
        raise AssertionError(f"{name}: the policy copy is gone or not JSON: {exc}") from None
    assert copy == load_policy(md.policy_name if policy in ("gvisor", "untrusted") else policy).model_dump(mode="json"), \
        f"{name}: .trace/policy.json is not the policy the run had"
    if after is not None:
        after(run_dir)
    entry["contained"] = True
    return run_dir


def no_bad_modes(run_dir: Path) -> None:
    """No setuid/setgid/world-writable entry and no folder its owner cannot list (GNU find is the oracle)."""
    done = subprocess.run(["find", str(run_dir), "!", "-type", "l", "(", "-perm", "/6002", "-o", "-type", "d", "!",
                           "-perm", "-0700", ")"], capture_output=True, text=True, check=True)
    assert done.stdout.split() == [], f"left with bad modes: {done.stdout.split()[:10]}"


@pytest.fixture
def check(workspace: Workspace, runtime: str, docker_api: Any, record_result: list[dict[str, Any]]):
    def run(name: str, script: str, **kw: Any) -> Path:
        return hostile(workspace, runtime, docker_api, record_result, name, ["sh", "-c", script], **kw)
    return run


def test_lock_the_run_dir(check) -> None:
    """chmod 000 on its own run dir: the run still gets its final status and the dir is handed back listable."""
    check("chmod-000-run-dir", 'chmod 000 "$PWD"; exit 0', expect=COMPLETED,
          defends="hand-back unlocks through a pinned handle before collection", after=no_bad_modes)


def test_lock_the_trace_dir(check) -> None:
    """chmod 000 on .trace: finalization still reads it and writes the final status."""
    check("chmod-000-trace", "chmod 000 .trace; exit 0", expect=COMPLETED,
          defends="hand-back unlocks .trace before collection")


def test_forge_metadata_and_lock(check) -> None:
    """A forged 'completed' metadata, then .trace locked, then exit 3: the final status is failed."""
    script = ("sed 's/\"status\": \"[a-z_]*\"/\"status\": \"completed\"/' .trace/dad_metadata.json > f && "
              "cat f > .trace/dad_metadata.json; chmod 000 .trace; exit 3")
    check("forge-metadata-locked", script, expect=FAILED, defends="final status written by the host after hand-back")


def test_forge_metadata_in_a_planted_trace(check) -> None:
    """.trace swapped for the run's own folder holding a forged 'completed': the final status is still failed."""
    script = ("mv .trace .trace-old && mkdir .trace && "
              "printf '{\"status\": \"completed\"}' > .trace/dad_metadata.json; exit 3")
    check("forge-metadata-planted", script, expect=FAILED, defends="host-only final write (atomic rename)")


def test_rewrite_policy_copy(check) -> None:
    """.trace/policy.json rewritten by the run: the host's copy of the effective policy must survive."""
    check("rewrite-policy-json", "printf '{\"forged\": true}' > .trace/policy.json; exit 0", expect=COMPLETED,
          defends="policy copy out of the run's reach")


def test_links_planted_in_trace(check, workspace: Workspace) -> None:
    """Trace files replaced by links to the user's own secret files: the host never writes through them."""
    secret, notes = workspace.host / "secret.txt", workspace.host / "dir" / "notes.txt"
    script = (f"rm -f .trace/logs.jsonl .trace/metrics.jsonl .trace/trace.jsonl; ln -s {secret} .trace/logs.jsonl; "
              f"ln -s {notes} .trace/metrics.jsonl; ln -s {secret} .trace/trace.jsonl; echo out; exit 0")
    check("links-in-trace", script, expect=COMPLETED, defends="dir-fd + O_NOFOLLOW host I/O")


def test_setuid_and_world_writable_left(check) -> None:
    """Setuid/setgid files and world-writable folders made under the user's own uid are stripped at hand-back."""
    script = ("cp /bin/true s && chmod 6755 s && mkdir -p w/x && chmod 1777 w && chmod 2777 w/x && "
              "echo x > w/f && chmod 666 w/f && chmod 000 w/x")
    check("setuid-left", script, expect=COMPLETED, defends="hand-back strips setuid/setgid/o+w", after=no_bad_modes)


def quota_policy(workspace: Workspace, runtime: str) -> str:
    base = load_policy(policy_name(runtime)).with_overrides(disk_quota=32 << 20, name="quota32", timeout=60)
    path = workspace.project / "quota32.toml"
    path.write_text(to_toml(base.model_dump(mode="json")))
    workspace.chown(path)
    return str(path)


HIDE = "mkdir h && chmod 300 h && head -c 60000000 /dev/zero > h/blob && sleep {sleep}; exit 0"


def test_hide_data_from_the_quota(check, workspace: Workspace, runtime: str) -> None:
    """60 MB in a folder the run made unlistable (chmod 300), 32 MiB quota: the final status is failed (disk_quota)."""
    check("quota-hidden-final", HIDE.format(sleep=1), expect={("failed", "disk_quota")},
          defends="hand-back unlocks folders before the final quota check", policy=quota_policy(workspace, runtime))


def test_hidden_data_stops_the_run(check, workspace: Workspace, runtime: str) -> None:
    """The same, while the run goes on: the quota watch must see the hidden data and stop it well before its end."""
    def stopped_early(run_dir: Path) -> None:
        duration = read_metadata(run_dir).duration_seconds or 0.0
        assert duration < 20, f"the run kept 60 MB over its quota for {duration:.0f}s"

    check("quota-hidden-live", HIDE.format(sleep=30), expect={("failed", "disk_quota")},
          defends="quota walk no permission trick can hide from", policy=quota_policy(workspace, runtime),
          after=stopped_early)


def test_rewrite_static_inputs(workspace: Workspace, runtime: str, docker_api: Any, record_result) -> None:
    """A node rewrites static_inputs.json (which re-runs reuse): the host's static inputs must survive."""
    (workspace.project / "hostile_components.py").write_text(HOSTILE_COMPONENT)
    (workspace.project / "inputs.json").write_text(json.dumps({"first": {"name": "honest"}}))
    for name in ("hostile_components.py", "inputs.json"):
        workspace.chown(workspace.project / name)
    def intact(run_dir: Path) -> None:
        stored = read_host_file(run_dir, "static_inputs", "static_inputs.json").decode()
        assert "forged" not in stored and "honest" in stored, stored

    hostile(workspace, runtime, docker_api, record_result, "rewrite-static-inputs", [],
            expect=COMPLETED, defends="static inputs out of the run's reach", after=intact,
            cli=("run", "hostile_components:agent", "--json", "--policy", policy_name(runtime),
                 "--inputs", "inputs.json", "--prefix", "static"))


HOSTILE_COMPONENT = '''
import os
from pydantic import BaseModel
from dad_sandbox import AgentDefinition, FlowDefinition


class In(BaseModel):
    name: str


def rewrite(ctx):
    path = os.path.join(os.environ["DAD_RUN_DIR"], "static_inputs", "static_inputs.json")
    try:
        with open(path, "w") as fh:
            fh.write('{"first": {"name": "forged"}}')
        return {"rewrote": True, "name": ctx.input.name}
    except OSError as exc:
        return {"rewrote": False, "error": str(exc)}


agent = AgentDefinition("hostile", flows=[FlowDefinition("main").node("first", rewrite, input_model=In)])
'''


def to_toml(data: dict[str, Any]) -> str:
    """Enough TOML for a policy dump: scalars, lists of strings, one level of tables; None is 'unlimited'."""
    def value(v: Any) -> str:
        if v is None:
            return '"unlimited"'
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(str(v))

    lines = [f"{k} = {value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for k, v in data.items():
        if isinstance(v, dict):
            lines.append(f"\n[{k}]")
            lines.extend(f"{json.dumps(str(kk))} = {value(vv)}" for kk, vv in v.items())
    return "\n".join(lines) + "\n"
