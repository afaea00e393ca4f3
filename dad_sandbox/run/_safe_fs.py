"""File access inside a run directory that untrusted code may have tampered with.

Everything a container wrote is untrusted input to the host: a symlink planted at
``.trace/dad_metadata.json`` must not redirect a host write, a FIFO must not block a read, and a
huge file must not be loaded whole. Every function here works relative to a directory file
descriptor opened component by component with ``O_NOFOLLOW``, so a link swapped in at any level
is refused rather than followed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from dad_sandbox.errors import UnsafePathError
from dad_sandbox.run._handback import hand_back_tree

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def _parts(rel: str | os.PathLike[str]) -> list[str]:
    parts = [p for p in Path(rel).parts if p not in ("", ".")]
    for part in parts:
        if part == ".." or "/" in part or Path(part).is_absolute():
            raise UnsafePathError(f"path {str(rel)!r} leaves its directory; only plain relative names are allowed")
    return parts


def open_dir(base: Path | int, rel: str | os.PathLike[str] = ".", *, create: bool = False, mode: int = 0o755) -> int:
    """Open ``base/rel`` as a directory fd without following any link below ``base``.

    ``base`` itself is a host path the caller trusts (the run root or run dir it created), or an
    already opened directory fd (duplicated, not consumed).

    Raises:
        UnsafePathError: a component below ``base`` is a symlink or not a directory.
        FileNotFoundError: a component is missing and ``create`` is false.
    """
    fd = os.dup(base) if isinstance(base, int) else os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in _parts(rel):
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, mode, dir_fd=fd)
            try:
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafePathError(
                        f"{base}/{rel} is not a plain directory (a symlink or a file sits at {part!r}); "
                        "the run directory was tampered with, so the host refuses to use it"
                    ) from exc
                raise
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def opened_dir(base: Path | int, rel: str | os.PathLike[str] = ".", *, create: bool = False) -> Iterator[int]:
    """Context manager around :func:`open_dir` that closes the fd."""
    fd = open_dir(base, rel, create=create)
    try:
        yield fd
    finally:
        os.close(fd)


def _refuse(name: str, what: str) -> UnsafePathError:
    return UnsafePathError(f"{name!r} is {what}, not a regular file; the host does not follow or open it")


def write_atomic(dir_fd: int, name: str, data: bytes, *, mode: int = 0o644, durable: bool = True) -> None:
    """Write ``name`` in ``dir_fd`` atomically: temp file, fsync (if ``durable``), rename over the old name.

    The rename replaces whatever entry ``name`` is (a planted symlink is replaced, not followed).

    Raises:
        UnsafePathError: ``name`` is a directory, so it cannot be replaced.
    """
    _parts(name)
    tmp = f".{name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _FILE_NOFOLLOW, mode, dir_fd=dir_fd)
    try:
        write_all(fd, data)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except IsADirectoryError as exc:
        os.unlink(tmp, dir_fd=dir_fd)
        raise _refuse(name, "a directory") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


def _open_regular(dir_fd: int, name: str, flags: int, mode: int = 0o644) -> int:
    _parts(name)
    try:
        fd = os.open(name, flags | _FILE_NOFOLLOW, mode, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _refuse(name, "a symlink") from exc
        if exc.errno in (errno.EISDIR, errno.ENXIO):
            raise _refuse(name, "a directory or a socket") from exc
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise _refuse(name, "a FIFO or device")
    os.set_blocking(fd, True)
    return fd


def open_regular(dir_fd: int, name: str) -> int:
    """Open a regular file for reading, refusing links, FIFOs, devices and directories.

    Raises:
        UnsafePathError: ``name`` is not a regular file.
        FileNotFoundError: it does not exist.
    """
    return _open_regular(dir_fd, name, os.O_RDONLY)


def read_fd_bounded(fd: int, limit: int) -> bytes:
    """At most ``limit`` bytes from an open file, read in chunks (never more held)."""
    chunks: list[bytes] = []
    remaining = limit
    while remaining > 0:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` (``os.write`` may write less than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_bounded(dir_fd: int, name: str, limit: int) -> tuple[bytes, bool]:
    """Read at most ``limit`` bytes of a regular file; return ``(data, truncated)``.

    Raises:
        UnsafePathError: ``name`` is a symlink, FIFO, device or directory.
        FileNotFoundError: ``name`` does not exist.
    """
    fd = _open_regular(dir_fd, name, os.O_RDONLY)
    try:
        data = read_fd_bounded(fd, limit + 1)
    finally:
        os.close(fd)
    return data[:limit], len(data) > limit


def open_append(dir_fd: int, name: str, *, mode: int = 0o644) -> int:
    """Open a regular file for appending (created if missing), refusing links and FIFOs."""
    return _open_regular(dir_fd, name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, mode)


def ensure_plain_dir(base: Path, name: str, *, mode: int = 0o755) -> str | None:
    """Make ``base/name`` a real directory again if something else was planted there.

    A symlink, file or FIFO at ``name`` is renamed aside (never followed) to
    ``name.planted-<hex>`` and a fresh directory is made; returns the new name of what was found,
    or None if ``name`` was already a plain directory.
    """
    _parts(name)
    moved: str | None = None
    with opened_dir(base) as fd:
        # A run that is still alive may race us (plant again between our steps): a few rounds,
        # then give up; after the container is gone nothing races and one round always does.
        for _ in range(5):
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                try:
                    os.mkdir(name, mode, dir_fd=fd)
                    return moved
                except FileExistsError:
                    continue
            if stat.S_ISDIR(st.st_mode):
                return moved
            moved = f"{name}.planted-{secrets.token_hex(4)}"
            with contextlib.suppress(FileNotFoundError):
                os.rename(name, moved, src_dir_fd=fd, dst_dir_fd=fd)
        raise UnsafePathError(f"{base}/{name} keeps being replaced; the host gave up repairing it for now")


def lchown_tree(root: Path, uid: int, gid: int) -> int:
    """Give every entry under ``root`` (not following links) to ``uid:gid``; return how many changed.

    Also strips setuid/setgid/world-write bits: see :func:`dad_sandbox.run._handback.hand_back_tree`,
    which does the walk (fd-relative, any depth, bounded in time).
    """
    return hand_back_tree(root, uid, gid).chowned


def iter_lines(
    fd: int, *, max_line: int, budget: int, deadline: float | None = None
) -> Iterator[tuple[bytes | None, int, bool]]:
    """``(line, length, terminated)`` for each line of ``fd``, reading at most ``budget`` bytes.

    The one line reader for files a run wrote. An over-long line yields ``(None, length, …)`` and
    is never held whole in memory. A trailing line without a newline is yielded with
    ``terminated=False``. Stops early (silently) when ``deadline`` (monotonic) passes.
    """
    buf = bytearray()
    skipping = 0
    read = 0
    while read < budget:
        if deadline is not None and time.monotonic() > deadline:
            return
        chunk = os.read(fd, min(1 << 20, budget - read))
        if not chunk:
            break
        read += len(chunk)
        start = 0
        while True:
            nl = chunk.find(b"\n", start)
            piece = chunk[start:] if nl < 0 else chunk[start:nl]
            if skipping:
                skipping += len(piece)
            elif len(buf) + len(piece) > max_line:
                skipping = len(buf) + len(piece)
                buf.clear()
            else:
                buf += piece
            if nl < 0:
                break
            if skipping:
                yield None, skipping, True
                skipping = 0
            else:
                yield bytes(buf), len(buf), True
                buf.clear()
            start = nl + 1
    if skipping:
        yield None, skipping, False
    elif buf:
        yield bytes(buf), len(buf), False
