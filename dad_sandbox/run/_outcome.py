"""The outcome repository: one git branch ``run/<run_id>`` per run, one commit holding its outcomes.

``runs/outcome/<project_name>/`` is a git repository whose ``main`` holds only an initial empty
commit and is never checked out or changed. Each run's outcomes (every node's ``outcome.json``,
the files its file nodes marked as outcomes, and a ``RUN.json`` summary) are written as objects
straight into the object database - no index, no working tree - so 20 runs committing at once
never contend for ``.git/index.lock``; each only creates its own ref. Files come from the run dir, which untrusted
code wrote: links, FIFOs and oversized files are skipped (and listed in the summary), never followed.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import git
from git.objects.fun import tree_to_stream
from gitdb import IStream, LooseObjectDB
from gitdb.util import hex_to_bin

from dad_sandbox._limits import OUTCOME_STAGE_BUDGET_SECONDS as STAGE_BUDGET_SECONDS
from dad_sandbox.errors import RunError, UnsafePathError
from dad_sandbox.run import _hostile, _safe_fs
from dad_sandbox.run._layout import ELEMENT_ID_RE, STATIC_INPUTS_DIR

MAX_FILE_BYTES = 16 << 20
#: One node's outcome.json (a small JSON document; its declared files may be larger).
MAX_OUTCOME_JSON_BYTES = 1 << 20
#: Bytes read from the run dir while staging, kept or not (so junk costs bounded I/O and CPU).
MAX_READ_BYTES = 128 << 20
#: All outcome files of one run together (a run cannot make the host compress gigabytes).
MAX_TOTAL_BYTES = 64 << 20
MAX_FILES = 10_000
#: Folders examined and nesting followed while looking for outcome.json files.
MAX_WALK_ENTRIES = 200_000
MAX_DEPTH = 64
#: Declared outcome files looked at per outcome.json, and skipped entries listed in RUN.json.
MAX_DECLARED = 1_000
MAX_SKIPPED = 100
_ACTOR = git.Actor("dad-sandbox", "dad-sandbox@localhost")
_IDENTITY = {
    "GIT_AUTHOR_NAME": "dad-sandbox",
    "GIT_AUTHOR_EMAIL": "dad-sandbox@localhost",
    "GIT_COMMITTER_NAME": "dad-sandbox",
    "GIT_COMMITTER_EMAIL": "dad-sandbox@localhost",
}


class _Skipped(list[str]):
    """What staging left out, listed up to :data:`MAX_SKIPPED` entries, then only counted."""

    def __init__(self) -> None:
        super().__init__()
        self.more = 0

    def append(self, item: str) -> None:
        if len(self) < MAX_SKIPPED:
            super().append(item[:500])
        else:
            self.more += 1


@dataclass(slots=True)
class _Staged:
    files: int = 0
    bytes: int = 0
    read: int = 0
    skipped: _Skipped = field(default_factory=_Skipped)


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
            return git.Repo(self.repo_dir, odbt=LooseObjectDB)
        with self._init_lock():
            if marker.exists():
                return git.Repo(self.repo_dir, odbt=LooseObjectDB)
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

        Objects are written through GitPython's object database (no git process per run), and the
        branch is created only if it does not exist - never moved.

        Raises:
            RunError: the repository could not be written.
        """
        repo = self.ensure()
        if (Path(repo.git_dir) / "refs" / "heads" / branch_name(run_id)).exists():
            return None  # committed before: idempotent
        try:
            tree = _TreeBuilder(repo)
            staged = _stage_outcomes(run_dir, tree)
            run_info = {"run_id": run_id, "status": status, **(summary or {}),
                        "outcome_files": staged.files, "skipped": list(staged.skipped),
                        "skipped_not_listed": staged.skipped.more}
            tree.add(PurePosixPath("RUN.json"), (json.dumps(run_info, indent=2, sort_keys=True, default=str) + "\n").encode())
            # the parent by its sha only: nothing of main's object is read (it may be packed)
            main = git.Commit(repo, hex_to_bin(git.SymbolicReference.dereference_recursive(repo, "refs/heads/main")))
            commit = git.Commit.create_from_tree(repo, git.Tree(repo, tree.write()), f"[{run_id}] Run {status}",
                                                 parent_commits=[main],
                                                 head=False, author=_ACTOR, committer=_ACTOR)
            git.Head.create(repo, branch_name(run_id), commit)
        except FileExistsError:
            return None
        except (OSError, ValueError, git.GitError) as exc:
            raise RunError(f"could not commit the outcomes of {run_id} into {self.repo_dir}: {exc}") from exc
        return str(commit.hexsha)

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


class _TreeBuilder:
    """Nested git trees built in memory from blobs written straight to the object database."""

    def __init__(self, repo: git.Repo) -> None:
        self._repo = repo
        self._entries: dict[str, bytes | _TreeBuilder] = {}

    def _store(self, kind: str, data: bytes) -> bytes:
        return self._repo.odb.store(IStream(kind, len(data), io.BytesIO(data))).binsha

    def add(self, path: PurePosixPath, data: bytes) -> None:
        node = self
        for part in path.parts[:-1]:
            child = node._entries.setdefault(part, _TreeBuilder(self._repo))
            if not isinstance(child, _TreeBuilder):
                raise ValueError(f"{path}: {part} is both a file and a folder")
            node = child
        node._entries[path.parts[-1]] = self._store("blob", data)

    def write(self) -> bytes:
        """Write this tree (and its subtrees); return its binary sha."""
        entries = []
        for name, value in self._entries.items():
            if isinstance(value, _TreeBuilder):
                entries.append((value.write(), 0o040000, name))
            else:
                entries.append((value, 0o100644, name))
        # git orders tree entries by name, comparing a folder as if its name ended in "/"
        entries.sort(key=lambda e: e[2] + "/" if e[1] == 0o040000 else e[2])
        buf = io.BytesIO()
        tree_to_stream(entries, buf.write)
        return self._store("tree", buf.getvalue())


def _devnull() -> Any:
    return open(os.devnull, "rb")


def _safe_name(name: str) -> bool:
    """A path part we are willing to put in a git tree: UTF-8, printable, not special, not too long."""
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return 0 < len(encoded) <= 255 and name not in (".", "..", ".git") and name.isprintable() and "/" not in name


def _walk_node_dirs(run_dir: Path, deadline: float) -> Iterator[tuple[tuple[str, ...], int, list[str]]]:
    """``(rel_parts, dir_fd, file_names)`` of every node folder, depth-first, without following links.

    Node folders are named by element ids, so only such names are descended (the host's and the
    runner's dot-folders and ``static_inputs`` are not). One descriptor is open per level of the
    current path (never one per folder seen), and depth, entries and time are bounded.
    """
    stack: list[tuple[tuple[str, ...], int, list[str]]] = []  # (rel, fd, sub-folders still to visit)
    entries = 0
    current: tuple[tuple[str, ...], int] | None = ((), _safe_fs.open_dir(run_dir))
    try:
        while current is not None or stack:
            if current is not None:
                rel, fd = current
                current = None
                files, dirs = [], []
                try:
                    with os.scandir(fd) as it:
                        for entry in it:
                            entries += 1
                            if entries > MAX_WALK_ENTRIES:
                                break
                            if entry.is_dir(follow_symlinks=False):
                                if ELEMENT_ID_RE.match(entry.name) and (rel or entry.name != STATIC_INPUTS_DIR):
                                    dirs.append(entry.name)
                            elif entry.name == "outcome.json":
                                files.append(entry.name)
                except OSError:
                    dirs = []
                stack.append((rel, fd, dirs if len(rel) < MAX_DEPTH else []))
                yield rel, fd, files
            if time.monotonic() > deadline or entries > MAX_WALK_ENTRIES:
                return
            rel, fd, todo = stack[-1]
            if not todo:
                os.close(fd)
                stack.pop()
                continue
            name = todo.pop()
            try:
                current = ((*rel, name), _safe_fs.open_dir(fd, name))
            except (OSError, UnsafePathError):
                continue
    finally:
        if current is not None:
            os.close(current[1])
        for _, fd, _ in stack:
            os.close(fd)


def _stage_outcomes(run_dir: Path, staging: _TreeBuilder) -> _Staged:
    """Add outcome.json files and declared outcome files to ``staging`` (bounded, total, no links).

    Whatever the run wrote, this never raises for it: a bad file is skipped and listed, and the
    good ones are committed.
    """
    staged = _Staged()
    deadline = time.monotonic() + STAGE_BUDGET_SECONDS
    for rel, fd, files in _walk_node_dirs(run_dir, deadline):
        if not files:
            continue
        where = "/".join(rel) or "."
        if (staged.bytes >= MAX_TOTAL_BYTES or staged.files >= MAX_FILES or staged.read >= MAX_READ_BYTES
                or time.monotonic() > deadline):
            staged.skipped.append(f"{where}/outcome.json: outcome size, count or time limit reached")
            continue
        try:
            data, cut = _safe_fs.read_bounded(fd, "outcome.json", min(MAX_OUTCOME_JSON_BYTES, MAX_TOTAL_BYTES - staged.bytes))
            staged.read += len(data)
        except (OSError, UnsafePathError) as exc:
            staged.skipped.append(f"{where}/outcome.json: {exc}")
            continue
        if cut:
            staged.skipped.append(f"{where}/outcome.json: larger than the outcome limits")
            continue
        parsed = _hostile.loads_object(data)
        if isinstance(parsed, _hostile.Rejected):
            staged.skipped.append(f"{where}/outcome.json: {parsed.reason}")
            continue
        _put(staging, PurePosixPath(*rel, "outcome.json"), data, staged)
        declared = parsed.get("files") or []
        if not isinstance(declared, list):
            staged.skipped.append(f"{where}/outcome.json: 'files' is not a list")
            continue
        for name in declared[:MAX_DECLARED]:
            if time.monotonic() > deadline:
                staged.skipped.append(f"{where}: time limit reached")
                break
            if isinstance(name, dict):  # {"name": ..., "bytes": ...} as file nodes write it
                name = name.get("name")
            if not isinstance(name, str):
                staged.skipped.append(f"{where}: a declared outcome file name is not a string")
                continue
            _stage_declared(fd, rel, name, staging, staged)
    return staged


def _stage_declared(node_fd: int, rel_dir: tuple[str, ...], name: str, staging: _TreeBuilder, staged: _Staged) -> None:
    where = "/".join((*rel_dir, name[:200]))
    rel = PurePosixPath(name)
    if (rel.is_absolute() or len(rel.parts) > MAX_DEPTH or not all(_safe_name(p) for p in rel.parts)
            or rel.name == "outcome.json"):
        staged.skipped.append(f"{where}: not a plain relative file name")
        return
    if staged.bytes >= MAX_TOTAL_BYTES or staged.files >= MAX_FILES or staged.read >= MAX_READ_BYTES:
        staged.skipped.append(f"{where}: outcome size or count limit reached")
        return
    try:
        with _safe_fs.opened_dir(node_fd, rel.parent) as fd:
            data, cut = _safe_fs.read_bounded(fd, rel.name, min(MAX_FILE_BYTES, MAX_TOTAL_BYTES - staged.bytes))
            staged.read += len(data)
    except (OSError, UnsafePathError) as exc:
        staged.skipped.append(f"{where}: {exc}")
        return
    if cut:
        staged.skipped.append(f"{where}: larger than the outcome limits")
        return
    _put(staging, PurePosixPath(*rel_dir, *rel.parts), data, staged)


def _put(staging: _TreeBuilder, path: PurePosixPath, data: bytes, staged: _Staged) -> None:
    try:
        staging.add(path, data)
    except ValueError as exc:  # a name that is both a file and a folder
        staged.skipped.append(str(exc))
        return
    staged.files += 1
    staged.bytes += len(data)

