"""Policy -> container spec, the Docker error boundary, and the public surface."""

from __future__ import annotations

import inspect
from pathlib import Path

import docker.errors
import requests.exceptions

from dad_sandbox import errors
from dad_sandbox.run import RunContext
from dad_sandbox.sandbox import load_policy
from dad_sandbox.sandbox._ownership import RunUser
from dad_sandbox.sandbox._spec import build_spec
from dad_sandbox.sandbox.engine._errors import DOCKER_ERROR_MAP, is_transient, translate


def test_spec_mounts_labels_and_limits(tmp_path: Path) -> None:
    """Run dir read-write, project read-only, ownership labels, and every limit carried over."""
    ctx = RunContext("a", tmp_path)
    ctx.setup_run()
    policy = load_policy("untrusted")
    spec = build_spec(ctx, policy, RunUser(65534, 65534, 0, 0), ["true"], deadline=1234.5)
    mounts = {m.target: m for m in spec.mounts}
    assert mounts["/dad/project"].read_only and mounts["/dad/project"].source == str(tmp_path)
    assert not mounts[f"/dad/runs/{ctx.run_id}"].read_only
    assert spec.labels["dad.run_id"] == ctx.run_id
    assert spec.labels["dad.deadline"] == "1234.500"
    assert spec.labels["dad.supervisor"].endswith(f":{__import__('os').getpid()}")
    assert spec.network == "none" and spec.read_only_root
    # dad-init is PID 1 as root with four capabilities; it runs the command as the run's user with none
    assert spec.command == ("/usr/local/bin/dad-init", "--user", "65534:65534", "--", "true")
    assert spec.user == "0:0" and set(spec.cap_add) == {"SETUID", "SETGID", "SETPCAP", "KILL"}
    assert spec.env["DAD_DEADLINE"] == "1236.500"  # the container's own deadline trails the supervisor's by 2 s
    assert spec.cap_drop == ("ALL",) and spec.no_new_privileges and not spec.init
    assert spec.memory == policy.memory and spec.pids_limit == policy.pids_limit
    assert spec.tmpfs["/tmp"].startswith("size=")


def test_policy_env_is_the_only_host_env(tmp_path: Path, monkeypatch) -> None:
    """Host environment variables never reach the container unless the policy names them."""
    monkeypatch.setenv("SECRET_TOKEN", "hunter2")
    ctx = RunContext("a", tmp_path)
    ctx.setup_run()
    spec = build_spec(ctx, load_policy("untrusted"), RunUser(1, 1, 1, 1), ["true"], deadline=0)
    assert "SECRET_TOKEN" not in spec.env and "hunter2" not in str(spec.env)


def test_env_allow_passes_only_named_variables(tmp_path: Path, monkeypatch) -> None:
    """env_allow passes the named host variables through, and nothing else."""
    monkeypatch.setenv("WANTED", "yes")
    monkeypatch.setenv("UNWANTED", "no")
    ctx = RunContext("a", tmp_path)
    ctx.setup_run()
    policy = load_policy("untrusted").with_overrides(env_allow=["WANTED", "ABSENT"])
    spec = build_spec(ctx, policy, RunUser(1, 1, 1, 1), ["true"], deadline=0)
    assert spec.env["WANTED"] == "yes" and "UNWANTED" not in spec.env and "ABSENT" not in spec.env


def test_every_docker_error_is_mapped() -> None:
    """Every exception class in docker.errors has an explicit entry in the mapping table."""
    classes = {
        obj for _, obj in inspect.getmembers(docker.errors, inspect.isclass)
        if issubclass(obj, Exception) and obj.__module__ == "docker.errors"
    }
    assert classes - set(DOCKER_ERROR_MAP) == set()


def test_translation_is_specific() -> None:
    """ImageNotFound and NotFound map to their own classes; connection trouble is EngineUnavailable."""
    assert isinstance(translate(docker.errors.ImageNotFound("x"), "w"), errors.ImageNotFound)
    assert isinstance(translate(docker.errors.NotFound("x"), "w"), errors.ContainerGone)
    assert isinstance(translate(requests.exceptions.ConnectionError("x"), "w"), errors.EngineUnavailable)
    assert translate(ValueError("not ours"), "w") is None


def test_only_transient_errors_retry() -> None:
    """Connection trouble and 5xx retry; 404 and 4xx do not."""
    class Resp:
        def __init__(self, code: int) -> None:
            self.status_code = code
            self.reason = "x"
            self.url = "http://docker/x"
    assert is_transient(requests.exceptions.ConnectionError())
    assert is_transient(docker.errors.APIError("boom", response=Resp(500)))
    assert not is_transient(docker.errors.APIError("bad", response=Resp(400)))
    assert not is_transient(docker.errors.NotFound("gone", response=Resp(404)))


def test_every_error_derives_from_base() -> None:
    """One hierarchy: every public error class is a DadSandboxError."""
    for _, obj in inspect.getmembers(errors, inspect.isclass):
        if obj.__module__ == "dad_sandbox.errors":
            assert issubclass(obj, errors.DadSandboxError)
    assert issubclass(errors.RunTimedOut, TimeoutError)


def test_blocking_pumps_run_in_daemon_threads() -> None:
    """A blocking engine stream runs in a daemon thread, so one that never ends cannot hold up interpreter exit."""
    import asyncio
    import threading

    import pytest

    from dad_sandbox.sandbox.engine._docker import run_in_daemon_thread

    seen: list[bool] = []

    def work() -> int:
        seen.append(threading.current_thread().daemon)
        return 7

    def fail() -> None:
        raise KeyError("boom")

    async def go() -> int:
        with pytest.raises(KeyError):
            await run_in_daemon_thread(fail, name="t-fail")
        return await run_in_daemon_thread(work, name="t-work")

    assert asyncio.run(go()) == 7 and seen == [True]
