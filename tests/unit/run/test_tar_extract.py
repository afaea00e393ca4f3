"""The copy-mode tar reader against archives built to hurt the host (no Docker needed)."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dad_sandbox.run._tar_extract import BLOCK, Extracted, ExtractLimits, extract_tar

ROOT = "run_x"
LIMITS = ExtractLimits(max_bytes=1 << 20, max_entries=1_000, budget=20.0)


def _info(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, mode: int = 0o644, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode, info.linkname = kind, size, mode, link
    return info


def _tar(*entries: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _chunks(data: bytes, size: int = 7_000) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def _extract(dest: Path, data: bytes | Iterator[bytes], limits: ExtractLimits = LIMITS, **kw: object) -> Extracted:
    fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    try:
        source = _chunks(data) if isinstance(data, bytes) else data
        return extract_tar(source, fd, limits, root_name=ROOT, **kw)  # type: ignore[arg-type]
    finally:
        os.close(fd)


@pytest.fixture
def box(tmp_path: Path) -> tuple[Path, Path]:
    """A destination folder with a sibling 'outside' folder holding a file the archive must not touch."""
    dest, outside = tmp_path / "dest", tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    (outside / "secret").write_text("host")
    return dest, outside


def test_plain_tree_is_extracted_with_modes_and_contents(box: tuple[Path, Path]) -> None:
    """Folders, files and their data arrive as the run wrote them."""
    dest, _ = box
    data = _tar(
        (_info(f"{ROOT}/", tarfile.DIRTYPE, mode=0o755), None),
        (_info(f"{ROOT}/a/", tarfile.DIRTYPE, mode=0o755), None),
        (_info(f"{ROOT}/a/result.json", size=5, mode=0o640), b"hello"),
        (_info(f"{ROOT}/big", size=300_000), os.urandom(300_000)),
    )
    done = _extract(dest, data)
    assert done.complete, done.problem
    assert (dest / "a" / "result.json").read_bytes() == b"hello"
    assert stat.S_IMODE((dest / "a" / "result.json").stat().st_mode) == 0o640
    assert (dest / "big").stat().st_size == 300_000
    assert (done.files, done.file_bytes, done.refused_count) == (2, 300_005, 0)


def test_symlink_escapes_are_refused_and_never_followed(box: tuple[Path, Path]) -> None:
    """A link out of the run dir is not created, and a file 'below' it is not written through it."""
    dest, outside = box
    data = _tar(
        (_info(f"{ROOT}/up", tarfile.SYMTYPE, link="../outside"), None),
        (_info(f"{ROOT}/abs", tarfile.SYMTYPE, link=str(outside)), None),
        (_info(f"{ROOT}/up/secret", size=6), b"pwned!"),
        (_info(f"{ROOT}/ok", tarfile.SYMTYPE, link="sub/file"), None),
    )
    done = _extract(dest, data)
    assert (outside / "secret").read_text() == "host"
    assert not (dest / "up").is_symlink() and not (dest / "abs").is_symlink()
    assert os.readlink(dest / "ok") == "sub/file"  # a link down its own folder is kept
    # the refused link left a plain name behind: 'up/secret' became a real folder inside dest
    assert (dest / "up").is_dir() and not (dest / "up").is_symlink()
    assert done.refused_count == 2


def test_planted_symlink_in_the_destination_is_not_written_through(box: tuple[Path, Path]) -> None:
    """A link already in the destination (from anywhere) is refused as a folder and as a file."""
    dest, outside = box
    (dest / "node").symlink_to(outside)
    (dest / "file").symlink_to(outside / "secret")
    data = _tar(
        (_info(f"{ROOT}/node/secret", size=6), b"pwned!"),
        (_info(f"{ROOT}/file", size=6), b"pwned!"),
    )
    done = _extract(dest, data)
    assert (outside / "secret").read_text() == "host"
    assert done.refused_count == 2


def test_dotdot_and_absolute_names_are_refused(box: tuple[Path, Path]) -> None:
    """``../`` anywhere, an absolute name, or a name outside the archive's top folder writes nothing."""
    dest, outside = box
    data = _tar(
        (_info(f"{ROOT}/../outside/secret", size=6), b"pwned!"),
        (_info(f"{ROOT}/a/../../x", size=6), b"pwned!"),
        (_info(str(outside / "secret"), size=6), b"pwned!"),
        (_info("other_run/x", size=6), b"pwned!"),
        (_info(f"{ROOT}/fine", size=2), b"ok"),
    )
    done = _extract(dest, data)
    assert (outside / "secret").read_text() == "host"
    assert not (dest.parent / "x").exists()
    assert sorted(p.name for p in dest.iterdir()) == ["fine"]
    assert done.refused_count == 4


def test_devices_fifos_and_hardlinks_are_refused(box: tuple[Path, Path]) -> None:
    """No device node, FIFO or hard link is ever made; a hard link to a host file leaves it alone."""
    dest, outside = box
    data = _tar(
        (_info(f"{ROOT}/null", tarfile.CHRTYPE), None),
        (_info(f"{ROOT}/sda", tarfile.BLKTYPE), None),
        (_info(f"{ROOT}/fifo", tarfile.FIFOTYPE), None),
        (_info(f"{ROOT}/hl", tarfile.LNKTYPE, link=str(outside / "secret")), None),
        (_info(f"{ROOT}/hl2", tarfile.LNKTYPE, link=f"{ROOT}/../outside/secret"), None),
    )
    done = _extract(dest, data)
    assert list(dest.iterdir()) == []
    assert (outside / "secret").stat().st_nlink == 1
    assert done.refused_count == 5


def test_setuid_setgid_and_world_write_are_stripped(box: tuple[Path, Path]) -> None:
    """Mode bits that would give others the run's rights never reach the host."""
    dest, _ = box
    data = _tar(
        (_info(f"{ROOT}/suid", size=1, mode=0o6777), b"x"),
        (_info(f"{ROOT}/d/", tarfile.DIRTYPE, mode=0o2777), None),
    )
    done = _extract(dest, data)
    assert stat.S_IMODE((dest / "suid").stat().st_mode) == 0o775
    assert stat.S_IMODE((dest / "d").stat().st_mode) == 0o775
    assert done.stripped == 2


def _sparse_bomb(size: int) -> Iterator[bytes]:
    info = _info(f"{ROOT}/sparse", size=size)
    yield info.tobuf(format=tarfile.PAX_FORMAT)
    zeros = bytes(1 << 20)
    for _ in range(size // len(zeros)):
        yield zeros


def test_a_10_gib_file_stops_at_its_header(box: tuple[Path, Path]) -> None:
    """A declared size over the quota ends the extraction before a byte of its data is read."""
    dest, _ = box
    t0 = time.monotonic()
    done = _extract(dest, _sparse_bomb(10 << 30))
    assert done.limit == "disk_quota"
    assert done.raw_bytes < 64 << 10
    assert not (dest / "sparse").exists()
    assert time.monotonic() - t0 < 5


def _many(n: int) -> Iterator[bytes]:
    for i in range(n):
        yield _info(f"{ROOT}/f{i}").tobuf(format=tarfile.USTAR_FORMAT)


def test_a_million_entries_stop_at_the_file_limit(box: tuple[Path, Path]) -> None:
    """Entries past max_entries are never read: the walk stops, bounded in time and bytes."""
    dest, _ = box
    done = _extract(dest, _many(1_000_000), ExtractLimits(max_bytes=1 << 20, max_entries=500))
    assert done.limit == "file_quota"
    assert done.entries == 501
    assert done.raw_bytes < 600 * BLOCK
    assert len(list(dest.iterdir())) == 500


def test_terminal_escapes_in_names_are_escaped_in_reports(box: tuple[Path, Path]) -> None:
    """A name carrying escape codes is stored as a name, and reported with the codes escaped."""
    dest, _ = box
    evil = "a\x1b]0;owned\x07\x1b[2J"
    data = _tar(
        (_info(f"{ROOT}/{evil}", size=1), b"x"),
        (_info(f"{ROOT}/{evil}-dev", tarfile.CHRTYPE), None),
    )
    done = _extract(dest, data)
    assert (dest / evil).read_bytes() == b"x"
    assert done.refused and all("\x1b" not in r and "\x07" not in r for r in done.refused)


def test_huge_extended_header_is_refused_without_loading_it(box: tuple[Path, Path]) -> None:
    """A PAX header claiming gigabytes ends the extraction as malformed after one block."""
    dest, _ = box
    header = _info("././@PaxHeader", kind=tarfile.XHDTYPE, size=1 << 31)
    done = _extract(dest, iter([header.tobuf(format=tarfile.USTAR_FORMAT), bytes(1 << 20)]))
    assert done.limit == "malformed"


def test_long_names_and_skipped_top_folders(box: tuple[Path, Path]) -> None:
    """PAX long paths are honoured, and names the host keeps are read past, not written."""
    dest, _ = box
    (dest / ".trace").mkdir()
    (dest / ".trace" / "dad_metadata.json").write_text("host")
    long_dir = "/".join(["d" * 200] * 5)
    data = _tar(
        (_info(f"{ROOT}/{long_dir}/f", size=1), b"x"),
        (_info(f"{ROOT}/.trace/dad_metadata.json", size=6), b"forged"),
        (_info(f"{ROOT}/static_inputs/static_inputs.json", size=6), b"forged"),
    )
    done = _extract(dest, data, skip_top=(".trace", "static_inputs"))
    assert (dest / long_dir / "f").read_bytes() == b"x"
    assert (dest / ".trace" / "dad_metadata.json").read_text() == "host"
    assert not (dest / "static_inputs").exists()
    assert done.skipped == 2


def test_truncated_and_corrupt_archives_end_cleanly(box: tuple[Path, Path]) -> None:
    """A stream cut in a file, a bad checksum, or a source that raises never raises out."""
    dest, _ = box
    whole = _tar((_info(f"{ROOT}/f", size=10_000), os.urandom(10_000)))
    assert _extract(dest, whole[:3_000]).limit == "malformed"
    bad = bytearray(whole)
    bad[0] ^= 0xFF
    assert _extract(dest, bytes(bad)).limit == "malformed"

    def broken() -> Iterator[bytes]:
        yield whole[:BLOCK]
        raise ConnectionError("engine went away")

    done = _extract(dest, broken())
    assert done.limit == "malformed" and "engine went away" in (done.problem or "")


def _pax_flood(headers: int, size: int) -> Iterator[bytes]:
    """PAX headers back to back, each full of distinct keys, and never the entry they describe."""
    for i in range(headers):
        record = b""
        key = 0
        while len(record) < size - 64:
            body = b" k%d.%d=%s\n" % (i, key, b"v" * 1000)
            length = len(body) + len(str(len(body) + 3))
            if len(str(length)) != len(str(len(body) + 3)):
                length = len(body) + len(str(length))
            record += str(length).encode() + body
            key += 1
        header = _info(f"././@PaxHeader{i}", kind=tarfile.XHDTYPE, size=len(record))
        yield header.tobuf(format=tarfile.USTAR_FORMAT) + record + bytes(-len(record) % BLOCK)


def test_a_flood_of_extended_headers_is_bounded(box: tuple[Path, Path]) -> None:
    """Extended headers for one entry are bounded in total, not one by one.

    Each PAX header under the size cap was accepted and its records merged into one dict until an
    entry came: a hostile engine could grow the supervisor's memory as far as the raw-byte cap
    (the disk quota) by sending headers and never the entry.
    """
    dest, _ = box
    limits = ExtractLimits(max_bytes=1 << 30, max_entries=1_000)
    done = _extract(dest, _pax_flood(400, 200 << 10), limits)
    assert done.limit == "malformed"
    assert done.raw_bytes < 2 << 20, done.raw_bytes


def test_a_nul_byte_in_a_name_refuses_that_entry_only(box: tuple[Path, Path]) -> None:
    """A PAX name or link target with a NUL byte is refused; the rest of the archive still comes back.

    The OS calls raise ValueError (not OSError) on such a name: it escaped the per-entry handling,
    ended the whole copy-out as a broken transfer (the run ``crashed``) and leaked a descriptor.
    """
    dest, _ = box
    bad_dir = _info(f"{ROOT}/x", tarfile.DIRTYPE)
    bad_dir.pax_headers = {"path": f"{ROOT}/a\x00b/"}
    bad_file = _info(f"{ROOT}/y", size=1)
    bad_file.pax_headers = {"path": f"{ROOT}/c\x00d"}
    bad_link = _info(f"{ROOT}/l", tarfile.SYMTYPE)
    bad_link.pax_headers = {"linkpath": "e\x00f"}
    nested = _info(f"{ROOT}/z", size=1)
    nested.pax_headers = {"path": f"{ROOT}/g\x00h/i"}
    data = _tar((bad_dir, None), (bad_file, b"x"), (bad_link, None), (nested, b"x"),
                (_info(f"{ROOT}/ok", size=2), b"ok"))
    before = len(os.listdir("/proc/self/fd"))
    done = _extract(dest, data)
    assert done.complete, done.problem
    assert (dest / "ok").read_bytes() == b"ok"
    assert done.refused_count == 4
    assert sorted(os.listdir(dest)) == ["ok"]
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_second_copy_into_a_partly_copied_run_dir_reports_no_tampering(box: tuple[Path, Path]) -> None:
    """Recovery copies out again over what a killed supervisor's copy left: the run's own links are no tampering.

    A supervisor SIGKILLed during the copy-out leaves part of the run dir on the host; the next
    supervisor re-attaches and copies it all again. Files are overwritten, folders reused, but a
    symlink the first copy made was refused as 'something is in the way' and listed as tampering.
    A link that is in the way but points elsewhere is still refused.
    """
    dest, _ = box
    data = _tar(
        (_info(f"{ROOT}/sub/", tarfile.DIRTYPE, mode=0o755), None),
        (_info(f"{ROOT}/sub/f", size=1), b"x"),
        (_info(f"{ROOT}/latest", tarfile.SYMTYPE, link="sub/f"), None),
    )
    assert _extract(dest, data).refused_count == 0
    again = _extract(dest, data)
    assert again.complete and again.refused_count == 0, again.refused
    assert os.readlink(dest / "latest") == "sub/f"
    os.unlink(dest / "latest")
    os.symlink("sub", dest / "latest")
    assert _extract(dest, data).refused_count == 1
    assert os.readlink(dest / "latest") == "sub"
