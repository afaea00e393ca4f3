"""Where everything of one run lives on disk (DESIGN.md, "Run directory").

One frozen value computes every path, so no other module joins path strings by hand.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from dad_sandbox.errors import ElementIdError

TRACE_DIR = ".trace"
STATIC_INPUTS_DIR = "static_inputs"
STATIC_INPUTS_FILE = "static_inputs.json"
METADATA_FILE = "dad_metadata.json"
TRACE_FILE = "trace.jsonl"
METRICS_FILE = "metrics.jsonl"
LOGS_FILE = "logs.jsonl"
POLICY_FILE = "policy.json"
RUNNER_REPORT_FILE = "runner_report.json"
#: The one folder of ``.trace``-like files the container may write: its runner's spans and report.
#: ``.trace/`` itself and ``static_inputs/`` are mounted read-only into the container; the host
#: validates what it finds in ``.runner/`` and writes the result into ``.trace/``.
RUNNER_DIR = ".runner"
OUTCOME_DIR = "outcome"
TRACE_FILES = (TRACE_FILE, METRICS_FILE, LOGS_FILE)

ELEMENT_ID_RE = re.compile(r"^[A-Za-z0-9_]+$")


def check_element_id(element_id: str, what: str = "element id") -> str:
    """Return ``element_id`` if it can name a folder and a hierarchy segment, else raise.

    Raises:
        ElementIdError: the id is empty or holds characters other than letters, digits and '_'.
    """
    if not isinstance(element_id, str) or not ELEMENT_ID_RE.match(element_id):
        raise ElementIdError(f"{what} {element_id!r} is not allowed: use only letters, digits and '_' (regex ^[A-Za-z0-9_]+$)")
    return element_id


@dataclass(frozen=True, slots=True)
class RunLayout:
    """Paths of one run. ``run_dir`` is ``run_root/run_id`` on the host.

    Inside a pooled container the run dir was mounted before the run had an id, under the pool
    slot's name: ``dir_name`` says so there.
    """

    run_root: Path
    run_id: str
    project_name: str
    dir_name: str | None = None
    trace_dir_name: str = TRACE_DIR  # RUNNER_DIR inside a container, where .trace/ is read-only

    @property
    def run_dir(self) -> Path:
        return self.run_root / (self.dir_name or self.run_id)

    @property
    def trace_dir(self) -> Path:
        """Where this side writes spans: ``.trace/`` on the host, ``.runner/`` in a container."""
        return self.run_dir / self.trace_dir_name

    @property
    def runner_dir(self) -> Path:
        return self.run_dir / RUNNER_DIR

    @property
    def static_inputs_dir(self) -> Path:
        return self.run_dir / STATIC_INPUTS_DIR

    @property
    def static_inputs_file(self) -> Path:
        return self.static_inputs_dir / STATIC_INPUTS_FILE

    @property
    def metadata_file(self) -> Path:
        return self.run_dir / TRACE_DIR / METADATA_FILE

    @property
    def runner_report_file(self) -> Path:
        """The runner's own account of a component run, written by the container (untrusted)."""
        return self.trace_dir / RUNNER_REPORT_FILE

    @property
    def outcome_repo_dir(self) -> Path:
        return self.run_root / OUTCOME_DIR / self.project_name

    def node_dir(self, hierarchy_path: str) -> Path:
        """Folder of one element: one path segment per hierarchy segment."""
        segments = hierarchy_path.split(".")
        for seg in segments:
            check_element_id(seg, "hierarchy path segment")
        return self.run_dir.joinpath(*segments)


def make_run_dir_skeleton(run_dir: Path) -> None:
    """Create the folders and empty trace files every run dir has (the one place that does).

    ``run_dir`` must exist; nothing in it is followed if it is a link (see ``_safe_fs``).
    """
    from dad_sandbox.run import _safe_fs

    with _safe_fs.opened_dir(run_dir, TRACE_DIR, create=True) as fd:
        for name in TRACE_FILES:
            os.close(_safe_fs.open_append(fd, name))
    for folder in (STATIC_INPUTS_DIR, RUNNER_DIR):
        with _safe_fs.opened_dir(run_dir, folder, create=True):
            pass
