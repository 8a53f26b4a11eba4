"""The rootless sandbox: forked children in new user (and mount, pid, ipc, uts,
optionally net) namespaces, with the user's subordinate ids mapped through
newuidmap/newgidmap, or a single-id mapping when there is no range.

``call`` runs a Python function in such a namespace and brings back its result
(the snapshotter runs there, so files owned by subordinate ids are handled);
``run`` runs a process in the full sandbox over a mounted snapshot. Every child
dies with its parent (PR_SET_PDEATHSIG), and every mount lives in a mount
namespace that dies with it, so a killed bale leaves nothing behind.

The user namespace is entered once per bale process and mapping: the first call
starts the namespace helper (helper.py), and every call and RUN that a JSON request
can name (request.py) runs in a worker it forks. Only what cannot be named (a
closure, a function outside bale's modules) gets a child, and a namespace, of its own.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
from typing import Any, Callable, Iterator

from builder.errors import SandboxError
from builder.sandbox import helper, kernel, request, wire
from builder.sandbox.idmap import IDMap, default_idmap, helper_args
from snapshotter import syscalls as sc

log = logging.getLogger("bale")
_warned = False


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def _wait(pid: int) -> int:
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            return 0
        except InterruptedError:
            continue


def _status(code: int) -> int:
    """waitstatus_to_exitcode gives -N for signal N; shells say 128+N."""
    return 128 - code if code < 0 else code


_live: set[int] = set()
#: tracked children stopped with SIGQUIT, not SIGKILL (proot: it SIGKILLs every tracee on SIGQUIT;
#: SIGKILLed, it left them running, detached)
_quit: set[int] = set()
_live_lock = threading.Lock()
_stopping = False


_cleanup = threading.local()


@contextlib.contextmanager
def cleaning_up() -> Iterator[None]:
    """In this thread, sandbox children may start even after ``stop_all``: the clean-up that a
    signal unwinds into (removing the build's snapshots) needs namespace children of its own.
    RUNs started by other threads are still refused."""
    before = getattr(_cleanup, "on", False)
    _cleanup.on = True
    try:
        yield
    finally:
        _cleanup.on = before


def track(pid: int, quit: bool = False) -> None:
    """Remember a sandbox child (any isolation) until ``untrack``, so ``stop_all`` can kill it
    (``quit``: with SIGQUIT, which it handles by killing what it runs: proot)."""
    with _live_lock:
        if _stopping and not getattr(_cleanup, "on", False):
            os.kill(pid, signal.SIGQUIT if quit else signal.SIGKILL)
        _live.add(pid)
        if quit:
            _quit.add(pid)


def untrack(pid: int) -> None:
    with _live_lock:
        _live.discard(pid)
        _quit.discard(pid)


def stop_all() -> None:
    """From a signal handler (any thread may be running a RUN): SIGKILL every sandbox child, whose
    pid namespace and mounts die with it, and refuse new ones. Safe to call more than once."""
    global _stopping
    with _live_lock:
        _stopping = True
        pids = list(_live)
        quit = set(_quit)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGQUIT if pid in quit else signal.SIGKILL)
        except ProcessLookupError:
            pass


def kill_live_children() -> int:
    """SIGKILL every sandbox child now (without refusing new ones); returns how many."""
    with _live_lock:
        pids = list(_live)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(pids)


class _MapRefused(SandboxError):
    """newuidmap/newgidmap said no."""


class _Forwarder:
    """While waiting for ``pid``: SIGINT/SIGTERM/SIGHUP to bale kill it (and its pid namespace, its
    mounts with it); then the signal is handed to the handler bale had (the CLI's raises, so bale
    unwinds and removes what it made), or re-raised with its default action."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.old: dict[int, Any] = {}
        self.interrupted: tuple[int, Any] | None = None

    def __enter__(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in self.SIGNALS:
            if signal.getsignal(sig) != signal.SIG_IGN:  # nohup: SIGHUP stays ignored
                self.old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.interrupted is None:
            self.interrupted = (signum, frame)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.old.items():
            signal.signal(sig, handler)
        if self.interrupted is None:
            return
        signum, frame = self.interrupted
        handler = self.old.get(signum)
        if callable(handler):
            handler(signum, frame)
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt
        else:
            signal.raise_signal(signum)


@contextlib.contextmanager
def _watching(pid: int) -> Iterator[None]:
    """While a helper's worker runs for this thread: tracked for stop_all, signals forwarded."""
    track(pid)
    try:
        with _Forwarder(pid):
            yield
    finally:
        untrack(pid)


#: the namespace helper of this process for each (rootful, id map asked for / obtained)
_helpers: dict[tuple[bool, IDMap | None], helper.Helper] = {}
_helpers_lock = threading.Lock()


def _forget_helpers() -> None:
    """In a forked child: the helpers are the parent's (their sockets are its conversations)."""
    global _helpers_lock
    _helpers_lock = threading.Lock()
    _helpers.clear()


os.register_at_fork(after_in_child=_forget_helpers)


# --- namespaces -----------------------------------------------------------------------
class UserNamespace:
    """Forks into new namespaces as root over the mapped id range (or real root without a userns)."""

    def __init__(self, idmap: IDMap | None = None) -> None:
        self.rootful = os.geteuid() == 0
        self.idmap = idmap or (None if self.rootful else default_idmap())
        self.map_error: str | None = None

    def _warn_single(self) -> None:
        """Once a single-id namespace worked (not before: where user namespaces are refused, the
        refusal is the one line to print)."""
        global _warned
        if self.idmap is not None and not self.idmap.full and not _warned:
            _warned = True
            import pwd
            try:
                user = pwd.getpwuid(os.getuid()).pw_name
            except KeyError:  # a pod's uid without a passwd entry
                user = f"uid {os.getuid()}"
            log.warning("no subuid range for %s: single-id mapping, steps that change file ownership will fail",
                        user)

    @property
    def full_mapping(self) -> bool:
        return self.rootful or bool(self.idmap and self.idmap.full)

    @property
    def use_userns(self) -> bool:
        """Non-root always; root only when given a mapping (a container's root whose plain mount
        namespaces are refused, probe.py): the maps are then written by bale itself."""
        return not self.rootful or self.idmap is not None

    def _flags(self, extra: int) -> int:
        return extra | (sc.CLONE_NEWUSER if self.use_userns else 0)

    def _child_enter(self, flags: int, ready_w: int, go_r: int) -> None:
        """In the child: unshare, get mapped, become root, make mounts private, turn non-dumpable.
        Dumpable until mapped: newuidmap refuses a target whose /proc entry is not the user's own,
        and /proc/self/uid_map of a non-dumpable process belongs to root."""
        kernel.set_pdeathsig(signal.SIGKILL)
        if not self.rootful:
            kernel.set_dumpable(True)
        sc.unshare(flags)
        if self.use_userns:
            assert self.idmap is not None
            if self.idmap.full or self.rootful:
                os.write(ready_w, b"u")
                if os.read(go_r, 1) != b"m":
                    os._exit(1)
            else:
                uid, gid = self.idmap.uids[0].host_id, self.idmap.gids[0].host_id
                for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
                    with open(f"/proc/self/{name}", "w") as fh:
                        fh.write(text)
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
            if self.idmap.full:
                os.setgroups([])
        kernel.set_dumpable(False)
        kernel.set_pdeathsig(signal.SIGKILL)  # a change of credentials clears it
        sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)

    def _parent_map(self, pid: int, ready_r: int, go_w: int) -> None:
        if not self.use_userns or self.idmap is None or not (self.idmap.full or self.rootful):
            return
        if os.read(ready_r, 1) != b"u":
            return  # the child failed before its mapping (unshare refused...): its answer says why
        if self.rootful:  # root writes the maps itself (CAP_SETUID/CAP_SETGID in this namespace)
            for name, maps in (("uid_map", self.idmap.uids), ("gid_map", self.idmap.gids)):
                try:
                    with open(f"/proc/{pid}/{name}", "w") as fh:
                        fh.write("".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in maps))
                except OSError as exc:
                    os.kill(pid, signal.SIGKILL)
                    raise SandboxError(f"writing {name} as root: {exc.strerror}") from None
        else:
            # both at once: each is an exec of a set-uid program, the larger part of a namespace's start
            procs = [(tool, subprocess.Popen([tool] + helper_args(pid, maps), stdout=subprocess.PIPE,
                                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True))
                     for tool, maps in (("newuidmap", self.idmap.uids), ("newgidmap", self.idmap.gids))]
            failed = [(tool, out) for tool, proc in procs for out, _ in [proc.communicate()] if proc.returncode != 0]
            if failed:
                os.kill(pid, signal.SIGKILL)
                tool, out = failed[0]
                raise _MapRefused(f"{tool} failed: {out.strip()}")
        os.write(go_w, b"m")

    def _downgrade(self, why: str) -> None:
        """newuidmap refused (no_new_privs, a seccomp profile, no setuid bit): single-id mapping."""
        from builder.sandbox.idmap import IDMap, IDMapping
        global _warned
        self.map_error = why
        self.idmap = IDMap((IDMapping(0, os.getuid(), 1),), (IDMapping(0, os.getgid(), 1),))
        if not _warned:
            _warned = True
            log.warning("%s: single-id mapping, steps that change file ownership will fail", why)

    def _fork(self, flags: int, body: Callable[[], Any], what: str,
              close: tuple[tuple[int, int], ...] = ()) -> Any:
        """Fork a child that enters the namespaces and runs ``body``; returns its result."""
        ready_r, ready_w = os.pipe()
        go_r, go_w = os.pipe()
        res_r, res_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            code = 0
            try:
                os.close(res_r)
                for fd, ino in close:
                    try:
                        if os.fstat(fd).st_ino == ino:
                            os.close(fd)
                    except OSError:
                        pass
                self._child_enter(flags, ready_w, go_r)
                payload = wire.encode_ok(body())
            except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
                payload = wire.encode_error(exc)
                code = 1
            try:
                _write_all(res_w, payload)
            finally:
                os._exit(code)
        os.close(res_w)
        os.close(ready_w)
        os.close(go_r)
        track(pid)
        try:
            try:
                self._parent_map(pid, ready_r, go_w)
            except _MapRefused as exc:
                _wait(pid)
                self._downgrade(str(exc))
                return self._fork(flags, body, what, close)
            with _Forwarder(pid):
                data = _read_all(res_r)
                _wait(pid)
        finally:
            untrack(pid)
            for fd in (res_r, ready_r, go_w):
                os.close(fd)
        result = wire.decode(data, what)
        self._warn_single()
        return result

    # --- through the namespace helper (builder/sandbox/helper.py) ---------------------------
    def _helper(self, what: str) -> helper.Helper:
        """This process's helper for this mapping, started on first use (one user namespace per
        bale process, and one newuidmap/newgidmap); a helper found gone is started again."""
        key = (self.rootful, self.idmap)
        with _helpers_lock:
            h = _helpers.get(key)
            if h is None or not h.alive:
                h = self._start_helper(what)
                _helpers[key] = _helpers[(self.rootful, h.idmap)] = h
        self.idmap = h.idmap
        self.map_error = h.map_error or self.map_error
        return h

    def _start_helper(self, what: str) -> helper.Helper:
        flags = self._flags(sc.CLONE_NEWNS)
        while True:
            try:
                h = helper.start(lambda ready_w, go_r: self._child_enter(flags, ready_w, go_r), self._parent_map,
                                 self.idmap, self.map_error, what)
            except _MapRefused as exc:
                self._downgrade(str(exc))
                continue
            self._warn_single()
            return h

    def _via_helper(self, req: dict[str, Any], fds: list[int], flags: int, what: str) -> Any:
        for attempt in (0, 1):
            h = self._helper(what)
            try:
                return h.call(req, fds, flags, what, on_pid=_watching)
            except helper.HelperGone:
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def call(self, fn: Callable[..., Any], *args: Any, _close: tuple[tuple[int, int], ...] = ()) -> Any:
        """``fn(*args)`` in a child with new user and mount namespaces. Its result must be plain
        data (see wire.plain: tuples come back as lists); errors come back as their class when it is
        one of wire.ERROR_CLASSES, OSErrors and others as SandboxError.

        In a user namespace, a function of bale's modules with arguments request.py can carry
        (request.Fd for fds) runs in a worker of this process's namespace helper, in the one user
        namespace of the process; anything else (a closure, another module's function) in a child
        forked for it, in a user namespace of its own (``_close``: (fd, inode) of pipe ends that
        child must not keep)."""
        what = getattr(fn, "__name__", "call")
        if self.use_userns:
            try:
                req, fds = request.encode_call(fn, args)
            except request.NotPortable as exc:
                log.debug("%s: not through the namespace helper (%s)", what, exc)
            else:
                try:
                    return self._via_helper(req, fds, sc.CLONE_NEWNS, what)
                except request.NotPortable:
                    pass
        return self._fork(self._flags(sc.CLONE_NEWNS), lambda: fn(*args), what, _close)

    def run(self, spec: Any, rootfs: Any) -> Any:
        """Run ``spec`` over the root ``rootfs.setup()`` mounts; returns a RunResult."""
        from builder.sandbox.process import run_in_namespace
        from builder.sandbox.spec import RunResult
        flags = sc.CLONE_NEWNS | sc.CLONE_NEWPID | sc.CLONE_NEWIPC | sc.CLONE_NEWUTS
        if spec.network == "none":
            flags |= sc.CLONE_NEWNET
        feeder = None
        stdin_r = None
        if spec.stdin_data:
            stdin_r, stdin_w = os.pipe()
            data = spec.stdin_data

            def feed() -> None:
                try:
                    with os.fdopen(stdin_w, "wb") as fh:
                        fh.write(data)
                except BrokenPipeError:
                    pass
            feeder = threading.Thread(target=feed, daemon=True)
        close = ((stdin_w, os.fstat(stdin_w).st_ino),) if feeder is not None else ()
        req: dict[str, Any] | None = None
        if self.use_userns:
            self._helper("run")  # the mapping (maybe downgraded) decides full_mapping
            try:
                req, fds = request.encode_call(helper.run_request, (spec, rootfs, self.full_mapping,
                                                                    None if stdin_r is None else request.Fd(stdin_r)))
            except request.NotPortable as exc:
                log.debug("run: not through the namespace helper (%s)", exc)
        full = self.full_mapping
        try:
            if feeder is not None:
                feeder.start()
            with kernel.undumpable():
                doc = None
                if req is not None:
                    try:
                        doc = self._via_helper(req, fds, flags, "run")
                    except request.NotPortable:
                        req = None
                if req is None:
                    doc = self._fork(self._flags(flags),
                                     lambda: run_in_namespace(spec, rootfs, full, stdin_r).to_plain(), "run", close)
            return RunResult.from_plain(doc)
        finally:
            if stdin_r is not None:
                os.close(stdin_r)
            if feeder is not None:
                feeder.join(timeout=5)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def call_in_child(fn: Callable[..., Any], *args: Any) -> Any:
    """As real root: ``fn(*args)`` in a forked child with a private mount namespace."""
    return UserNamespace().call(fn, *args)


def probe_userns() -> str | None:
    """None when a user namespace can be made and mapped here, else why not."""
    try:
        UserNamespace().call(os.getpid)
        return None
    except (SandboxError, OSError) as exc:
        return str(exc)

