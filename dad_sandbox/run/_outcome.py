"""The outcome repository: one git branch ``run/<run_id>`` per run, one commit holding its outcomes.

``runs/outcome/<project_name>/`` is a git repository whose ``main`` holds only an initial empty
commit and is never checked out or changed. Each run's outcomes (every node's ``outcome.json``,
the files its file nodes marked as outcomes, and a ``RUN.json`` summary) are committed with
plumbing commands through a private index file, so 20 runs committing at once never contend for
``.git/index.lock``; each only creates its own ref. Files come from the run dir, which untrusted
code wrote: links, FIFOs and oversized files are skipped (and listed in the summary), never followed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import git

from dad_sandbox.errors import RunError, UnsafePathError
from dad_sandbox.run import _safe_fs
from dad_sandbox.run._layout import STATIC_INPUTS_DIR, TRACE_DIR

MAX_FILE_BYTES = 16 << 20
MAX_TOTAL_BYTES = 256 << 20
MAX_FILES = 10_000
_IDENTITY = {
    "GIT_AUTHOR_NAME": "dad-sandbox",
    "GIT_AUTHOR_EMAIL": "dad-sandbox@localhost",
    "GIT_COMMITTER_NAME": "dad-sandbox",
    "GIT_COMMITTER_EMAIL": "dad-sandbox@localhost",
}


@dataclass(slots=True)
class _Staged:
    files: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)


def branch_name(run_id: str) -> str:
    return f"run/{run_id}"


class OutcomeRepository:
    """The git repository of outcomes for one project."""

    def __init__(self, repo_dir: Path) -> None:
        self.repo_dir = Path(repo_dir)

    @contextlib.contextmanager
    def _init_lock(self) -> Iterator[None]:
        self.repo_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(self.repo_dir.parent / f".{self.repo_dir.name}.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def ensure(self) -> git.Repo:
        """Open the repository, creating it (with an empty initial commit on ``main``) if needed."""
        marker = self.repo_dir / ".git" / "dad-sandbox-initialized"  # written last: the repo is complete
        if marker.exists():
            return git.Repo(self.repo_dir)
        with self._init_lock():
            if marker.exists():
                return git.Repo(self.repo_dir)
            if (self.repo_dir / ".git").exists():
                shutil.rmtree(self.repo_dir / ".git")  # a half-made repository from an interrupted init
            repo = git.Repo.init(self.repo_dir, initial_branch="main")
            empty_tree = repo.git.execute(["git", "hash-object", "-t", "tree", "-w", "--stdin"], istream=_devnull())
            commit = repo.git.execute(["git", "commit-tree", empty_tree, "-m", "Initialize outcome repository"],
                                      env={**os.environ, **_IDENTITY})
            repo.git.execute(["git", "update-ref", "refs/heads/main", commit])
            marker.write_text("1\n")
            return repo

    def commit_run(self, run_dir: Path, run_id: str, status: str, summary: dict[str, Any] | None = None) -> str | None:
        """Commit the run's outcomes on branch ``run/<run_id>``; the commit sha, or None if it exists.

        Raises:
            RunError: git failed.
        """
        repo = self.ensure()
        ref = f"refs/heads/{branch_name(run_id)}"
        try:
            repo.git.execute(["git", "rev-parse", "--verify", "--quiet", ref])
            return None  # committed before: idempotent
        except git.GitCommandError:
            pass
        with tempfile.TemporaryDirectory(prefix="dad-outcome-") as tmp:
            staging = Path(tmp) / "tree"
            staging.mkdir()
            staged = _stage_outcomes(run_dir, staging)
            run_info = {"run_id": run_id, "status": status, **(summary or {}),
                        "outcome_files": staged.files, "skipped": staged.skipped}
            (staging / "RUN.json").write_text(json.dumps(run_info, indent=2, sort_keys=True, default=str) + "\n")
            env = {**os.environ, **_IDENTITY, "GIT_INDEX_FILE": str(Path(tmp) / "index"),
                   "GIT_WORK_TREE": str(staging)}
            try:
                repo.git.execute(["git", "--work-tree", str(staging), "add", "-A", str(staging)], env=env)
                tree = repo.git.execute(["git", "write-tree"], env=env)
                commit = repo.git.execute(
                    ["git", "commit-tree", tree, "-p", "refs/heads/main", "-m", f"[{run_id}] Run {status}"], env=env
                )
                # "" as old value: create only; never moves a branch another process made
                repo.git.execute(["git", "update-ref", ref, commit, ""])
            except git.GitCommandError as exc:
                raise RunError(f"could not commit the outcomes of {run_id} into {self.repo_dir}: {exc}") from exc
        return commit

    def diff(self, run_a: str, run_b: str, *, stat_only: bool = False) -> str:
        """``git diff`` between two runs' outcome commits.

        Raises:
            RunError: one of the runs has no outcome commit.
        """
        repo = self.ensure()
        for run_id in (run_a, run_b):
            try:
                repo.git.execute(["git", "rev-parse", "--verify", "--quiet", f"refs/heads/{branch_name(run_id)}"])
            except git.GitCommandError as exc:
                raise RunError(f"run {run_id} has no outcome commit in {self.repo_dir}") from exc
        args = ["--stat"] if stat_only else ["--stat", "-p"]
        return repo.git.execute(["git", "diff", *args, branch_name(run_a), branch_name(run_b), "--"])

    def changed_files(self, run_a: str, run_b: str) -> list[dict[str, str]]:
        """``[{"status": "M", "path": …}, …]`` between two runs."""
        self.diff(run_a, run_b, stat_only=True)  # validates both refs
        repo = self.ensure()
        out = repo.git.execute(["git", "diff", "--name-status", branch_name(run_a), branch_name(run_b), "--"])
        rows = []
        for line in out.splitlines():
            status, _, path = line.partition("\t")
            rows.append({"status": status, "path": path})
        return rows


def _devnull() -> Any:
    return open(os.devnull, "rb")  # noqa: SIM115 - GitPython reads and closes it


def _stage_outcomes(run_dir: Path, staging: Path) -> _Staged:
    """Copy outcome.json files and declared outcome files into ``staging`` (bounded, no links)."""
    staged = _Staged()
    for dirpath, dirnames, filenames in os.walk(run_dir, followlinks=False):
        rel_dir = Path(dirpath).relative_to(run_dir)
        if rel_dir == Path("."):
            dirnames[:] = [d for d in dirnames if d not in (TRACE_DIR, STATIC_INPUTS_DIR) and not d.startswith(".")]
        if "outcome.json" not in filenames:
            continue
        try:
            with _safe_fs.opened_dir(run_dir, rel_dir) as fd:
                data, cut = _safe_fs.read_bounded(fd, "outcome.json", MAX_FILE_BYTES)
                if cut:
                    staged.skipped.append(f"{rel_dir}/outcome.json: larger than {MAX_FILE_BYTES} bytes")
                    continue
                _put(staging / rel_dir / "outcome.json", data, staged)
                try:
                    declared = json.loads(data).get("files") or []
                except (ValueError, AttributeError):
                    declared = []
                for name in declared[:MAX_FILES]:
                    _stage_declared(fd, rel_dir, str(name), staging, staged)
        except (OSError, UnsafePathError) as exc:
            staged.skipped.append(f"{rel_dir}: {exc}")
    return staged


def _stage_declared(node_fd: int, rel_dir: Path, name: str, staging: Path, staged: _Staged) -> None:
    where = f"{rel_dir}/{name}"
    rel = PurePosixPath(name)
    if rel.is_absolute() or any(p in ("..", "") for p in rel.parts) or rel.name in ("outcome.json",):
        staged.skipped.append(f"{where}: not a plain relative file name")
        return
    if staged.bytes >= MAX_TOTAL_BYTES or staged.files >= MAX_FILES:
        staged.skipped.append(f"{where}: outcome size or count limit reached")
        return
    try:
        with _safe_fs.opened_dir(node_fd, rel.parent) as fd:
            data, cut = _safe_fs.read_bounded(fd, rel.name, MAX_FILE_BYTES)
    except (OSError, UnsafePathError) as exc:
        staged.skipped.append(f"{where}: {exc}")
        return
    if cut:
        staged.skipped.append(f"{where}: larger than {MAX_FILE_BYTES} bytes")
        return
    _put(staging / rel_dir / rel.parent / rel.name, data, staged)


def _put(path: Path, data: bytes, staged: _Staged) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    staged.files += 1
    staged.bytes += len(data)

