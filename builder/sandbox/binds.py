"""The RUN's own mounts, made by PID 1 in its private mount namespace:

* a read-only bind stays a bind, made read-only recursively;
* a writable bind that is not ``shared`` (a context dir, a --build-context dir,
  another stage or an image) never reaches the live source: the RUN gets an
  overlay whose lower is the source and whose upper and workdir sit on a tmpfs
  of this namespace, so its writes vanish with the RUN (BuildKit discards them
  the same way). When the overlay is refused (a stack too deep, an upper that
  cannot sit there) the source is copied into the tmpfs instead;
* only ``shared`` binds (cache mounts) are bound writable;
* a secret is written to a tmpfs file (memory, never disk) and bound in read-only;
* files that set up /etc/hosts and friends come from the same memory.

Everything lives under a staging directory on the container's /dev tmpfs that
is removed before exec: mounts keep their sources alive, nothing is on disk.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from builder.sandbox.spec import BindSpec
from snapshotter import syscalls as sc


class Stage:
    """A 0700 directory on a tmpfs of this mount namespace for files and scratch mounts."""

    def __init__(self, tmpfs_dir: str) -> None:
        self.dir = Path(tmpfs_dir) / f".bale-stage-{os.getpid()}"
        os.mkdir(self.dir, 0o700)
        self.n = 0
        self.scratch: list[Path] = []

    def file(self, data: bytes, mode: int = 0o644, owner: tuple[int, int] | None = None) -> Path:
        self.n += 1
        p = self.dir / f"f{self.n}"
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if owner is not None:
                os.fchown(fd, *owner)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        return p

    def pipes_dir(self, files: dict[str, bytes]) -> Path:
        """A 0755 directory of the stage holding ``files`` as write_pipes makes them (for a runtime
        that binds it read-only on /dev/pipes itself)."""
        self.n += 1
        p = self.dir / f"p{self.n}"
        os.mkdir(p, 0o755)
        os.chmod(p, 0o755)
        write_pipes(p, files)
        return p

    def scratch_tmpfs(self) -> Path:
        """A fresh tmpfs (mounted on a dir of the stage) for an overlay's upper and workdir."""
        self.n += 1
        p = self.dir / f"t{self.n}"
        os.mkdir(p, 0o700)
        sc.mount("tmpfs", str(p), "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "mode=0755")
        self.scratch.append(p)
        return p

    def close(self) -> None:
        """Detach scratch tmpfs mounts (overlays keep them alive) and remove the stage."""
        for p in self.scratch:
            try:
                sc.umount(str(p), sc.MNT_DETACH)
            except OSError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


PIPES = "/dev/pipes"


def write_pipes(directory: Path, files: dict[str, bytes]) -> None:
    """Each of ``files`` (NAME -> content) as ``directory``/NAME, mode 0755, owned by the
    namespace's root: the scratch state of BuildKit's heredoc script (dockerfile2llb/convert.go:
    1371-1375, ``llb.Mkfile(f, 0755, data)``). NAME is one path component (the frontend checks)."""
    for name, data in files.items():
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"{PIPES}/{name}: not a file name")
        fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o700)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, 0o755)
        finally:
            os.close(fd)


def mount_pipes(dev: str, files: dict[str, bytes]) -> None:
    """On the container's /dev (the tmpfs at host path ``dev``, which is noexec): a tmpfs of its own
    at pipes/ (exec allowed) holding ``files``, then made read-only, as BuildKit mounts the script's
    state read-only on /dev/pipes (convert.go:1379). Memory only: nothing reaches the layer."""
    if not files:
        return
    target = f"{dev}/pipes"
    os.mkdir(target, 0o755)
    sc.mount("tmpfs", target, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "mode=0755")
    write_pipes(Path(target), files)
    sc.make_readonly_recursive(target, lockdown=False)


def _cow(stage: Stage, source: str, target: str, userns: bool) -> None:
    """``target`` shows ``source`` writable; writes land in memory and are thrown away."""
    scratch = stage.scratch_tmpfs()
    if os.path.isdir(source):
        upper, work = scratch / "upper", scratch / "work"
        upper.mkdir()
        work.mkdir()
        os.chmod(upper, os.stat(source).st_mode & 0o7777)
        strings = [("lowerdir+", source), ("upperdir", str(upper)), ("workdir", str(work))]
        if not userns:
            strings += [("redirect_dir", "off"), ("metacopy", "off"), ("index", "off")]
        try:
            sc.fs_mount("overlay", target, strings, ["userxattr"] if userns else [])
            return
        except OSError:
            copy = scratch / "copy"
            shutil.copytree(source, copy, symlinks=True)
            os.chmod(copy, os.stat(source).st_mode & 0o7777)
    else:
        copy = scratch / "copy"
        shutil.copy2(source, copy, follow_symlinks=True)
    sc.mount(str(copy), target, None, sc.MS_BIND | sc.MS_REC)


def mount_binds(stage: Stage, binds: list[tuple[BindSpec, Path]], userns: bool) -> None:
    """Mount every BindSpec on its (already made) host target path, by the rules above."""
    for m, host in binds:
        target = str(host)
        if m.type == "tmpfs":
            sc.mount("tmpfs", target, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "mode=1777")
        elif m.type == "secret":
            src = stage.file(m.data, m.mode & 0o7777, (m.uid, m.gid))
            sc.mount(str(src), target, None, sc.MS_BIND)
            sc.make_readonly_recursive(target, lockdown=False)
        elif m.readonly:
            sc.mount(m.host_source(), target, None, sc.MS_BIND | sc.MS_REC)
            sc.make_readonly_recursive(target, lockdown=False)
        elif m.shared:
            sc.mount(m.host_source(), target, None, sc.MS_BIND | sc.MS_REC)
        else:
            _cow(stage, m.host_source(), target, userns)


def materialize(stage: Stage, binds: list[BindSpec], userns: bool) -> list[BindSpec]:
    """For a runtime that binds paths itself (runc): each secret as a memory file, each non-shared
    writable bind as a copy-on-write mount on the stage; returns binds safe to bind as they are."""
    import dataclasses
    out = []
    for m in binds:
        if m.type == "secret":
            src = stage.file(m.data, m.mode & 0o7777, (m.uid, m.gid))
            out.append(BindSpec(str(src), m.dest, readonly=True))
        elif m.type == "bind" and not m.readonly and not m.shared:
            stage.n += 1
            point = stage.dir / f"c{stage.n}"
            source = m.host_source()
            if os.path.isdir(source):
                point.mkdir()
            else:
                point.touch()
            _cow(stage, source, str(point), userns)
            out.append(BindSpec(str(point), m.dest, shared=True))
        else:
            out.append(dataclasses.replace(m, source=m.host_source(), within=""))
    return out
