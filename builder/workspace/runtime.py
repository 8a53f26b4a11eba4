"""Composition of isolation (builder/sandbox) and storage (snapshotter): picks
both once per invocation and runs snapshotter work inside the namespace the
sandbox will use, so files owned by subordinate ids are handled correctly."""
from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Callable, TypeVar

from builder.errors import SandboxError
from builder.image.lease import lease_for
from builder.image.store import Store
from builder.lazyimport import lazy
from builder.log import log
from builder.sandbox import kernel
from builder.sandbox.probe import choose, probe
from builder.sandbox.request import Fd
from builder.sandbox.wire import plain
from builder.workspace.gc import recover_once
from snapshotter import owners

if TYPE_CHECKING:
    from builder.sandbox import chroot, idmap, ptrace, userns
    from builder.sandbox import runtime as oci
else:  # each isolation's code loads when a Runtime first uses it, the namespace helper's at the first
    # call into the namespace: `bale from scratch` needs neither (start-up, issue 10)
    chroot, ptrace = lazy("builder.sandbox.chroot"), lazy("builder.sandbox.ptrace")
    userns, idmap, oci = lazy("builder.sandbox.userns"), lazy("builder.sandbox.idmap"), lazy("builder.sandbox.runtime")

T = TypeVar("T")


class StoreBlobOpener:
    """Picklable callable: opens a stored layer blob as an uncompressed, verified stream."""

    def __init__(self, store_root: str, digest: str, media_type: str) -> None:
        self.store_root, self.digest, self.media_type = store_root, digest, media_type

    def __call__(self) -> BinaryIO:
        from builder.image.compress import decompress_reader  # imported before any fork: snapshots.py
        blob: Any = Store(self.store_root).open_blob(self.digest)  # a digest-verifying reader, file-like
        return decompress_reader(blob, self.media_type)


class Runtime:
    """Isolation + snapshot driver for one store."""

    def __init__(self, store_root: Path, *, isolation: str | None = None, driver: str | None = None,
                 oci_runtime: str | None = None) -> None:
        self.store_root = Path(store_root)
        self.oci_runtime = oci_runtime
        caps = self.caps = probe(self.store_root)
        self.isolation, self.driver_name, notice = choose(caps, isolation, driver)
        if notice:
            log.warning(notice)
        if self.isolation == "chroot":
            _note_once(chroot.NOTE)
        if self.isolation == "ptrace":  # bale's uid owns every file: owners are recorded instead
            _note_once(ptrace.NOTE)
            owners.enable()
        if self.isolation in ("rootless", "oci") and caps.hostname_error:
            _note_once(f"sethostname is refused here ({caps.hostname_error}): RUN keeps the outer hostname")
        if self.isolation == "rootless" and not caps.fresh_proc:
            _note_once("no fresh /proc can be mounted here (the outer /proc has over-mounts): "
                       "RUN gets a minimal read-only /proc without processes")
        self.snapshots_root = self.store_root / "snapshots"
        self._userns: Any = None
        recover_once(self)  # takes this process's lease first, so forked children share it

    def userns(self) -> Any:
        if self._userns is None:
            if self.caps.root_userns:  # a container's root: a user namespace over its own ids
                self._userns = userns.UserNamespace(idmap.identity_idmap())
            else:
                self._userns = userns.UserNamespace()
        return self._userns

    def call(self, fn: Callable[..., Any], *args: Any, close: tuple[tuple[int, int], ...] = ()) -> Any:
        """Run ``fn(*args)`` where the sandbox's ids apply (inside the user namespace when rootless).
        The result must be plain data (None, bool, int, float, str, lists, dicts with str keys; tuples
        come back as lists): it crosses back from the namespace child as JSON (sandbox/wire.py), and
        is normalised the same way in chroot isolation so callers see one shape.
        Rootless, ``fn`` (a module-level function of bale's) and ``args`` (plain data, objects of
        bale's classes, request.Fd for fds) go as a JSON request to the process's namespace helper
        (sandbox/helper.py, sandbox/request.py), which runs them in a worker in the one user
        namespace of the process; what a request cannot carry runs in a child forked for it.
        ``close``: (fd, inode) of pipe ends such a forked child must not keep (see pipe_end)."""
        if self.isolation in ("chroot", "ptrace"):  # mounts and namespaces may be forbidden: plain call
            return plain(fn(*args))
        return self.userns().call(fn, *args, _close=close)

    def run(self, spec: Any, provider: Any) -> Any:
        """Run ``spec`` (a ProcessSpec) over ``provider``'s root; returns a RunResult."""
        if self.isolation == "chroot":
            with kernel.undumpable():
                return chroot.run_chroot(spec, provider)
        if self.isolation == "ptrace":
            tmp_root = self.store_root / "tmp" / lease_for(self.store_root).id
            tmp_root.mkdir(parents=True, exist_ok=True)
            with kernel.undumpable():
                return ptrace.run_ptrace(spec, provider, str(tmp_root))
        if self.isolation == "oci":
            tmp_root = self.store_root / "tmp" / lease_for(self.store_root).id
            tmp_root.mkdir(parents=True, exist_ok=True)
            return oci.run_oci(spec, provider, userns=self.userns(), runtime=self.oci_runtime, tmp_root=str(tmp_root),
                           own_pidns=self.caps.fresh_proc)
        return self.userns().run(spec, provider)

    def stream_from(self, fn: Callable[..., Any], *args: Any, sink: Callable[[IO[bytes]], T]) -> T:
        """Run ``fn(write_fd, *args)`` in the namespace while ``sink`` consumes what it writes.
        The fd travels to the namespace helper's worker with SCM_RIGHTS (request.Fd)."""
        r, w = os.pipe()
        enlarge_pipe(w)
        far_end = pipe_end(r)
        result: dict[str, Any] = {}

        def producer() -> None:
            try:
                result["value"] = self.call(fn, Fd(w), *args, close=(far_end,))
            except BaseException as exc:  # re-raised below, after the reader finished
                result["error"] = exc
            finally:
                os.close(w)

        t = threading.Thread(target=producer, daemon=True)
        t.start()
        try:
            with os.fdopen(r, "rb", buffering=1 << 20) as fh:
                out = sink(fh)
        finally:
            t.join()
        if "error" in result:
            raise result["error"]
        return out

    def stream_to(self, fn: Callable[..., Any], *args: Any, source: Callable[[IO[bytes]], None]) -> Any:
        """Run ``fn(read_fd, *args)`` in the namespace while ``source`` writes its input.
        The fd travels to the namespace helper's worker with SCM_RIGHTS (request.Fd)."""
        r, w = os.pipe()
        enlarge_pipe(w)
        far_end = pipe_end(w)
        err: dict[str, BaseException] = {}

        def feeder() -> None:
            try:
                with os.fdopen(w, "wb", buffering=1 << 20) as fh:
                    source(fh)
            except BrokenPipeError:
                pass
            except BaseException as exc:
                err["e"] = exc

        t = threading.Thread(target=feeder, daemon=True)
        t.start()
        try:
            value = self.call(fn, Fd(r), *args, close=(far_end,))
        except BaseException as exc:
            os.close(r)
            t.join()
            if "e" in err:  # the input failed first (an unreadable file...): that is the cause to report
                raise err["e"] from exc
            raise
        os.close(r)
        t.join()
        if "e" in err:
            raise err["e"]
        return value

    def stream_through(self, fn: Callable[..., Any], *args: Any, source: Callable[[IO[bytes]], None],
                       sink: Callable[[IO[bytes], Callable[[], Any]], T]) -> T:
        """Run ``fn(out_fd, in_fd, *args)`` in the namespace while ``source`` writes its input (in a
        thread) and ``sink(reader, settle)`` consumes its output. ``settle()`` waits for both sides
        and returns fn's result; it raises the source's error first (the cause: a failed input ends
        fn's input early), then fn's. A sink calls it before it keeps what it read."""
        r_out, w_out = os.pipe()
        enlarge_pipe(w_out)
        r_in, w_in = os.pipe()
        enlarge_pipe(w_in)
        ends = (pipe_end(r_out), pipe_end(w_in))
        result: dict[str, Any] = {}

        def producer() -> None:
            try:
                result["value"] = self.call(fn, Fd(w_out), Fd(r_in), *args, close=ends)
            except BaseException as exc:  # raised by settle
                result["error"] = exc
            finally:
                os.close(w_out)
                os.close(r_in)

        def feeder() -> None:
            try:
                with os.fdopen(w_in, "wb", buffering=1 << 20) as fh:
                    source(fh)
            except BrokenPipeError:
                pass
            except BaseException as exc:
                result["source"] = exc

        threads = [threading.Thread(target=producer, daemon=True), threading.Thread(target=feeder, daemon=True)]
        for t in threads:
            t.start()

        def settle() -> Any:
            for t in threads:
                t.join()
            if "source" in result:
                raise result["source"]
            if "error" in result:
                raise result["error"]
            return result.get("value")
        try:
            with os.fdopen(r_out, "rb", buffering=1 << 20) as fh:
                return sink(fh, settle)
        finally:
            for t in threads:
                t.join()


_noted: set[str] = set()


def _note_once(message: str) -> None:
    if message not in _noted:
        _noted.add(message)
        log.warning(message)


#: pipe capacity asked for the tar streams (bytes); Linux's default is 64 KiB, and an unprivileged
#: process may raise it up to /proc/sys/fs/pipe-max-size (1 MiB by default)
PIPE_SIZE = 1 << 20


def enlarge_pipe(fd: int, size: int = PIPE_SIZE) -> int:
    """Ask for a ``size``-byte pipe buffer (fcntl F_SETPIPE_SZ) so each side moves 1 MiB per system
    call instead of 64 KiB; returns the capacity obtained (bytes, 0 if unknown). Refusal (over
    pipe-max-size, or the user's pipe-user-pages-soft quota) keeps the default capacity silently."""
    try:
        return fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
    except (OSError, AttributeError):
        try:
            return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
        except (OSError, AttributeError):
            return 0


def pipe_end(fd: int) -> tuple[int, int]:
    """An fd with its inode: the thread owning it may close it and the number be reused before
    the child runs, so the child closes it only if the inode still matches."""
    return fd, os.fstat(fd).st_ino


def require(cond: bool, message: str) -> None:
    if not cond:
        raise SandboxError(message)
