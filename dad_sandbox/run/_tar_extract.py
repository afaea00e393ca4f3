"""Unpacking a tar stream a run produced into a host folder, without trusting a byte of it.

Why a parser of our own rather than :mod:`tarfile`: in copy mode (an engine that does not see the
host's files) the run dir comes back as the engine's tar of the container's folder, and everything
in it is hostile input (DESIGN.md, trust boundary rule 2). ``tarfile`` reads a PAX or GNU long-name
header whole into memory whatever size it claims, follows no budget while it reads, and its
``extractall`` decides itself what to do with links and devices. Here:

* **streamed**: the archive is read block by block from an iterator of chunks; only one data
  chunk and one bounded extended header (:data:`MAX_EXTENDED_HEADER`) are ever in memory;
* **bounded while reading**: declared file sizes are checked against the byte quota *before* any
  data is read (a 10 GiB sparse file stops at its header), entries against the file count, the raw
  stream against both plus header overhead, and the whole walk against a time budget;
* **fd-relative, never following links**: every folder is opened from its parent's descriptor with
  ``O_NOFOLLOW``, so an entry below a planted symlink is refused, never written through it;
* **what it creates**: folders and regular files (owner read/write added, setuid, setgid and
  world-write stripped), and symlinks only when their target is relative and has no ``..``
  component: such a link, and any chain of them, can only point below its own folder, so nothing
  created here points out of the destination. Hard links, devices, FIFOs, absolute or ``..``
  names, links pointing elsewhere and unknown entry types are refused and reported, with their
  names escaped (a name may carry terminal escape codes);
* **total**: nothing in the archive makes it raise; it stops and says why in :class:`Extracted`.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

BLOCK = 512
#: A PAX or GNU long-name header larger than this ends the extraction (real ones hold a path or two).
MAX_EXTENDED_HEADER = 256 << 10
#: Folder levels below the destination that are created; deeper entries are refused.
MAX_DEPTH = 128
#: Refused entries described in :attr:`Extracted.refused` (the rest are only counted).
MAX_REFUSED_LISTED = 50
#: Raw bytes allowed per entry on top of its data (header, long names, padding).
HEADER_ALLOWANCE = 2 * BLOCK + MAX_EXTENDED_HEADER // 64
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_WRITE_CHUNK = 1 << 20

_REGULAR, _HARDLINK, _SYMLINK, _CHAR, _BLOCKDEV, _DIRTYPE, _FIFO, _CONTIG = b"0", b"1", b"2", b"3", b"4", b"5", b"6", b"7"
_PAX, _PAX_GLOBAL, _GNU_LONGNAME, _GNU_LONGLINK = b"x", b"g", b"L", b"K"


@dataclass(frozen=True, slots=True)
class ExtractLimits:
    """What one extraction may cost; reaching a limit stops it (see :attr:`Extracted.limit`)."""

    #: bytes of file data written (declared sizes, checked before reading)
    max_bytes: int
    #: entries (files, folders, links, refused ones too)
    max_entries: int
    #: wall-clock seconds
    budget: float = 60.0


@dataclass(slots=True)
class Extracted:
    """What an extraction did. ``limit`` is set when it stopped before the end of the archive."""

    entries: int = 0
    files: int = 0
    file_bytes: int = 0
    raw_bytes: int = 0
    skipped: int = 0  # entries under names the caller keeps (``skip_top``), not extracted on purpose
    refused_count: int = 0
    stripped: int = 0  # entries whose setuid/setgid/world-write bits were taken away
    refused: list[str] = field(default_factory=list)
    #: "disk_quota", "file_quota", "budget" or "malformed"; None: the whole archive was read
    limit: str | None = None
    problem: str | None = None

    @property
    def complete(self) -> bool:
        return self.limit is None

    def refuse(self, name: bytes, why: str) -> None:
        self.refused_count += 1
        if len(self.refused) < MAX_REFUSED_LISTED:
            self.refused.append(f"{shown(name)}: {why}")

    def stop(self, limit: str, problem: str) -> None:
        if self.limit is None:
            self.limit, self.problem = limit, problem

    def to_json(self) -> dict[str, object]:
        return {
            "entries": self.entries, "files": self.files, "bytes": self.file_bytes, "raw_bytes": self.raw_bytes,
            "skipped": self.skipped, "refused": self.refused_count, "stripped": self.stripped,
            "complete": self.complete, "limit": self.limit, "problem": self.problem,
        }


def shown(name: bytes, limit: int = 200) -> str:
    """A name from the archive as printable ASCII (escape codes and odd bytes escaped), clipped."""
    text = repr(name[: limit + 1])[2:-1]
    return text if len(name) <= limit else text[:limit] + "…"


class _Stop(Exception):
    """End the extraction (the reason is already recorded)."""


class _Blocks:
    """Reads the chunk iterator in exact sizes, counting raw bytes against a cap."""

    def __init__(self, chunks: Iterable[bytes], cap: int, done: Extracted, deadline: float) -> None:
        self._it: Iterator[bytes] = iter(chunks)
        self._buf = bytearray()
        self._cap, self._done, self._deadline = cap, done, deadline

    def _past_deadline(self) -> None:
        if time.monotonic() > self._deadline:
            self._done.stop("budget", "copying the run dir out took longer than its time budget")
            raise _Stop

    def _more(self) -> bool:
        self._past_deadline()
        try:
            chunk = next(self._it)
        except StopIteration:
            # a read that ended past the deadline was cut by the source's watchdog (or was too slow anyway)
            self._past_deadline()
            return False
        except Exception as exc:  # the source broke (engine error, connection lost)
            self._past_deadline()
            self._done.stop("malformed", f"reading the archive failed: {type(exc).__name__}: {exc}")
            raise _Stop from exc
        self._done.raw_bytes += len(chunk)
        if self._done.raw_bytes > self._cap:
            self._done.stop("disk_quota", f"the archive of the run dir went over {self._cap} bytes")
            raise _Stop
        self._buf += chunk
        return True

    def read(self, n: int) -> bytes | None:
        """Exactly ``n`` bytes, or None at the end of the stream (a short tail counts as the end)."""
        while len(self._buf) < n:
            if not self._more():
                return None
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def pieces(self, n: int) -> Iterator[bytes]:
        """``n`` bytes as successive pieces (never more than one chunk held)."""
        while n > 0:
            if not self._buf and not self._more():
                self._done.stop("malformed", "the archive ended inside a file")
                raise _Stop
            take = min(n, len(self._buf), _WRITE_CHUNK)
            out = bytes(self._buf[:take])
            del self._buf[:take]
            n -= take
            yield out

    def skip(self, n: int) -> None:
        for _ in self.pieces(n):
            pass


def _number(field_bytes: bytes) -> int | None:
    """A tar numeric field: octal text, or base-256 when the high bit of its first byte is set."""
    if field_bytes and field_bytes[0] & 0x80:
        if field_bytes[0] == 0xFF:
            return None  # negative
        value = field_bytes[0] & 0x7F
        for byte in field_bytes[1:]:
            value = (value << 8) | byte
        return value
    text = field_bytes.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        return None


def _checksum_ok(header: bytes) -> bool:
    stored = _number(header[148:156])
    computed = sum(header[:148]) + 8 * 0x20 + sum(header[156:])
    return stored == computed


def _pax_records(data: bytes) -> dict[bytes, bytes] | None:
    """``"<len> key=value\\n"`` records; None if malformed."""
    records: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos, pos + 20)
        if space < 0:
            return None if data[pos:].strip(b"\0") else records
        try:
            length = int(data[pos:space])
        except ValueError:
            return None
        end = pos + length
        if length <= 0 or end > len(data) or data[end - 1 : end] != b"\n":
            return None
        key, eq, value = data[space + 1 : end - 1].partition(b"=")
        if not eq:
            return None
        records[key] = value
        pos = end
    return records


@dataclass(slots=True)
class _Entry:
    name: bytes
    kind: bytes
    mode: int
    size: int
    mtime: int
    linkname: bytes


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


class _Extractor:
    def __init__(self, dest_fd: int, root_name: bytes | None, skip_top: frozenset[bytes], limits: ExtractLimits) -> None:
        self.dest_fd, self.root_name, self.skip_top, self.limits = dest_fd, root_name, skip_top, limits
        self.done = Extracted()
        self._parent: tuple[tuple[bytes, ...], int] | None = None  # last opened parent folder (tar order is depth-first)

    # ---------------------------------------------------------------- archive

    def run(self, chunks: Iterable[bytes]) -> Extracted:
        limits = self.limits
        cap = limits.max_bytes + (limits.max_entries + 2) * HEADER_ALLOWANCE + 4 * BLOCK
        blocks = _Blocks(chunks, cap, self.done, time.monotonic() + limits.budget)
        try:
            while True:
                entry = self._next_entry(blocks)
                if entry is None:
                    break
                self._one(entry, blocks)
        except _Stop:
            pass
        except Exception as exc:  # the stream itself broke (engine error): the caller reports it
            self.done.stop("malformed", f"reading the archive failed: {type(exc).__name__}: {exc}")
        finally:
            if self._parent is not None:
                os.close(self._parent[1])
        return self.done

    def _extended(self, blocks: _Blocks, size: int, before: int) -> bytes:
        """One PAX or GNU long-name header's data; ``before``: the extended bytes this entry already had."""
        if before + size > MAX_EXTENDED_HEADER:
            # in total, not each: records of successive headers are merged until their entry comes
            self.done.stop("malformed", f"extended tar headers of {before + size} bytes for one entry "
                                        f"(more than {MAX_EXTENDED_HEADER})")
            raise _Stop
        data = blocks.read(_padded(size))
        if data is None:
            self.done.stop("malformed", "the archive ended inside an extended header")
            raise _Stop
        return data[:size]

    def _next_entry(self, blocks: _Blocks) -> _Entry | None:
        pax: dict[bytes, bytes] = {}
        long_name: bytes | None = None
        long_link: bytes | None = None
        extended = 0  # bytes of extended headers read for this entry
        while True:
            header = blocks.read(BLOCK)
            if header is None or header == bytes(BLOCK):
                return None  # end of archive
            if not _checksum_ok(header):
                self.done.stop("malformed", "a tar header with a bad checksum")
                raise _Stop
            kind = header[156:157] or _REGULAR
            size = _number(header[124:136])
            if size is None:
                self.done.stop("malformed", "a tar header with an unreadable size")
                raise _Stop
            if kind in (_PAX, _PAX_GLOBAL):
                records = _pax_records(self._extended(blocks, size, extended))
                extended += size
                if records is None:
                    self.done.stop("malformed", "a malformed PAX header")
                    raise _Stop
                if kind == _PAX:
                    pax.update(records)
                continue
            if kind in (_GNU_LONGNAME, _GNU_LONGLINK):
                value = self._extended(blocks, size, extended).split(b"\0", 1)[0]
                extended += size
                if kind == _GNU_LONGNAME:
                    long_name = value
                else:
                    long_link = value
                continue
            name = header[0:100].split(b"\0", 1)[0]
            if header[257:262] == b"ustar":
                prefix = header[345:500].split(b"\0", 1)[0]
                if prefix:
                    name = prefix + b"/" + name
            if b"size" in pax:
                try:
                    size = int(pax[b"size"])
                except ValueError:
                    size = -1
                if size < 0:
                    self.done.stop("malformed", "a PAX size that is not a number")
                    raise _Stop
            return _Entry(
                name=pax.get(b"path", long_name if long_name is not None else name),
                kind=b"0" if kind == b"\0" else kind,
                mode=_number(header[100:108]) or 0,
                size=size,
                mtime=_number(header[136:148]) or 0,
                linkname=pax.get(b"linkpath", long_link if long_link is not None else header[157:257].split(b"\0", 1)[0]),
            )

    # ---------------------------------------------------------------- one entry

    def _one(self, entry: _Entry, blocks: _Blocks) -> None:
        done = self.done
        has_data = entry.kind in (_REGULAR, _CONTIG) or entry.kind not in (_HARDLINK, _SYMLINK, _CHAR, _BLOCKDEV, _DIRTYPE, _FIFO)
        data_size = entry.size if has_data else 0
        parts = self._parts(entry)
        if parts is None or parts == ():
            # refused name, or the archive's top folder itself (the destination exists already)
            blocks.skip(_padded(data_size))
            return
        done.entries += 1
        if done.entries > self.limits.max_entries:
            done.stop("file_quota", f"the run dir holds more than {self.limits.max_entries} files and folders")
            raise _Stop
        if parts[0] in self.skip_top:
            done.skipped += 1
            blocks.skip(_padded(data_size))
            return
        if len(parts) > MAX_DEPTH:
            done.refuse(entry.name, f"nested deeper than {MAX_DEPTH} folders")
            blocks.skip(_padded(data_size))
            return
        kind = entry.kind
        if kind in (_REGULAR, _CONTIG):
            if done.file_bytes + entry.size > self.limits.max_bytes:
                done.stop("disk_quota", f"the run dir holds more than its quota of {self.limits.max_bytes} bytes")
                raise _Stop
            self._file(entry, parts, blocks)
            return
        if kind == _DIRTYPE:
            self._dir(entry, parts)
        elif kind == _SYMLINK:
            self._symlink(entry, parts)
        elif kind == _HARDLINK:
            done.refuse(entry.name, "a hard link (refused: it could name a file outside the run dir)")
        elif kind in (_CHAR, _BLOCKDEV):
            done.refuse(entry.name, "a device file")
        elif kind == _FIFO:
            done.refuse(entry.name, "a FIFO")
        else:
            done.refuse(entry.name, f"an unknown tar entry type {shown(kind)}")
        blocks.skip(_padded(data_size))

    def _parts(self, entry: _Entry) -> tuple[bytes, ...] | None:
        """The entry's path below the archive's top folder; None (and reported) if refused."""
        name = entry.name
        if b"\0" in name:  # only a PAX record can carry one; the OS calls would raise ValueError
            self.done.refuse(name, "a name with a NUL byte")
            return None
        if name.startswith(b"/"):
            self.done.refuse(name, "an absolute path")
            return None
        parts = [p for p in name.split(b"/") if p not in (b"", b".")]
        if b".." in parts:
            self.done.refuse(name, "a path with '..'")
            return None
        if self.root_name is not None:
            if not parts or parts[0] != self.root_name:
                self.done.refuse(name, "outside the run dir's folder in the archive")
                return None
            parts = parts[1:]
        return tuple(parts)

    def _open_parent(self, parts: tuple[bytes, ...]) -> int | None:
        """The descriptor of the folder holding ``parts[-1]`` (created as needed); None if refused."""
        parent = parts[:-1]
        if self._parent is not None:
            if self._parent[0] == parent:
                return self._parent[1]
            os.close(self._parent[1])
            self._parent = None
        fd = os.dup(self.dest_fd)
        try:
            for part in parent:
                try:
                    os.mkdir(part, 0o700, dir_fd=fd)
                except FileExistsError:
                    pass
                nfd = os.open(part, _DIR, dir_fd=fd)
                os.close(fd)
                fd = nfd
        except OSError:
            os.close(fd)
            return None
        self._parent = (parent, fd)
        return fd

    def _mode(self, entry: _Entry, base: int) -> int:
        mode = stat.S_IMODE(entry.mode)
        if mode & (stat.S_ISUID | stat.S_ISGID | stat.S_IWOTH):
            self.done.stripped += 1
        return (mode & 0o775) | base

    def _file(self, entry: _Entry, parts: tuple[bytes, ...], blocks: _Blocks) -> None:
        parent = self._open_parent(parts)
        fd: int | None = None
        if parent is not None:
            try:
                fd = os.open(parts[-1], _NEW_FILE, 0o600, dir_fd=parent)
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    os.close(fd)
                    fd = None
            except OSError as exc:
                fd = None
                if exc.errno == errno.ENOSPC:
                    self.done.stop("disk_quota", "the host's disk is full")
                    raise _Stop from exc
        if fd is None:
            self.done.refuse(entry.name, "could not be written (a link, a folder or something else is in the way)")
            blocks.skip(_padded(entry.size))
            return
        try:
            os.set_blocking(fd, True)
            for piece in blocks.pieces(entry.size):
                view = memoryview(piece)
                while view:
                    view = view[os.write(fd, view):]
            blocks.skip(_padded(entry.size) - entry.size)
            os.fchmod(fd, self._mode(entry, 0o600))
            os.utime(fd, (entry.mtime, entry.mtime))
        except OSError as exc:
            self.done.stop("disk_quota" if exc.errno in (errno.ENOSPC, errno.EFBIG) else "malformed",
                           f"writing {shown(entry.name)} failed: {exc.strerror}")
            raise _Stop from exc
        finally:
            os.close(fd)
        self.done.files += 1
        self.done.file_bytes += entry.size

    def _dir(self, entry: _Entry, parts: tuple[bytes, ...]) -> None:
        parent = self._open_parent(parts)
        if parent is None:
            self.done.refuse(entry.name, "its folder could not be made (a link or a file is in the way)")
            return
        try:
            try:
                os.mkdir(parts[-1], 0o700, dir_fd=parent)
            except FileExistsError:
                pass
            fd = os.open(parts[-1], _DIR, dir_fd=parent)
        except OSError:
            self.done.refuse(entry.name, "could not be made a folder (a link or a file is in the way)")
            return
        try:
            os.fchmod(fd, self._mode(entry, 0o700))
        finally:
            os.close(fd)

    def _symlink(self, entry: _Entry, parts: tuple[bytes, ...]) -> None:
        target = entry.linkname
        if not target or target.startswith(b"/") or b".." in target.split(b"/") or b"\0" in target:
            self.done.refuse(entry.name, f"a symlink to {shown(target, 100)} (only links down its own folder are kept)")
            return
        parent = self._open_parent(parts)
        try:
            if parent is None:
                raise OSError(errno.ENOTDIR, "no parent")
            try:
                os.symlink(target, parts[-1], dir_fd=parent)
            except FileExistsError:
                # the same link, made by an earlier copy of this run dir cut short (a recovery copies again)
                if os.readlink(parts[-1], dir_fd=parent) != target:
                    raise
        except OSError:
            self.done.refuse(entry.name, "a symlink that could not be made (something is in the way)")


def extract_tar(
    chunks: Iterable[bytes],
    dest_fd: int,
    limits: ExtractLimits,
    *,
    root_name: str | None = None,
    skip_top: Iterable[str] = (),
) -> Extracted:
    """Unpack a tar stream into the folder ``dest_fd`` (a trusted host folder); never raises on content.

    ``root_name``: the archive's single top folder (the engine's archive of ``/x/<name>`` holds
    ``<name>/…``); it maps onto ``dest_fd`` and entries outside it are refused. Top-level names in
    ``skip_top`` are left as the host has them (their entries are read past, not extracted).
    Blocking: call it in a worker thread.
    """
    root = os.fsencode(root_name) if root_name is not None else None
    skip = frozenset(os.fsencode(name) for name in skip_top)
    return _Extractor(dest_fd, root, skip, limits).run(chunks)
