"""dad_sandbox._signals: SIGINT, SIGTERM and SIGHUP cancel a supervising process's work, whatever
dispositions it inherited."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

SCRIPT = r"""
import asyncio, sys
from dad_sandbox import _signals

async def work():
    print("ready", flush=True)
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        await asyncio.sleep(0.2)          # clean-up takes a moment; a second signal must not cut it short
        print("cleaned up", flush=True)
        raise

_signals.install()
try:
    _signals.run(work())
except _signals.Interrupted as exc:
    print("interrupted by", exc.signal_name, flush=True)
    sys.exit(6)
sys.exit(0)
"""


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a background job of a non-interactive shell


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signal_cancels_even_with_sigint_ignored_by_inheritance(sig: signal.Signals) -> None:
    """Each cancel signal cancels the coroutine, lets its clean-up finish despite a second signal,
    and ends the process with Interrupted, although SIGINT was inherited as ignored."""
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_ignore_sigint)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        t0 = time.monotonic()
        proc.send_signal(sig)
        time.sleep(0.05)
        proc.send_signal(sig)  # a second signal during clean-up is noted, not fatal
        out, err = proc.communicate(timeout=20)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 6, err
    assert "cleaned up" in out and f"interrupted by {sig.name}" in out
    assert elapsed < 10, "the signal did not end the process promptly"


def test_signal_outside_the_loop_raises_interrupted() -> None:
    """With no event loop listening, an installed handler raises Interrupted (a KeyboardInterrupt)."""
    code = (
        "import os, signal, time\n"
        "from dad_sandbox import _signals\n"
        "_signals.install()\n"
        "try:\n"
        "    os.kill(os.getpid(), signal.SIGTERM); time.sleep(5)\n"
        "except KeyboardInterrupt as exc:\n"
        "    print(type(exc).__name__, exc.signal_name)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=20,
                         preexec_fn=_ignore_sigint)
    assert res.stdout.strip() == "Interrupted SIGTERM", res.stderr
