"""One sandbox process per bale invocation: the namespace helper.

The helper is forked from bale once, at the first call that needs the user namespace, enters
it (one newuidmap/newgidmap, or one single-id mapping) and then serves every request of the
process: snapshot, copy, commit and RUN work. For each request it forks a worker (cheap: no new
user namespace), which takes a mount namespace of its own (and pid, ipc, uts, net ones for a
RUN) and does the one call, so a crash or a RUN never corrupts the helper, and every mount dies
with its worker as before.

Wire, bale to helper: a UNIX stream socket only bale and the helper hold (no RUN inherits it:
it is close-on-exec and every worker closes it first). One request is::

    HEADER   struct "<II": length of ENVELOPE (bytes), number of fds sent with SCM_RIGHTS
    ENVELOPE JSON {"req": REQUEST (request.py), "flags": CLONE_* for the worker's unshare,
                   "cwd": STR, "std": [I0, I1, I2], "leases": [[KEY, ID, PATH, I]...], "argfds": N}
    fds      [reply pipe, stdin, stdout, stderr, lease fds..., the request's ``$fd`` fds...]
             (I0.. index this list; the request's ``$fd`` indices count from ``argfds``)

Wire, worker to bale: the reply pipe, which only the worker holds: its pid (struct "<q", in
bale's pid namespace: bale kills it on a signal) and then one wire.py answer, read as JSON.

Safety: the helper and its workers are non-dumpable, have the parent-death signal set (again
after each change of credentials) and check their parent is still there after setting it; a RUN
runs in a pid namespace of its own, made by its worker, so it sees neither the helper nor bale,
and every fd but its own stdio is closed before it execs (process.py).
"""
from __future__ import annotations

import atexit
import json
import os
import select
import signal
import socket
import struct
import threading
from typing import Any, Callable, NoReturn

from builder.errors import SandboxError
from builder.image import lease
from builder.sandbox import kernel, request, wire
from builder.sandbox.process import run_in_namespace
from snapshotter import syscalls as sc

HEADER = struct.Struct("<II")
PID = struct.Struct("<q")
MAX_FDS = 64


class HelperGone(SandboxError):
    """The helper process is not there any more (its socket is closed)."""


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def _read_exact(fd: int, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = os.read(fd, n - len(out))
        if not chunk:
            break
        out += chunk
    return out


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _usable(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


class Helper:
    """bale's end of one helper process: ``call`` sends a request and returns its answer.
    Thread-safe; requests run concurrently, each in its own worker."""

    def __init__(self, sock: socket.socket, pid: int, idmap: Any, map_error: str | None,
                 keeper: threading.Thread | None = None) -> None:
        self.sock, self.pid, self.idmap, self.map_error = sock, pid, idmap, map_error
        self.alive = True
        self._send = threading.Lock()
        self._keeper = keeper

    def call(self, req: dict[str, Any], arg_fds: list[int], flags: int, what: str,
             on_pid: Callable[[int], Any] | None = None) -> Any:
        """Run the request (request.encode_call's document and fds) in a worker that first
        unshares ``flags``; returns the worker's answer (wire.decode: plain data, or the error it
        names raised). ``on_pid(pid)`` returns a context manager held while the worker runs (the
        signal forwarding and tracking of the caller). HelperGone when the helper is not there;
        request.NotPortable when the request is over the size limit."""
        null = None
        reply_r, reply_w = os.pipe2(os.O_CLOEXEC)
        try:
            std = []
            for fd in (0, 1, 2):
                if not _usable(fd):
                    if null is None:
                        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
                    fd = null
                std.append(fd)
            held = lease.handoff()
            fds = [reply_w, *std, *(l[3] for l in held), *arg_fds]
            try:
                cwd = os.getcwd()
            except OSError:
                cwd = "/"
            env = {"req": req, "flags": flags, "cwd": cwd, "std": [1, 2, 3],
                   "leases": [[k, i, p, 4 + n] for n, (k, i, p, _) in enumerate(held)], "argfds": 4 + len(held)}
            payload = json.dumps(env, allow_nan=False).encode()
            if len(payload) > request.MAX_BYTES or len(fds) > MAX_FDS:
                raise request.NotPortable("request too large")
            data = HEADER.pack(len(payload), len(fds)) + payload
            try:
                with self._send:
                    sent = socket.send_fds(self.sock, [data], fds)
                    if sent < len(data):
                        self.sock.sendall(data[sent:])
            except OSError as exc:
                self.alive = False
                raise HelperGone(f"{what}: the namespace helper is gone ({exc.strerror or exc})") from None
        except BaseException:
            os.close(reply_r)
            raise
        finally:
            os.close(reply_w)
            if null is not None:
                os.close(null)
        try:
            head = _read_exact(reply_r, PID.size)
            answer = b""
            if len(head) == PID.size:
                pid = PID.unpack(head)[0]
                answer = self._answer(reply_r, pid, on_pid)
        finally:
            os.close(reply_r)
        return wire.decode(answer, what)

    @staticmethod
    def _answer(reply_r: int, pid: int, on_pid: Callable[[int], Any] | None) -> bytes:
        """The worker's answer, read to its end; returns once the worker has exited (its mounts,
        pid namespace and all gone), as waiting for a child did."""
        try:
            pidfd: int | None = os.pidfd_open(pid) if pid > 0 else None
        except OSError:
            pidfd = None  # gone already
        try:
            if on_pid is not None and pid > 0:
                with on_pid(pid):
                    answer = _read_all(reply_r)
            else:
                answer = _read_all(reply_r)
            if pidfd is not None:  # poll, not select: the fd may be above FD_SETSIZE
                waiter = select.poll()
                waiter.register(pidfd, select.POLLIN)
                while not waiter.poll():
                    pass
            return answer
        finally:
            if pidfd is not None:
                os.close(pidfd)

    def close(self, wait: float = 0.0) -> None:
        """Close the socket: the helper exits at the end of file, once its workers have ended;
        wait up to ``wait`` seconds for that (bale's exit: their CPU time is then counted as its
        children's, and nothing of them outlives it)."""
        self.alive = False
        self.sock.close()
        if wait and self._keeper is not None:
            self._keeper.join(wait)


_started: list[Helper] = []


def _close_all() -> None:
    """At bale's exit: every helper of this process told to end, each waited for briefly (one
    still busy is killed with bale anyway, by its parent-death signal)."""
    for h in list(_started):
        if h.alive and h.pid and os.getpid() == _owner:
            h.close(wait=1.0)


_owner = os.getpid()


# --- the helper process -----------------------------------------------------------------
def start(enter: Callable[[int, int], None], parent_map: Callable[[int, int, int], None], idmap: Any,
          map_error: str | None, what: str = "namespace helper") -> Helper:
    """Fork the helper: in it, ``enter(ready_w, go_r)`` enters the user namespace (the handshake
    of userns.UserNamespace._child_enter), while bale runs ``parent_map(pid, ready_r, go_w)``
    (newuidmap/newgidmap). The fork happens in a thread that lives as long as bale (the
    parent-death signal follows the thread that forked). Returns the Helper once the helper says
    it is in; raises what ``parent_map`` raises, or the helper's error as wire.decode gives it,
    named ``what`` (the call that needed the helper, as a child of its own would have said)."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    st_r, st_w = os.pipe()
    bale = os.getpid()
    got: list[int | OSError] = []
    forked = threading.Event()
    keep = (child.fileno(), ready_w, go_r, st_w)

    def keeper() -> None:
        try:
            pid = os.fork()
        except OSError as exc:
            got.append(exc)
            forked.set()
            return
        if pid == 0:
            _helper_main(bale, keep, enter)
        got.append(pid)
        forked.set()
        while True:  # reap it when it ends (bale's end of the socket closed, or killed)
            try:
                os.waitpid(pid, 0)
                return
            except ChildProcessError:
                return
            except InterruptedError:
                continue

    thread = threading.Thread(target=keeper, name="bale-namespace-helper", daemon=True)
    thread.start()
    forked.wait()
    child.close()
    for fd in (ready_w, go_r, st_w):
        os.close(fd)
    try:
        pid = got[0]
        if isinstance(pid, BaseException):
            raise SandboxError(f"cannot start the namespace helper: {pid}")
        try:
            parent_map(pid, ready_r, go_w)
            wire.decode(_read_all(st_r), what)
        except BaseException:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            parent.close()
            raise
    finally:
        for fd in (ready_r, go_w, st_r):
            os.close(fd)
    helper = Helper(parent, pid, idmap, map_error, thread)
    global _owner
    if not _started or _owner != bale:
        _started.clear()
        _owner = bale
        atexit.register(_close_all)
    _started.append(helper)
    return helper


def _helper_main(bale: int, keep: tuple[int, int, int, int], enter: Callable[[int, int], None]) -> NoReturn:
    """The helper, just forked: never returns."""
    sock_fd, ready_w, go_r, st_w = keep
    try:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_IGN)  # bale's signals are bale's
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # workers are reaped by _serve
        kernel.set_pdeathsig(signal.SIGKILL)
        if os.getppid() != bale:
            os._exit(1)
        kernel.close_fds_except(set(keep))  # nothing bale had open stays open here
        null = os.open(os.devnull, os.O_RDWR)  # nor bale's stdio: each request brings its own
        for fd in (0, 1, 2):
            if fd not in keep and fd != null:  # (bale started with a closed stdio fd: it may be ours)
                os.dup2(null, fd)
        if null > 2:
            os.close(null)
        lease.adopt([])
        enter(ready_w, go_r)
        if os.getppid() != bale:  # pdeathsig was set again after the change of credentials
            os._exit(1)
        payload = wire.encode_ok(None)
        code = 0
    except BaseException as exc:  # noqa: BLE001 - the answer says what failed
        payload, code = wire.encode_error(exc), 1
    try:
        _write_all(st_w, payload)
        os.close(st_w)
        os.close(ready_w)
        os.close(go_r)
    except OSError:
        code = 1
    if code:
        os._exit(code)
    try:
        _serve(sock_fd)
    finally:
        os._exit(0)


def _recv_request(sock: socket.socket) -> tuple[bytes, list[int]] | None:
    """One request's envelope and fds; None at the end of bale's stream (bale is gone)."""
    head, fds = b"", []
    while len(head) < HEADER.size:
        data, got, flags, _ = socket.recv_fds(sock, HEADER.size - len(head), MAX_FDS, socket.MSG_CMSG_CLOEXEC)
        fds += got
        if not data:
            for fd in fds:
                os.close(fd)
            return None
        if flags & socket.MSG_CTRUNC:
            for fd in fds:
                os.close(fd)
            raise SandboxError("too many fds with one request")
        head += data
    size, nfds = HEADER.unpack(head)
    body = bytearray()
    while len(body) < size:
        chunk = sock.recv(min(size - len(body), 1 << 20))
        if not chunk:
            for fd in fds:
                os.close(fd)
            return None
        body += chunk
    if len(fds) != nfds:
        for fd in fds:
            os.close(fd)
        raise SandboxError("request fds do not match its header")
    return bytes(body), fds


def _reap(block: bool) -> None:
    """Wait for ended workers (all of them when ``block``): their CPU time becomes the helper's
    children's, which bale's keeper thread collects in turn."""
    while True:
        try:
            pid, _ = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return
        except InterruptedError:
            continue
        if pid == 0:
            return


def _serve(sock_fd: int) -> None:
    """The helper's loop: receive, fork a worker, close the request's fds here, repeat; at the end
    of bale's stream, wait for the workers still running and return."""
    sock = socket.socket(fileno=sock_fd)
    me = os.getpid()
    while True:
        _reap(False)
        try:
            got = _recv_request(sock)
        except (SandboxError, OSError):
            got = None  # a framing error: bale cannot be answered reliably any more
        if got is None:
            _reap(True)
            return
        body, fds = got
        try:
            env = json.loads(body)
            if isinstance(env, dict) and isinstance(env.get("req"), dict):
                request.check(env["req"])
                request.preload(env["req"])
        except Exception:  # noqa: BLE001 - the worker reports malformed requests
            pass
        try:
            pid = os.fork()
        except OSError as exc:
            try:
                _write_all(fds[0], PID.pack(0) + wire.encode_error(SandboxError(f"fork: {exc.strerror}")))
            except (OSError, IndexError):
                pass
            pid = -1
        if pid == 0:
            _worker(sock, me, body, fds)
        for fd in fds:
            os.close(fd)


def _worker(sock: socket.socket, helper: int, body: bytes, fds: list[int]) -> NoReturn:
    """A worker: the one call of a request, then exit. Never returns."""
    code = 1
    reply = fds[0] if fds else -1
    try:
        sock.close()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        kernel.set_pdeathsig(signal.SIGKILL)
        if os.getppid() != helper:
            os._exit(1)
        _write_all(reply, PID.pack(os.getpid()))
        env = json.loads(body)
        if not isinstance(env, dict) or set(env) != {"req", "flags", "cwd", "std", "leases", "argfds"}:
            raise SandboxError("malformed request envelope")
        std, held, argfds, flags = env["std"], env["leases"], env["argfds"], env["flags"]
        for target, index in enumerate(std):
            os.dup2(fds[index], target)
        lease.adopt([(str(k), str(i), str(p), fds[n]) for k, i, p, n in held])
        try:
            os.chdir(str(env["cwd"]))
        except OSError:
            os.chdir("/")
        if not isinstance(flags, int) or flags & ~(sc.CLONE_NEWNS | sc.CLONE_NEWPID | sc.CLONE_NEWIPC
                                                    | sc.CLONE_NEWUTS | sc.CLONE_NEWNET):
            raise SandboxError("malformed request flags")
        sc.unshare(flags)
        fn, args, _ = request.decode_call(request.check(env["req"]), fds[argfds:])
        payload = wire.encode_ok(fn(*args))
        code = 0
    except BaseException as exc:  # noqa: BLE001 - everything goes back to bale
        payload = wire.encode_error(exc)
    try:
        _write_all(reply, payload)
    finally:
        os._exit(code)


def run_request(spec: Any, rootfs: Any, full_mapping: bool, stdin_r: int | None) -> dict[str, object]:
    """A RUN in a worker (whose unshare made its mount, pid, ipc, uts and maybe net namespaces):
    process.run_in_namespace's result as RunResult.to_plain gives it."""
    return run_in_namespace(spec, rootfs, full_mapping, stdin_r).to_plain()
