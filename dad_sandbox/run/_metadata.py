"""``dad_metadata.json``: the record of one run, written by the host only.

The model is the contract other tools read (DESIGN.md lists the fields). It is written atomically
through :mod:`._safe_fs` so a link planted by the container cannot redirect the write, and read
back with a size bound so a planted huge file cannot exhaust memory.

Several processes may write one run's metadata: its supervisor, a later supervisor recovering it,
``gc``, a second session. :func:`status_lock` serialises their read-modify-write cycles with an
``flock`` on a host-owned file in ``.trace/`` (mode 0600: a run under another uid cannot even open
it), so the first terminal status written by any of them is the one that stays.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dad_sandbox._limits import MAX_ERROR_CHARS, MAX_METADATA_BYTES
from dad_sandbox._limits import STATUS_LOCK_TIMEOUT as LOCK_TIMEOUT
from dad_sandbox._version import __version__
from dad_sandbox.errors import RunError
from dad_sandbox.run import _safe_fs
from dad_sandbox.run._layout import METADATA_FILE, TRACE_DIR
from dad_sandbox.run._status import Reason, RunStatus

SCHEMA_VERSION = 2
#: The lock file serialising metadata writers across processes (host-only, in ``.trace/``).
LOCK_FILE = ".status.lock"


def utcnow() -> datetime:
    """Timezone-aware now, so every timestamp in metadata carries its offset."""
    return datetime.now(UTC)


class RerunInfo(BaseModel):
    """What a re-run starts from."""

    model_config = ConfigDict(extra="forbid")

    previous_run_id: str
    start_hierarchy_path: str | None = None


class OutputInfo(BaseModel):
    """What became of the container's stdout/stderr."""

    model_config = ConfigDict(extra="forbid")

    bytes_total: int = 0
    bytes_kept: int = 0
    bytes_dropped: int = 0
    bytes_written: int = 0  # bytes of logs.jsonl records written: what the output cap counts
    lines_kept: int = 0
    truncated: bool = False


class RunMetadata(BaseModel):
    """Everything the host knows about one run. ``status``/``reason`` follow DESIGN.md's vocabulary."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    #: 2: every field declared, no extras (1: extras allowed; read back leniently, see read_metadata)
    schema_version: int = SCHEMA_VERSION
    run_id: str
    root_component_id: str
    project_root: str
    status: RunStatus = RunStatus.INITIALIZED
    reason: str | None = Field(default=None, description="why it ended: a RunReason value, or signal:SIG<name> "
                               "(dad_sandbox.run.is_known_reason); None while running and for completed")
    error: str | None = None
    exit_code: int | None = None
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration_seconds: float | None = None
    execution: str | None = None
    component: str | None = None
    command: list[str] | None = None
    image: str | None = None
    image_id: str | None = None
    container_id: str | None = None
    runtime: str | None = None
    policy_name: str | None = None
    policy_hash: str | None = None
    policy: dict[str, Any] | None = None
    supervisor: dict[str, Any] | None = None
    #: the host process that set the run up (host, pid, start ticks): recovery finalizes the run
    #: when it died before a container existed
    owner: dict[str, Any] | None = None
    resources: dict[str, Any] = Field(default_factory=dict)
    output: OutputInfo | None = None
    rerun: RerunInfo | None = None
    tampering: list[str] = Field(default_factory=list, description="what the host found planted in the run dir")
    # -- where and how it ran (isolated runs)
    engine: dict[str, Any] | None = Field(default=None, description="engine name, version, API version, kernel")
    seccomp_profile: str | None = None
    seccomp_hash: str | None = Field(default=None, description="sha256 of the seccomp profile file; None: the engine's own")
    run_dir_mode: str | None = Field(default=None, description="how the run dir reached the container: 'bind' "
                                     "(the engine sees the host's files) or 'copy' (through the Engine API)")
    run_dir_copy: dict[str, Any] | None = Field(default=None, description="copy mode: bytes and seconds in and out, "
                                                "entries refused, and whether the copy back was complete")
    warm_pool_slot: str | None = None
    dispatch_seconds: float | None = Field(default=None, description="warm pool: from taking a slot to the run's start")
    # -- what the host found and did after the run
    collection: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per collected file: lines kept, "
                                                  "bad lines quarantined, bytes cut, refusal")
    egress: dict[str, Any] | None = Field(default=None, description="network = allowlist: attempts, bytes, hosts, limit hit")
    session: dict[str, Any] | None = Field(default=None, description="a session's execs and files")
    outcome_commit: str | None = None
    outcome_branch: str | None = None
    outcome_error: str | None = None
    # -- lineage
    reproduction: dict[str, Any] | None = Field(default=None, description="a re-run: the policy and image it took, and why")
    replay_of: str | None = None
    dad_sandbox_version: str = __version__

    def to_json_bytes(self) -> bytes:
        return (self.model_dump_json(indent=2) + "\n").encode()


class RecordFields(TypedDict, total=False):
    """The fields :meth:`RunContext.record` may set, typed for the checker: every field of
    :class:`RunMetadata` but the ones ``record`` owns (``status`` and ``error`` are its own arguments;
    the run id, project root, creation time and versions are set once, at ``setup_run``). A unit test keeps the two lists equal."""

    root_component_id: str  # the host's provisional id, corrected once the container names the component
    reason: Reason | None
    exit_code: int | None
    started_at: datetime | None
    completed_at: datetime | None
    duration_seconds: float | None
    execution: str | None
    component: str | None
    command: list[str] | None
    image: str | None
    image_id: str | None
    container_id: str | None
    runtime: str | None
    policy_name: str | None
    policy_hash: str | None
    policy: dict[str, Any] | None
    supervisor: dict[str, Any] | None
    owner: dict[str, Any] | None
    resources: dict[str, Any]
    output: OutputInfo | dict[str, Any] | None
    rerun: RerunInfo | dict[str, Any] | None
    tampering: list[str]
    engine: dict[str, Any] | None
    seccomp_profile: str | None
    seccomp_hash: str | None
    warm_pool_slot: str | None
    dispatch_seconds: float | None
    collection: dict[str, dict[str, Any]]
    egress: dict[str, Any] | None
    run_dir_mode: str | None
    run_dir_copy: dict[str, Any] | None
    session: dict[str, Any] | None
    outcome_commit: str | None
    outcome_branch: str | None
    outcome_error: str | None
    reproduction: dict[str, Any] | None
    replay_of: str | None


#: Fields ``record`` never sets: the run's identity and contract versions (written at setup) and its own arguments.
NOT_RECORDED = frozenset({"schema_version", "run_id", "project_root", "created_at",
                          "dad_sandbox_version", "status", "error"})


def clip_error(message: str | None) -> str | None:
    """Cap an error message so an agent printing megabytes of traceback cannot bloat metadata."""
    if message is None or len(message) <= MAX_ERROR_CHARS:
        return message
    half = MAX_ERROR_CHARS // 2
    return f"{message[:half]}\n… [{len(message) - MAX_ERROR_CHARS} characters cut] …\n{message[-half:]}"


def write_metadata(run_dir: Path, metadata: RunMetadata) -> None:
    """Atomically (re)write ``.trace/dad_metadata.json`` without following links.

    Only a terminal status is fsynced: it is the record that must survive a host crash, while the
    intermediate states are rewritten within the second anyway.
    """
    with _safe_fs.opened_dir(run_dir, TRACE_DIR) as fd:
        _safe_fs.write_atomic(fd, METADATA_FILE, metadata.to_json_bytes(), durable=metadata.status.is_terminal)


@contextlib.contextmanager
def status_lock(run_dir: Path, *, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold the run's metadata lock: an exclusive ``flock`` on ``.trace/.status.lock``.

    Why a bounded wait instead of a blocking ``flock``: a process that hangs while holding the lock
    (or a run that somehow got hold of it) must not hang every supervisor of the run forever.

    Raises:
        RunError: the lock was held by someone else for more than ``timeout`` seconds.
        UnsafePathError: the lock file is a link, FIFO or other non-regular file.
    """
    with _safe_fs.opened_dir(run_dir, TRACE_DIR) as dir_fd:
        fd = _safe_fs.open_append(dir_fd, LOCK_FILE, mode=0o600)
    try:
        end = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN) or time.monotonic() >= end:
                    raise RunError(
                        f"could not lock {run_dir / TRACE_DIR / LOCK_FILE} within {timeout:g}s: {exc}; "
                        "another process holds it - if none should, remove the file"
                    ) from exc
                time.sleep(0.005)
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the flock


def read_metadata(run_dir: Path) -> RunMetadata:
    """Read and validate ``.trace/dad_metadata.json`` of a run directory.

    Raises:
        RunError: the file is missing, too large, not JSON, or not metadata.
        UnsafePathError: it is a link, FIFO or other non-regular file.
    """
    try:
        with _safe_fs.opened_dir(run_dir, TRACE_DIR) as fd:
            data, truncated = _safe_fs.read_bounded(fd, METADATA_FILE, MAX_METADATA_BYTES)
    except FileNotFoundError as exc:
        raise RunError(f"{run_dir} has no {TRACE_DIR}/{METADATA_FILE}: it is not a run directory") from exc
    if truncated:
        raise RunError(f"{run_dir / TRACE_DIR / METADATA_FILE} is larger than {MAX_METADATA_BYTES} bytes")
    try:
        raw = json.loads(data)
        if isinstance(raw, dict) and raw.get("schema_version", 1) < SCHEMA_VERSION:
            raw = {k: v for k, v in raw.items() if k in RunMetadata.model_fields}  # written before the contract closed
        return RunMetadata.model_validate(raw)
    except (ValueError, ValidationError) as exc:
        raise RunError(f"{run_dir / TRACE_DIR / METADATA_FILE} is not valid run metadata: {exc}") from exc


def metadata_schema() -> dict[str, Any]:
    """The JSON Schema of ``dad_metadata.json`` (published as docs/dad_metadata.schema.json)."""
    return RunMetadata.model_json_schema()
