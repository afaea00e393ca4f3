"""Run ids: ``[<prefix>_]run_<YYYYmmdd_HHMMSS>_<6 hex>`` and ``rerun_…`` for a re-run.

Ids name directories, so they are restricted to characters that are safe in a path segment.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

from dad_sandbox.errors import RunSetupError

_PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
RUN_ID_RE = re.compile(
    r"^(?:(?P<prefix>[A-Za-z0-9][A-Za-z0-9_-]{0,63})_)?(?P<kind>run|rerun)_"
    r"(?P<stamp>\d{8}_\d{6})_(?P<suffix>[0-9a-f]{6})$"
)


def new_run_id(prefix: str | None = None, *, rerun: bool = False, now: datetime | None = None) -> str:
    """Make a fresh run id; ``rerun=True`` gives a ``rerun_`` id.

    Raises:
        RunSetupError: the prefix holds characters that are not safe in a directory name.
    """
    if prefix is not None and not _PREFIX_RE.match(prefix):
        raise RunSetupError(
            f"run id prefix {prefix!r} is not allowed: use 1-64 letters, digits, '_' or '-', "
            "starting with a letter or digit"
        )
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d_%H%M%S")
    kind = "rerun" if rerun else "run"
    body = f"{kind}_{stamp}_{secrets.token_hex(3)}"
    return f"{prefix}_{body}" if prefix else body


def is_valid_run_id(run_id: str) -> bool:
    """True when ``run_id`` has the shape of a run id (and so is a safe directory name)."""
    return bool(RUN_ID_RE.match(run_id))


def check_run_id(run_id: str) -> str:
    """Return ``run_id`` unchanged, or raise if it cannot name a run directory.

    Raises:
        RunSetupError: the id is not of the run id shape.
    """
    if not is_valid_run_id(run_id):
        raise RunSetupError(
            f"{run_id!r} is not a run id; run ids look like "
            "'[prefix_]run_YYYYmmdd_HHMMSS_abcdef' or 'rerun_…'"
        )
    return run_id
