"""What every engine-backed test folder's conftest shares: CI detection, folder markers, skip-or-fail."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: Under CI=true a suite that cannot run fails instead of skipping: a green CI must mean it ran.
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def mark_folder(items: list[pytest.Item], conftest_file: str, marker: pytest.MarkDecorator) -> None:
    """Put ``marker`` on every collected test below the folder of ``conftest_file``."""
    here = Path(conftest_file).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(marker)


def skip_or_fail(reason: str, *, must_run: str) -> None:
    """Skip the test for ``reason``; under CI=true fail it, saying why it ``must_run``."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: {must_run})")
    pytest.skip(reason)


#: This checkout (the project root of the examples, and the home of the venv's interpreter).
CHECKOUT = Path(__file__).resolve().parents[1]


def closed_to_others(path: Path = CHECKOUT) -> Path | None:
    """The first folder on the way to ``path`` that other users cannot enter (no o+x), or None.

    Why: some cases run this checkout's code as another uid (the non-root host user, or the run
    user 65534 reading the project). From a checkout inside a 0700 folder (``mktemp -d``, pytest's
    temp root) they cannot even start: that is where the checkout lies, not a defect to report, so
    those cases skip with the folder named instead of failing.
    """
    resolved = path.resolve()
    for folder in (*reversed(resolved.parents), resolved):
        try:
            if not folder.stat().st_mode & 0o001:
                return folder
        except OSError:
            return folder
    return None
