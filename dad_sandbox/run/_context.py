"""``RunContext``: one run's identity, directory, static inputs and status, as in the DAD docs.

Pure run-system code: no container engine here. ``IsolatedExecution`` drives the same object from
the sandbox layer through the small "supervisor" methods at the end of the class.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Unpack

from pydantic import BaseModel

from dad_sandbox._logging import get_logger
from dad_sandbox.errors import RerunTargetError, RunError, RunSetupError, UnsafePathError
from dad_sandbox.run import _safe_fs
from dad_sandbox.run._env_params import RunEnvParams
from dad_sandbox.run._ids import check_run_id, new_run_id
from dad_sandbox.run._layout import (
    STATIC_INPUTS_DIR,
    STATIC_INPUTS_FILE,
    TRACE_DIR,
    RunLayout,
    check_element_id,
    make_run_dir_skeleton,
)
from dad_sandbox.run._metadata import (
    RecordFields,
    RerunInfo,
    RunMetadata,
    clip_error,
    read_metadata,
    status_lock,
    utcnow,
    write_metadata,
)
from dad_sandbox.run._owner import owner_identity
from dad_sandbox.run._static_inputs import StaticInputs
from dad_sandbox.run._status import RunStatus, combine_status

log = get_logger(__name__)

#: Fields that describe how a run ended: never set by a writer whose terminal status lost.
_ENDING_FIELDS = frozenset({"reason", "exit_code", "completed_at", "duration_seconds"})


class RunContext:
    """The context of one run: where it lives, what it is given, and how it ended.

    Args:
        root_component_id: id of the agent or flow being run (letters, digits, '_').
        project_root: the project; mounted read-only into the container.
        run_root: where run directories go; defaults to ``<project_root>/runs``.
        observability_settings: accepted for DAD compatibility; traces always go to ``.trace/``.
        previous_run_id: makes this a re-run of that run (it must exist under ``run_root``).
        start_hierarchy_path: with ``previous_run_id``, the element to start again from.
    """

    def __init__(
        self,
        root_component_id: str,
        project_root: Path | str,
        run_root: Path | str | None = None,
        observability_settings: Any = None,
        previous_run_id: str | None = None,
        start_hierarchy_path: str | None = None,
    ) -> None:
        self.root_component_id = check_element_id(root_component_id, "root component id")
        self.project_root = Path(project_root).resolve()
        if not self.project_root.is_dir():
            raise RunSetupError(f"project root {self.project_root} is not a directory")
        self.run_root = Path(run_root).resolve() if run_root is not None else self.project_root / "runs"
        self.observability_settings = observability_settings
        self.previous_run_id = previous_run_id
        if start_hierarchy_path is not None and previous_run_id is None:
            raise RerunTargetError("start_hierarchy_path needs previous_run_id: it names where to re-run from")
        self.start_hierarchy_path = start_hierarchy_path
        self.static_inputs = StaticInputs()
        self._layout: RunLayout | None = None
        self._metadata: RunMetadata | None = None
        self._adopted = False  # another process wrote the terminal status this context now carries

    # ----------------------------------------------------------------- set-up

    def setup_run(self, run_id_prefix: str | None = None, *, adopt_dir: Path | None = None) -> RunEnvParams:
        """Create the run directory, its ``.trace`` files and ``dad_metadata.json`` (``initialized``).

        ``adopt_dir``: an empty directory prepared ahead (a warm-pool slot) that is renamed into place
        as the run dir instead of making a new one; it must be on the run root's filesystem.

        Raises:
            RunSetupError: already set up, bad prefix, or the directory cannot be created.
            RerunTargetError: ``previous_run_id`` does not name an existing run under ``run_root``.
        """
        if self._layout is not None:
            raise RunSetupError(f"setup_run() was already called for run {self._layout.run_id}; make a new RunContext")
        rerun = self._check_previous_run() if self.previous_run_id else None
        run_id = new_run_id(run_id_prefix, rerun=rerun is not None)
        layout = RunLayout(self.run_root, run_id, self.project_root.name)
        try:
            self.run_root.mkdir(parents=True, exist_ok=True)
            if adopt_dir is not None:
                if layout.run_dir.exists():
                    raise FileExistsError(layout.run_dir)
                os.rename(adopt_dir, layout.run_dir)
            else:
                layout.run_dir.mkdir(mode=0o755)
        except OSError as exc:
            raise RunSetupError(f"cannot create run directory {layout.run_dir}: {exc}") from exc
        make_run_dir_skeleton(layout.run_dir)
        self._layout = layout
        self._metadata = RunMetadata(
            run_id=run_id,
            root_component_id=self.root_component_id,
            project_root=str(self.project_root),
            rerun=rerun,
            owner=owner_identity(),
        )
        self._persist()
        if self.static_inputs.keys():
            self._persist_static_inputs()
        log.info("run set up", run_id=run_id, run_dir=str(layout.run_dir))
        return self.run_env_params

    def _check_previous_run(self) -> RerunInfo:
        assert self.previous_run_id is not None
        try:
            check_run_id(self.previous_run_id)
        except RunSetupError as exc:
            raise RerunTargetError(str(exc)) from exc
        prev = self.run_root / self.previous_run_id
        if not prev.is_dir():
            raise RerunTargetError(
                f"previous run {self.previous_run_id!r} not found: {prev} does not exist; "
                f"list runs under {self.run_root} and pass one of their ids"
            )
        try:
            read_metadata(prev)
        except RunError as exc:
            raise RerunTargetError(f"previous run {self.previous_run_id!r} cannot be read: {exc}") from exc
        return RerunInfo(previous_run_id=self.previous_run_id, start_hierarchy_path=self.start_hierarchy_path)

    # ----------------------------------------------------------------- paths

    @property
    def is_set_up(self) -> bool:
        return self._layout is not None

    @property
    def layout(self) -> RunLayout:
        if self._layout is None:
            raise RunSetupError("this RunContext is not set up yet: call setup_run() first")
        return self._layout

    @property
    def run_id(self) -> str:
        return self.layout.run_id

    @property
    def run_dir(self) -> Path:
        return self.layout.run_dir

    @property
    def trace_dir(self) -> Path:
        return self.layout.trace_dir

    @property
    def previous_run_dir(self) -> Path | None:
        return self.run_root / self.previous_run_id if self.previous_run_id else None

    @property
    def run_env_params(self) -> RunEnvParams:
        layout = self.layout
        return RunEnvParams(
            run_id=layout.run_id,
            run_dir=layout.run_dir,
            run_root=layout.run_root,
            trace_dir=layout.trace_dir,
            outcome_repo_dir=layout.outcome_repo_dir,
        )

    @property
    def metadata(self) -> RunMetadata:
        """A copy of the run's metadata as the host knows it (authoritative, not re-read from disk)."""
        if self._metadata is None:
            raise RunSetupError("this RunContext is not set up yet: call setup_run() first")
        return self._metadata.model_copy(deep=True)

    # ----------------------------------------------------------------- static inputs

    def register_node_static_input(self, node_id: str, input_value: BaseModel | dict[str, Any]) -> None:
        """Give a node (by id or full hierarchy path) a static input; saved into the run dir."""
        for segment in node_id.split("."):
            check_element_id(segment, "node id")
        self.static_inputs.register(node_id, input_value)
        if self._layout is not None:
            self._persist_static_inputs()

    def read_static_inputs(self) -> dict[str, dict[str, Any]]:
        """Load ``static_inputs/static_inputs.json`` (values registered in code win); return all values.

        Raises:
            StaticInputsError: the file is not valid JSON or not an object of objects.
        """
        self.static_inputs.load_file(self.layout.static_inputs_file)
        self._persist_static_inputs()
        return {k: dict(self.static_inputs.raw(k) or {}) for k in self.static_inputs.keys()}

    def _persist_static_inputs(self) -> None:
        with _safe_fs.opened_dir(self.layout.run_dir, STATIC_INPUTS_DIR, create=True) as fd:
            _safe_fs.write_atomic(fd, STATIC_INPUTS_FILE, self.static_inputs.to_json_bytes())

    # ----------------------------------------------------------------- completion

    def complete_run(self, status: str | RunStatus = RunStatus.COMPLETED, error_msg: str | None = None) -> RunMetadata:
        """Record how the run ended; synchronous and idempotent.

        The first terminal status wins: if the supervisor already wrote ``timed_out``, the run stays
        ``timed_out`` and ``error_msg`` is added to its error. ``error_msg`` is always kept.

        Raises:
            RunError: ``status`` is not a terminal status.
        """
        try:
            requested = RunStatus(status)
        except ValueError as exc:
            allowed = ", ".join(s.value for s in RunStatus if s.is_terminal)
            raise RunError(f"complete_run(status={status!r}): allowed statuses are {allowed}") from exc
        if not requested.is_terminal:
            raise RunError(f"complete_run(status={status!r}) needs a terminal status such as 'completed' or 'failed'")
        md = self._require_metadata()
        if md.status.is_terminal and md.status != requested:
            log.info("complete_run keeps the status already recorded", run_id=md.run_id, kept=md.status, requested=requested)
        self.record(status=requested, error=error_msg)
        if md.execution == "in_process" and not getattr(self._metadata, "outcome_commit", None):
            self.commit_outcomes()
        return self.metadata

    def commit_outcomes(self) -> str | None:
        """Commit this run's outcomes on branch ``run/<run_id>`` of the outcome repository.

        Never raises: a git failure is logged and recorded as ``outcome_error`` in the metadata,
        because losing the outcome commit must not change how the run ended.
        """
        from dad_sandbox.run._outcome import OutcomeRepository

        md = self._require_metadata()
        summary = {"reason": md.reason, "component": md.component, "command": md.command,
                   "duration_seconds": md.duration_seconds, "previous_run_id": self.previous_run_id}
        try:
            sha = OutcomeRepository(self.layout.outcome_repo_dir).commit_run(self.run_dir, md.run_id, md.status.value, summary)
        except (RunError, OSError) as exc:
            log.error("could not commit the run's outcomes", run_id=md.run_id, error=str(exc))
            self.record(outcome_error=str(exc))
            return None
        if sha:
            self.record(outcome_commit=sha, outcome_branch=f"run/{md.run_id}")
        return sha

    # ----------------------------------------------------------------- supervisor API

    def record(
        self,
        *,
        status: RunStatus | None = None,
        error: str | None = None,
        **fields: Unpack[RecordFields],
    ) -> RunMetadata:
        """Update the metadata and write it. Used by runners and the sandbox supervisor.

        ``status`` goes through :func:`combine_status` (first terminal status wins); ``error`` is
        appended to an existing different error rather than replacing it; other ``fields`` are set.

        The read-modify-write runs under the run's metadata lock and starts from what is on disk, so
        the first terminal status wins across processes too: when another process (recovery,
        ``gc``, a second session) already ended the run, its status, reason, exit code and times
        stay; this call only adds its error text and fills fields still empty.
        """
        self._require_metadata()
        unknown = sorted(set(fields) - set(RunMetadata.model_fields))
        if unknown:  # a programming error: the metadata contract is closed (docs/dad_metadata.schema.json)
            raise RunError(f"not run metadata fields: {', '.join(unknown)}; declare them in RunMetadata first")
        with self._locked():
            md = self._adopt_final_from_disk()
            lost = md.status.is_terminal and status is not None and status.is_terminal and status != md.status
            updates: dict[str, Any] = dict(fields)
            if lost or (md.status.is_terminal and status is not None and self._adopted):
                updates = {k: v for k, v in updates.items()
                           if k not in _ENDING_FIELDS and getattr(md, k, None) in (None, {}, [])}
            if status is not None:
                new_status = combine_status(md.status, status)
                if new_status != md.status:
                    updates["status"] = new_status
                    if new_status == RunStatus.RUNNING and md.started_at is None and "started_at" not in updates:
                        updates["started_at"] = utcnow()
                    if new_status.is_terminal:
                        completed: datetime = updates.get("completed_at") or utcnow()
                        updates["completed_at"] = completed
                        start = updates.get("started_at") or md.started_at or md.created_at
                        updates.setdefault("duration_seconds", round((completed - start).total_seconds(), 6))
            if error:
                if md.error is None:
                    updates["error"] = clip_error(error)
                elif error not in md.error:
                    updates["error"] = clip_error(f"{md.error}\n{error}")
            self._metadata = md.model_copy(update=updates)
            # model_copy skips validation; re-validate so a bad field fails here, not in a reader.
            self._metadata = RunMetadata.model_validate(self._metadata.model_dump())
            self._persist()
        return self.metadata

    def _adopt_final_from_disk(self) -> RunMetadata:
        """The metadata to update: ours, unless another process has ended the run meanwhile.

        Called under the lock. Only a terminal status on disk that we do not know about is adopted;
        an unreadable file (the run tampered with it, a crash mid-write of an old version) is
        ignored, and our own copy is written over it.
        """
        md = self._require_metadata()
        if md.status.is_terminal:
            return md
        try:
            disk = read_metadata(self.layout.run_dir)
        except (RunError, UnsafePathError, OSError):
            return md
        if disk.run_id != md.run_id or not disk.status.is_terminal:
            return md
        log.info("another process already ended this run; its status stays", run_id=md.run_id,
                 status=disk.status.value, reason=disk.reason)
        self._adopted = True
        return disk

    def _require_metadata(self) -> RunMetadata:
        if self._metadata is None:
            raise RunSetupError("this RunContext is not set up yet: call setup_run() first")
        return self._metadata

    def _persist(self) -> None:
        """Write the metadata; if the run replaced ``.trace`` with a link or file, move that aside first.

        The host owns ``.trace``: a planted entry is never followed, only renamed out of the way and
        recorded under ``tampering``.
        """
        assert self._metadata is not None
        try:
            write_metadata(self.layout.run_dir, self._metadata)
        except (UnsafePathError, FileNotFoundError):
            self._restore_trace_dir()
            write_metadata(self.layout.run_dir, self._metadata)

    def _restore_trace_dir(self) -> None:
        """Move a planted ``.trace`` aside (or make a removed one again) and note it under ``tampering``."""
        assert self._metadata is not None
        aside = _safe_fs.ensure_plain_dir(self.layout.run_dir, TRACE_DIR)
        note = (
            f"{TRACE_DIR}/ was replaced by the run; the host moved it aside to {aside} and made a new one"
            if aside else f"{TRACE_DIR}/ was removed by the run; the host made a new one"
        )
        log.warning("run dir tampering", run_id=self._metadata.run_id, detail=note)
        self._metadata = self._metadata.model_copy(update={"tampering": [*self._metadata.tampering, note]})

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The run's metadata lock, after making ``.trace`` a plain directory again if the run replaced it."""
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(status_lock(self.layout.run_dir))
            except (UnsafePathError, FileNotFoundError):
                self._restore_trace_dir()
                stack.enter_context(status_lock(self.layout.run_dir))
            yield

    @classmethod
    def open_existing(cls, run_dir: Path | str) -> RunContext:
        """Re-open a run set up earlier (possibly by another process) on the host, e.g. to recover it.

        Raises:
            RunError: the directory holds no readable run metadata.
        """
        run_dir = Path(run_dir).resolve()
        md = read_metadata(run_dir)
        if md.run_id != run_dir.name:
            raise RunError(f"{run_dir} holds metadata of run {md.run_id!r}; the directory and its run id disagree")
        ctx = cls(md.root_component_id, md.project_root, run_root=run_dir.parent)
        ctx._layout = RunLayout(run_dir.parent, md.run_id, Path(md.project_root).name)
        ctx._metadata = md
        ctx.static_inputs.load_file(ctx._layout.static_inputs_file)
        return ctx

    @classmethod
    def attach(
        cls,
        env: RunEnvParams,
        root_component_id: str,
        project_root: Path | str,
        *,
        previous_run_id: str | None = None,
        start_hierarchy_path: str | None = None,
    ) -> RunContext:
        """Rebuild a context for an existing run dir (inside the container), without creating anything.

        The container never writes ``dad_metadata.json``; an attached context only reads paths and
        static inputs.
        """
        ctx = cls(root_component_id, project_root, run_root=env.run_root, previous_run_id=previous_run_id,
                  start_hierarchy_path=start_hierarchy_path)
        run_dir = Path(env.run_dir)
        if run_dir.parent != Path(env.run_root):
            raise RunSetupError(f"run dir {env.run_dir} is not inside run root {env.run_root}")
        dir_name = run_dir.name if run_dir.name != env.run_id else None
        trace_dir = Path(env.trace_dir)
        trace_dir_name = trace_dir.name if trace_dir.parent == run_dir else TRACE_DIR
        layout = RunLayout(Path(env.run_root), env.run_id, Path(env.outcome_repo_dir).name, dir_name, trace_dir_name)
        ctx._layout = layout
        ctx.static_inputs.load_file(Path(env.run_dir) / STATIC_INPUTS_DIR / STATIC_INPUTS_FILE)
        return ctx

    def __repr__(self) -> str:
        run = self._layout.run_id if self._layout else "not set up"
        return f"RunContext(root_component_id={self.root_component_id!r}, run={run})"
