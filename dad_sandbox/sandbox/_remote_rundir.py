"""Copy mode: the run dir travels through the Engine API when the engine cannot see the host's files.

Why volumes and a loader: what bind mounts carry in a local run (``_spec.container_spec``) must
reach the container with the same modes - the run dir read-write, ``static_inputs/``, the project
and a re-run's previous run dir read-only, ``.trace/`` masked. The engine unpacks an archive only
into a writable place (``put_archive`` refuses a read-only volume and a read-only root), so each
mount becomes a named volume of the run (``dad-<run_id>-<role>``, labelled ``dad.run_id``), filled
through a *loader* container that is created, never started, with every volume writable; the run's
container then mounts them exactly as it would mount the host folders (read-only ones read-only),
and the tmpfs masks of ``_spec`` apply unchanged.

After the run has exited, and before its container is removed, the run dir comes back with
``get_archive`` into the host run dir through :func:`dad_sandbox.run._tar_extract.extract_tar`:
streamed, bounded by the policy's ``disk_quota`` and ``max_files``, in a worker thread, never
following or creating a link out, refusing devices, hard links and escaping names. ``.trace/`` and
``static_inputs/`` are never copied back: the host keeps its own. Then the files go through the same
collection as a local run. The volumes are removed with the container; ``gc`` removes any left over.

What copy mode cannot do (refused or noted): an egress proxy socket (network = "allowlist") and
warm-pool slots are host folders, so they need an engine that sees the host; the run-dir quota is
checked when the run dir comes back, not while the run writes (the engine's disk holds it meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import posixpath
import stat
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from dad_sandbox._limits import COPY_MAX_PREVIOUS_RUN_BYTES as MAX_PREVIOUS_RUN_BYTES
from dad_sandbox._limits import COPY_MAX_PROJECT_BYTES as MAX_PROJECT_BYTES
from dad_sandbox._limits import COPY_OUT_BUDGET_SECONDS
from dad_sandbox._limits import COPY_UNLIMITED_BYTES as UNLIMITED_BYTES
from dad_sandbox._limits import COPY_UNLIMITED_ENTRIES as UNLIMITED_ENTRIES
from dad_sandbox._logging import get_logger
from dad_sandbox._version import __version__
from dad_sandbox.errors import DadSandboxError, RunSetupError
from dad_sandbox.run import RunContext
from dad_sandbox.run._layout import STATIC_INPUTS_DIR, TRACE_DIR
from dad_sandbox.run._tar_extract import Extracted, ExtractLimits, extract_tar
from dad_sandbox.sandbox import _labels
from dad_sandbox.sandbox._engine_view import PROBE_LABEL
from dad_sandbox.sandbox._ownership import RunUser
from dad_sandbox.sandbox._policy import Policy
from dad_sandbox.sandbox._spec import container_run_dir
from dad_sandbox.sandbox.engine import ContainerSpec, Engine, Mount

log = get_logger(__name__)

#: Labels a run's volumes carry (with ``dad.run_id``): which mount of the run each one holds.
VOLUME_ROLE = "dad.volume"
#: Labels the loader container carries instead of ``dad.run_id`` (it is no run's container).
LOADER_LABEL = "dad.loader"
_LOAD_ROOT = "/dad-load"
#: How long after the reader's budget the engine cuts a stream that is still open.
_CUT_GRACE_SECONDS = 5.0


def volume_name(run_id: str, role: str) -> str:
    return f"dad-{run_id}-{role}"


@dataclass(frozen=True, slots=True)
class _Source:
    """One host folder that a bind mount would carry, and how it is packed into its volume."""

    role: str
    path: Path
    #: (uid, gid) of every entry; None keeps the host's owners
    owner: tuple[int, int] | None
    read_only_modes: bool
    #: top-level names packed as empty folders (mount points of masks and nested mounts)
    hollow: tuple[str, ...] = ()
    #: folders below ``path`` left out (with their content), e.g. the run root inside the project
    exclude: tuple[Path, ...] = ()
    max_bytes: int | None = None
    #: the folder is packed as this sub-folder of the volume (the engine never changes a volume
    #: root's owner or mode from an archive, so the run dir, which the run user must own, sits below it)
    subdir: str | None = None


@dataclass(slots=True)
class RemoteRunDir:
    """One run's volumes on the engine, the copy in, the copy out, the cleanup."""

    engine: Engine
    run_id: str
    run_dir: Path
    sources: dict[str, _Source] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_run(cls, engine: Engine, ctx: RunContext, user: RunUser) -> RemoteRunDir:
        """The copy plan for a set-up run (nothing happens on the engine yet)."""
        run_dir = ctx.run_dir
        sources = {
            "run": _Source("run", run_dir, (user.uid, user.gid), False, hollow=(TRACE_DIR, STATIC_INPUTS_DIR),
                           subdir=ctx.run_id),
            "static": _Source("static", run_dir / STATIC_INPUTS_DIR, (0, 0), True),
            "project": _Source("project", ctx.project_root, None, False, exclude=(ctx.run_root.resolve(),),
                               max_bytes=MAX_PROJECT_BYTES),
        }
        previous = ctx.previous_run_dir
        if previous is not None:
            sources["previous"] = _Source("previous", previous, (0, 0), True, hollow=(TRACE_DIR,),
                                          max_bytes=MAX_PREVIOUS_RUN_BYTES)
        return cls(engine, ctx.run_id, run_dir, sources)

    @classmethod
    def for_recovery(cls, engine: Engine, run_id: str, run_dir: Path) -> RemoteRunDir:
        """The volumes of a copy-mode run found by a later supervisor (names follow from the run id)."""
        return cls(engine, run_id, run_dir, {role: _Source(role, run_dir, None, False)
                                             for role in ("run", "static", "project", "previous")})

    # ---------------------------------------------------------------- the container's mounts

    def volume_spec(self, spec: ContainerSpec) -> ContainerSpec:
        """``spec`` with each bind mount swapped for the volume that carries the same folder.

        Raises:
            RunSetupError: a bind mount copy mode cannot carry (an egress proxy's socket folder).
        """
        by_path = {str(src.path): role for role, src in self.sources.items()}
        mounts = []
        for mount in spec.mounts:
            role = by_path.get(mount.source)
            if role is None:
                raise RunSetupError(
                    f"the engine does not see this host's files, and {mount.source} cannot be copied to it "
                    "(network = 'allowlist' needs the egress proxy's socket on the engine's host): use a "
                    "policy without it, or an engine on this host"
                )
            # the run volume holds the run dir as a sub-folder: it is mounted at the run root, where the
            # run sees its own folder only (a re-run's previous run dir is mounted beside it, read-only)
            target = posixpath.dirname(mount.target) if self.sources[role].subdir else mount.target
            mounts.append(Mount(volume_name(self.run_id, role), target, mount.read_only, kind="volume"))
        labels = {**spec.labels, _labels.RUN_DIR: str(self.run_dir)}
        return dataclasses.replace(spec, mounts=tuple(mounts), labels=labels)

    # ---------------------------------------------------------------- in

    async def copy_in(self, image: str) -> None:
        """Make the run's volumes and fill them from the host folders, before the run's container exists.

        Raises:
            RunSetupError: the project, or a re-run's previous run dir, is too big to copy.
            EngineError: the engine refused a volume, the loader or an archive.
        """
        t0 = time.monotonic()
        # who made them and for which run dir: a later gc removes what a dead supervisor left
        labels = {_labels.RUN_ID: self.run_id, _labels.RUN_DIR: str(self.run_dir), _labels.VERSION: __version__,
                  **_labels.supervisor_identity()}
        for role in self.sources:
            await self.engine.create_volume(volume_name(self.run_id, role), {**labels, VOLUME_ROLE: role})
        loader_spec = ContainerSpec(
            image=image, command=("true",),
            labels={LOADER_LABEL: self.run_id, _labels.RUN_DIR: str(self.run_dir), _labels.VERSION: __version__,
                    **_labels.supervisor_identity()},
            mounts=tuple(Mount(volume_name(self.run_id, role), f"{_LOAD_ROOT}/{role}", read_only=False, kind="volume")
                         for role in self.sources),
            network="none", init=False,
        )
        loader = await self.engine.create(loader_spec)
        copied = 0
        try:
            for role, source in self.sources.items():
                with tempfile.TemporaryFile(prefix="dad-copy-in-") as archive:
                    copied += await asyncio.to_thread(_pack, source, archive)
                    archive.seek(0)
                    await self.engine.put_archive(loader, f"{_LOAD_ROOT}/{role}", archive)
        finally:
            with contextlib.suppress(DadSandboxError):
                await self.engine.remove(loader)
        self.report.update(copied_in_bytes=copied, copy_in_seconds=round(time.monotonic() - t0, 3))
        log.info("run dir copied to the engine", run_id=self.run_id, bytes=copied, seconds=self.report["copy_in_seconds"])

    # ---------------------------------------------------------------- out

    async def copy_out(self, container_id: str, policy: Policy) -> Extracted:
        """Bring the run dir back from the exited container into the host run dir; never raises.

        A failed transfer is an incomplete :class:`Extracted` (``limit="malformed"``) with the reason.
        """
        limits = ExtractLimits(
            max_bytes=policy.disk_quota if policy.disk_quota is not None else UNLIMITED_BYTES,
            max_entries=policy.max_files if policy.max_files is not None else UNLIMITED_ENTRIES,
            budget=COPY_OUT_BUDGET_SECONDS,
        )
        t0 = time.monotonic()
        fd = os.open(self.run_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            def consume(chunks: Iterator[bytes]) -> Extracted:
                return extract_tar(chunks, fd, limits, root_name=self.run_id, skip_top=(TRACE_DIR, STATIC_INPUTS_DIR))

            try:
                # the engine cuts the stream a little after the reader's own budget, so a reader blocked
                # on a stalled engine wakes up past its deadline and reports the budget, not a break
                done = await self.engine.get_archive(container_id, container_run_dir(self.run_id), consume,
                                                     budget=COPY_OUT_BUDGET_SECONDS + _CUT_GRACE_SECONDS)
            except DadSandboxError as exc:
                done = Extracted()
                done.stop("malformed", f"could not copy the run dir out of the container: {exc}")
        finally:
            os.close(fd)
        self.report.update(copy_out=done.to_json(), copy_out_seconds=round(time.monotonic() - t0, 3))
        if done.refused:
            log.warning("copy-out refused entries", run_id=self.run_id, refused=done.refused_count)
        return done

    # ---------------------------------------------------------------- cleanup

    async def cleanup(self) -> list[str]:
        """Remove the run's volumes (after its container); the problems, if any (``gc`` retries)."""
        problems = []
        for role in self.sources:
            try:
                await self.engine.remove_volume(volume_name(self.run_id, role))
            except DadSandboxError as exc:
                problems.append(f"could not remove volume {volume_name(self.run_id, role)}: {exc}")
        return problems


# -------------------------------------------------------------------- packing (host folders -> tar)


def _pack(source: _Source, out: IO[bytes]) -> int:
    """Write ``source`` as a tar to ``out`` (blocking); return the bytes of file data packed.

    The folder is a host folder, but a previous run dir holds what a run wrote: the walk never
    follows a link (links are packed as links, for the container to see as it did), opens files
    with ``O_NOFOLLOW`` and checks they are regular, and leaves out FIFOs, sockets and devices.

    Raises:
        RunSetupError: more than ``source.max_bytes`` of data.
    """
    packed = 0
    excluded = {str(p) for p in source.exclude}
    base = Path(source.subdir) if source.subdir else Path(".")
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        top = source.path
        if not top.is_dir():  # nothing to carry (e.g. no static inputs folder): an empty folder
            tar.addfile(_dir_info(base.as_posix(), source, 0o755))
            return 0
        root = _info_for(tar, top, base.as_posix(), source)
        root.mode = 0o755
        tar.addfile(root)
        for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
            here = Path(dirpath)
            rel_dir = base / here.relative_to(top)
            keep_dirs = []
            for name in sorted(dirnames):
                path, arc = here / name, (rel_dir / name).as_posix()
                if str(path.resolve()) in excluded or str(path) in excluded:
                    tar.addfile(_dir_info(arc, source, 0o555, owner=(0, 0)))  # a mount point for the mask
                    continue
                if rel_dir == base and name in source.hollow:
                    tar.addfile(_dir_info(arc, source, 0o555, owner=(0, 0)))
                    continue
                if path.is_symlink():
                    filenames.append(name)  # packed as a link below, never walked into
                    continue
                tar.addfile(_info_for(tar, path, arc, source))
                keep_dirs.append(name)
            dirnames[:] = keep_dirs
            for name in sorted(filenames):
                path, arc = here / name, (rel_dir / name).as_posix()
                room = source.max_bytes - packed if source.max_bytes is not None else None
                packed += _pack_entry(tar, path, arc, source, room)
        for name in source.hollow:  # mount points the host folder does not have
            if not (top / name).is_dir():
                tar.addfile(_dir_info((base / name).as_posix(), source, 0o555, owner=(0, 0)))
    return packed


def _too_big(source: _Source) -> RunSetupError:
    limit = f"{(source.max_bytes or 0) >> 20} MiB"
    if source.role == "previous":
        return RunSetupError(
            f"the previous run dir {source.path} holds more than {limit} (counting files by their size, sparse or "
            "not), too much to copy to an engine that does not see this host's files; re-run it on an engine on "
            "this host (bind mounts), or from a smaller previous run"
        )
    return RunSetupError(
        f"{source.path} holds more than {limit}, too much to copy to an engine that does not see this host's files "
        "for every run; use a smaller project root, or an engine on this host (bind mounts)"
    )


def _pack_entry(tar: tarfile.TarFile, path: Path, arc: str, source: _Source, room: int | None) -> int:
    """Pack one non-folder entry; ``room``: bytes of data still allowed (checked before any is read)."""
    try:
        st = os.lstat(path)
    except OSError:
        return 0
    if stat.S_ISLNK(st.st_mode):
        info = tar.gettarinfo(str(path), arcname=arc)
        _own(info, source)
        tar.addfile(info)
        return 0
    if not stat.S_ISREG(st.st_mode):
        return 0  # FIFOs, sockets, devices: nothing a run needs, and a FIFO would block the read
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return 0
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return 0
        info = tar.gettarinfo(fileobj=handle, arcname=arc)
        if room is not None and info.size > room:
            raise _too_big(source)
        _own(info, source)
        tar.addfile(info, handle)
        return info.size


def _info_for(tar: tarfile.TarFile, path: Path, arc: str, source: _Source) -> tarfile.TarInfo:
    info = tar.gettarinfo(str(path), arcname=arc)
    _own(info, source)
    return info


def _dir_info(arc: str, source: _Source, mode: int, owner: tuple[int, int] | None = None) -> tarfile.TarInfo:
    info = tarfile.TarInfo(arc)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, int(time.time())
    info.uid, info.gid = owner or source.owner or (0, 0)
    return info


def _own(info: tarfile.TarInfo, source: _Source) -> None:
    """Owners and modes as the container must see them; never setuid/setgid."""
    info.uname = info.gname = ""
    if source.owner is not None:
        info.uid, info.gid = source.owner
    mode = info.mode & 0o775
    if source.read_only_modes:
        mode = 0o555 if info.isdir() else (0o555 if mode & 0o111 else 0o444)
    info.mode = mode


# -------------------------------------------------------------------- leftovers (gc, recovery)


@dataclass(frozen=True, slots=True)
class Leftover:
    """A loader container or a run volume whose supervisor died, and what became of it."""

    kind: str  # "volume" | "loader" | "probe"
    name: str
    run_id: str
    run_dir: str | None
    owner: str
    removed: bool
    problem: str | None = None


async def sweep_leftovers(engine: Engine, *, under: str | None, dry_run: bool) -> list[Leftover]:
    """Remove probes, loaders and volumes whose supervisor is gone (volumes: and whose run has no container).

    ``under``: only those of run dirs below this folder (None: all). An engine without volumes
    (the fake one) has nothing to sweep. A live supervisor's copy in progress is never touched:
    its labels name a living process.
    """
    try:
        loaders = await engine.list_by_label(LOADER_LABEL) + await engine.list_by_label(PROBE_LABEL)
        volumes = await engine.list_volumes(_labels.RUN_ID)
        runs = {s.labels.get(_labels.RUN_ID) for s in await engine.list_by_label(_labels.RUN_ID)}
    except NotImplementedError:
        return []

    def dead(labels: dict[str, str]) -> bool:
        run_dir = labels.get(_labels.RUN_DIR, "")
        if under is not None and not run_dir.startswith(under.rstrip("/") + "/"):
            return False
        return _labels.owner_alive(labels) is False

    found: list[Leftover] = []
    for state in loaders:
        if dead(state.labels):
            kind = "probe" if PROBE_LABEL in state.labels else "loader"
            found.append(await _drop(engine, kind, state.id, state.labels, state.labels.get(LOADER_LABEL, "?"), dry_run))
    for volume in volumes:
        labels = volume["labels"]
        if volume["labels"].get(_labels.RUN_ID) not in runs and dead(labels):
            found.append(await _drop(engine, "volume", volume["name"], labels, labels.get(_labels.RUN_ID, "?"), dry_run))
    return found


async def _drop(engine: Engine, kind: str, name: str, labels: dict[str, str], run_id: str, dry_run: bool) -> Leftover:
    problem = None
    if not dry_run:
        try:
            await (engine.remove_volume(name) if kind == "volume" else engine.remove(name))
        except DadSandboxError as exc:
            problem = str(exc)
    return Leftover(kind, name, run_id, labels.get(_labels.RUN_DIR), labels.get(_labels.SUPERVISOR, "?"),
                    removed=not dry_run and problem is None, problem=problem)
