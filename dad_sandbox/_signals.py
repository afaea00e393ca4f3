"""SIGINT, SIGTERM and SIGHUP cancel the runs of the process that supervises them.

Why this module: ``timeout``, systemd, CI cancellation and container orchestrators send SIGTERM, a
closed terminal sends SIGHUP, and a process started in the background by a non-interactive shell
inherits SIGINT *ignored* (so Python never installs its Ctrl-C handler, and ``asyncio.run`` does not
cancel on it either). Whatever dispositions were inherited, every supervising process turns these
three signals into one thing: cancel the runs (containers killed and removed, status
``cancelled``), then end.

Two entry points:

* :func:`run` replaces ``asyncio.run`` for code that supervises runs: the first of these signals
  cancels the coroutine (the supervisor's cancellation path finalizes each run); later ones are
  noted and ignored, so a second Ctrl-C cannot cut the clean-up short. It then raises
  :class:`Interrupted`, a ``KeyboardInterrupt`` carrying the signal number.
* :func:`install` sets process-wide handlers that raise :class:`Interrupted` when a signal arrives
  while no event loop of :func:`run` is listening (the CLI calls it at start).

For programs using ``Supervisor`` directly::

    from dad_sandbox import Supervisor
    from dad_sandbox._signals import run

    async def main() -> None:
        async with Supervisor(max_parallel=4) as sup:
            handles = [sup.submit(["sleep", "60"]) for _ in range(3)]
            print([(await h.wait()).status for h in handles])

    run(main())      # SIGTERM/SIGHUP/SIGINT: the runs end `cancelled`; Interrupted is raised

Programs that keep their own event loop call :func:`cancel_on_signals` with the task to cancel.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Coroutine, Iterator
from types import FrameType
from typing import Any, TypeVar

from dad_sandbox._logging import get_logger

log = get_logger(__name__)

T = TypeVar("T")

#: The signals that cancel a supervising process's runs.
CANCEL_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """A cancel signal ended the work; its runs were cancelled first.

    A ``KeyboardInterrupt`` on purpose: code that already treats Ctrl-C as "stop" treats SIGTERM
    and SIGHUP the same way.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


def install() -> None:
    """Make SIGINT, SIGTERM and SIGHUP raise :class:`Interrupted` in the main thread.

    Installed unconditionally: an inherited ``SIG_IGN`` (background job of a non-interactive shell,
    ``nohup``) must not keep a supervising process from cancelling its runs.
    """
    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set handlers (and receives signals)
    for sig in CANCEL_SIGNALS:
        signal.signal(sig, _raise_interrupted)


@contextlib.contextmanager
def cancel_on_signals(task: asyncio.Task[Any], received: list[int] | None = None) -> Iterator[list[int]]:
    """While inside, the first cancel signal cancels ``task``; later ones are logged and ignored.

    Must run in the thread of the task's event loop (the main thread). Yields the list the received
    signal numbers are appended to. On exit the previous Python-level handlers come back.
    """
    loop = task.get_loop()
    got = received if received is not None else []
    if threading.current_thread() is not threading.main_thread():
        yield got  # only the main thread receives signals; its owner decides what they do
        return
    previous = {sig: signal.getsignal(sig) for sig in CANCEL_SIGNALS}

    def on_signal(sig: signal.Signals) -> None:
        got.append(int(sig))
        if len(got) == 1:
            log.warning("signal received: cancelling the runs", signal=sig.name)
            task.cancel()
        else:
            log.warning("signal received while cancelling; the runs are being cleaned up", signal=sig.name)

    for sig in CANCEL_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        yield got
    finally:
        for sig in CANCEL_SIGNALS:
            loop.remove_signal_handler(sig)
            handler = previous[sig]
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


async def _cancellable(coro: Coroutine[Any, Any, T], received: list[int]) -> T:
    task = asyncio.current_task()
    assert task is not None
    with cancel_on_signals(task, received):
        return await coro


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coro)`` where SIGINT, SIGTERM and SIGHUP cancel ``coro``.

    Raises:
        Interrupted: a signal cancelled the coroutine (after it finished cleaning up).
    """
    received: list[int] = []
    try:
        return asyncio.run(_cancellable(coro, received))
    except asyncio.CancelledError:
        if received:
            raise Interrupted(received[0]) from None
        raise


__all__ = ["CANCEL_SIGNALS", "Interrupted", "cancel_on_signals", "install", "run"]
