"""Does the engine see the host's files? Decided by a probe, never by the shape of ``DOCKER_HOST``.

A ``tcp://`` engine may run on this very host, and a unix socket may lead to a VM (Docker Desktop)
or to a dockerd in a container with a filesystem of its own. So the question is asked of the engine
itself: a probe folder with a random token is made in the run root, a container is *created* (never
started) that bind-mounts it, and the token is read back through the Engine API (``get_archive``).
The engine sees the host's run root only if it hands back the same token. Any refusal of the bind
mount (the path does not exist over there, "mounts denied", …) means it does not.

The verdict is cached per engine object and run root for the life of the process.
``DAD_SANDBOX_RUN_DIR_TRANSFER=bind|copy`` skips the probe (``auto`` is the default).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import secrets
import shutil
import tarfile
import tempfile
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from dad_sandbox._logging import get_logger
from dad_sandbox._version import __version__
from dad_sandbox.errors import ContainerGone, EngineError, EngineUnavailable, ImageNotFound, PolicyError
from dad_sandbox.sandbox import _labels
from dad_sandbox.sandbox._cancel import run_to_the_end
from dad_sandbox.sandbox.engine import ContainerSpec, Engine, Mount

log = get_logger(__name__)

TransferMode = Literal["bind", "copy"]
TRANSFER_ENV = "DAD_SANDBOX_RUN_DIR_TRANSFER"
PROBE_LABEL = "dad.probe"
_PROBE_TARGET = "/dad-probe"
_TOKEN_FILE = "token"
_MAX_PROBE_ARCHIVE = 64 << 10

_verdicts: weakref.WeakKeyDictionary[Engine, dict[str, TransferMode]] = weakref.WeakKeyDictionary()


def forced_mode() -> TransferMode | None:
    """The mode set by ``DAD_SANDBOX_RUN_DIR_TRANSFER``, or None for ``auto`` (the default).

    Raises:
        PolicyError: the variable holds something else.
    """
    value = os.environ.get(TRANSFER_ENV, "auto").strip().lower() or "auto"
    if value == "auto":
        return None
    if value in ("bind", "copy"):
        return value  # type: ignore[return-value]
    raise PolicyError(f"{TRANSFER_ENV}={value!r}: use 'auto' (probe the engine), 'bind' or 'copy'")


async def transfer_mode(engine: Engine, run_root: Path, image: str) -> TransferMode:
    """``bind`` when the engine sees ``run_root`` as this host does, else ``copy``.

    An engine without copy support (``supports_copy``, e.g. the fake one) is taken as it is: bind.

    Raises:
        PolicyError: a bad ``DAD_SANDBOX_RUN_DIR_TRANSFER``, or ``copy`` for an engine that cannot.
        ImageNotFound, EngineUnavailable: the probe container could not be made at all.
    """
    forced = forced_mode()
    if not engine.supports_copy:
        if forced == "copy":
            raise PolicyError(f"{TRANSFER_ENV}=copy, but the {engine.name} engine cannot copy files in and out")
        return "bind"  # nothing to probe with, and nothing else it could do
    if forced is not None:
        return forced
    key = str(run_root)  # the run root as the caller names it (resolving it would block the loop)
    cached = _verdicts.get(engine, {}).get(key)
    if cached is not None:
        return cached
    mode: TransferMode = "bind" if await engine_sees(engine, run_root, image) else "copy"
    _verdicts.setdefault(engine, {})[key] = mode
    log.info("run dir transfer decided by probe", mode=mode, run_root=key)
    return mode


def _read_token(chunks: Iterator[bytes]) -> str | None:
    """The probe file's text from the engine's tar of it (at most 64 KiB is read)."""
    buf = bytearray()
    for chunk in chunks:
        buf += chunk
        if len(buf) > _MAX_PROBE_ARCHIVE:
            return None
    try:
        with tarfile.open(fileobj=io.BytesIO(bytes(buf)), mode="r:") as tar:
            member = tar.next()
            if member is None or not member.isfile() or member.size > 1024:
                return None
            handle = tar.extractfile(member)
            return handle.read().decode("ascii", "replace") if handle is not None else None
    except (tarfile.TarError, OSError):
        return None


async def engine_sees(engine: Engine, run_root: Path, image: str) -> bool:
    """Whether a container of ``engine`` that bind-mounts a folder of ``run_root`` sees its content.

    Raises:
        ImageNotFound, EngineUnavailable: the probe could not be made, so nothing was learnt.
    """
    token = secrets.token_hex(16)
    probe = await asyncio.to_thread(_make_probe, run_root, token)
    try:
        spec = ContainerSpec(
            # the supervisor's identity: gc removes a probe whose process died between create and remove
            image=image, command=("true",),
            labels={_labels.VERSION: __version__, PROBE_LABEL: "1", _labels.RUN_DIR: str(probe),
                    **_labels.supervisor_identity()},
            mounts=(Mount(str(probe), _PROBE_TARGET, read_only=True),), network="none", init=False,
        )
        # The create runs to its end even if we are cancelled meanwhile: a container the engine made
        # after we stopped waiting would be left behind, never started and never removed.
        create = asyncio.ensure_future(engine.create(spec))
        cancelled = await run_to_the_end(create)
        error = create.exception()
        if cancelled:
            if error is None:
                await _remove_shielded(engine, create.result())
            raise asyncio.CancelledError
        if isinstance(error, (ImageNotFound, EngineUnavailable)):
            raise error
        if isinstance(error, EngineError):
            log.info("the engine refused to bind-mount the run root: copy mode", error=str(error)[:300])
            return False
        cid = create.result()  # re-raises anything else
        try:
            seen = await engine.get_archive(cid, f"{_PROBE_TARGET}/{_TOKEN_FILE}", _read_token)
        except ContainerGone:
            return False  # the folder is not there in the engine's filesystem
        finally:
            await _remove_shielded(engine, cid)
        return seen == token
    finally:
        await asyncio.to_thread(shutil.rmtree, probe, ignore_errors=True)


def _make_probe(run_root: Path, token: str) -> Path:
    """A fresh folder in the run root holding the token (blocking)."""
    run_root.mkdir(parents=True, exist_ok=True)
    probe = Path(tempfile.mkdtemp(prefix=".dad-probe-", dir=run_root))
    probe.chmod(0o755)
    (probe / _TOKEN_FILE).write_text(token)
    return probe


async def _remove_shielded(engine: Engine, container_id: str) -> None:
    """Remove the probe container even when the caller is being cancelled (then re-raise)."""
    removal = asyncio.ensure_future(engine.remove(container_id))
    try:
        await asyncio.shield(removal)
    except asyncio.CancelledError:
        with contextlib.suppress(EngineError, asyncio.CancelledError):
            await removal
        raise
    except EngineError as exc:
        log.warning("could not remove the probe container; 'dad-sandbox gc' will", error=str(exc))
