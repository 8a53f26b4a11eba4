"""The ptrace isolation (builder/sandbox/ptrace.py: proot under two Landlock domains, owners recorded
by bale), forced on this host as the unprivileged user:

* landlock_exec's program alone (no proot) keeps a process to the paths it lists: the boundary that
  holds whatever proot fails to translate;
* every owner-changing call a RUN can make (fchown, fchownat with AT_EMPTY_PATH and with a dirfd,
  lchown of a symlink, chown through a symlink, chown of a set-uid file) is recorded and lands in the
  layer as root's build gives it; bale's record xattr cannot be set by the RUN, another user xattr
  can; what a RUN with a non-root USER makes is that user's. The layers are read with tarfile;
* read-only directories (0555, as /usr/bin in Fedora images) and unreadable files (0000, as their
  /etc/shadow) work as root's build has them: extracted again into a later stage, written by a RUN,
  read for a layer and by COPY --from, with root's digest;
* ``RUN --network=none`` cannot connect to a TCP port (Landlock's network rights); with the default
  network it can (the pod's);
* dpkg (the host's, with its libraries, as a scratch image) installs a package whose files are
  root's and whose postinst chowns: the layer has root's files and the postinst's owners;
* a RUN that kills every process it may signal (kill -9 -1) reaches none outside its Landlock domain
  (neither proot nor bale, nor anything else of the pod): the build goes on.
"""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from builder.sandbox import landlock, landlock_exec
from tests.fixtures.rootfs import make_busybox_rootfs
from tests.helpers.oci_reader import flatten, read_layout
from tests.helpers.root_build import layout_digest, root_build

pytestmark = [pytest.mark.slow]
HERE = Path(__file__).parent
EPOCH = "1700000000"
OWNERS_DOCKERFILE = """FROM busybox
COPY owners /owners
RUN /owners
USER 7:8
RUN touch /tmp/u && mkdir /tmp/ud && ln -s u /tmp/ul
"""


@pytest.fixture(scope="module")
def owners_bin(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("owners") / "owners"
    subprocess.run(["gcc", "-static", "-O1", "-o", str(out), str(HERE / "testdata" / "owners.c")], check=True)
    return out


def test_landlock_exec_alone_keeps_a_process_to_its_rootfs(tmp_path):
    """No proot: the program's domain (the rootfs only, the scopes) refuses a file outside by its host
    path, as it would one that proot failed to translate, and execs the command inside it."""
    if landlock.abi() < 6:
        pytest.fail(f"this kernel offers Landlock ABI {landlock.abi()}; the ptrace isolation needs 6")
    root = make_busybox_rootfs(tmp_path / "root")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "planted").write_text("PLANTED\n")
    (root / "inside").write_text("INSIDE\n")
    everything = landlock.all_fs_rights(landlock.abi())
    busybox = str(root / "bin" / "busybox").encode()
    script = f"cat {root}/inside; cat {outside}/planted; kill -0 1 || echo no-signal-out".encode()
    prog = tmp_path / "enter"
    prog.write_bytes(landlock_exec.build([(str(root), everything)], everything,
                                         landlock.SCOPE_SIGNAL | landlock.SCOPE_ABSTRACT_UNIX_SOCKET,
                                         busybox, [b"sh", b"-c", script], [b"PATH=/nonexistent"]))
    prog.chmod(0o755)
    r = subprocess.run(["setpriv", "--no-new-privs", str(prog)], capture_output=True, text=True, timeout=60)
    assert r.stdout.splitlines() == ["INSIDE", "no-signal-out"], r.stdout + r.stderr
    assert "planted': Permission denied" in r.stderr, r.stderr
    # without no_new_privs (nor CAP_SYS_ADMIN) the kernel refuses the domain: one line, 126, nothing run
    r = subprocess.run(["capsh", "--drop=cap_sys_admin", "--", "-c", 'exec "$0"', str(prog)], capture_output=True,
                       text=True, timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (126, "", "bale: cannot restrict the RUN with Landlock\n")


def test_every_owner_call_is_recorded_as_root_s_build_gives_it(unprivileged_user, user_tmp, busybox_layout,
                                                             owners_bin, tmp_path):
    u = unprivileged_user
    ctx = user_tmp / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(OWNERS_DOCKERFILE)
    (ctx / "owners").write_bytes(owners_bin.read_bytes())
    (ctx / "owners").chmod(0o755)
    for p in (ctx, ctx / "Dockerfile", ctx / "owners"):
        os.chown(p, u.uid, u.gid)
    reference, _ = root_build(tmp_path / "root", busybox_layout, "busybox", ctx, EPOCH)
    store = u.busybox_store(user_tmp, busybox_layout)
    r = u.bale("bud", "--isolation", "ptrace", "-t", f"oci:{user_tmp}/out:latest", str(ctx), root=store,
               env={"SOURCE_DATE_EPOCH": EPOCH}, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    said = dict(line.rsplit(" ", 1) for line in r.stdout.splitlines()
                if line.startswith(("fchown", "lchown", "chown-", "setxattr")) and " " in line)
    assert said == {"fchown": "ok", "fchownat-empty": "ok", "fchownat-dirfd": "ok", "lchown": "ok",
                    "chown-through-link": "ok", "chown-suid": "ok", "setxattr-user": "ok"}, r.stdout
    fs = flatten(read_layout(user_tmp / "out")[2])
    owner = {p: (e.info.uid, e.info.gid) for p, e in fs.items()}
    assert owner["/o-fchown"] == (21, 22) and owner["/o-empty"] == (23, 24)
    assert owner["/o-dir/rel"] == (25, 26) and owner["/o-link"] == (27, 28)
    assert owner["/o-target"] == (29, 30) and owner["/o-suid"] == (31, 0)
    assert fs["/o-suid"].info.mode == 0o755  # set-uid cleared by the chown, as the kernel does
    assert owner["/tmp/u"] == owner["/tmp/ud"] == owner["/tmp/ul"] == (7, 8)
    assert fs["/o-xattr"].info.pax_headers.get("SCHILY.xattr.user.note") == "hi"
    assert owner["/o-xattr"] == (0, 0)  # the RUN's own user.bale.owner "5:5" was refused
    assert not [k for e in fs.values() for k in e.info.pax_headers if "user.bale" in k]
    assert layout_digest(user_tmp / "out") == layout_digest(reference)


READONLY_DOCKERFILE = """FROM busybox AS one
RUN mkdir -p /ro/sub && echo x > /ro/sub/f && echo s > /secret && chmod 0000 /secret && chmod 0555 /ro/sub /ro
RUN echo more > /ro/sub/g && echo changed > /secret && chmod 0000 /secret
FROM one AS two
RUN echo again > /ro/sub/h && cat /secret
FROM busybox
COPY --from=two /secret /ro /x/
"""


def test_read_only_directories_and_unreadable_files_as_root_s_build(unprivileged_user, user_tmp, busybox_layout,
                                                                    tmp_path):
    u = unprivileged_user
    ctx = user_tmp / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(READONLY_DOCKERFILE)
    os.chown(ctx, u.uid, u.gid)
    reference, _ = root_build(tmp_path / "root", busybox_layout, "busybox", ctx, EPOCH)
    store = u.busybox_store(user_tmp, busybox_layout)
    r = u.bale("bud", "--isolation", "ptrace", "-t", f"oci:{user_tmp}/out:latest", str(ctx), root=store,
               env={"SOURCE_DATE_EPOCH": EPOCH}, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "changed" in r.stdout.splitlines()
    fs = flatten(read_layout(user_tmp / "out")[2])
    assert fs["/x/secret"].content == b"changed\n" and fs["/x/secret"].info.mode == 0
    assert fs["/x/sub/h"].content == b"again\n" and fs["/x/sub"].info.mode == 0o555
    assert layout_digest(user_tmp / "out") == layout_digest(reference)


def test_network_none_refuses_tcp(unprivileged_user, user_tmp, busybox_layout):
    import socket
    import threading
    u = unprivileged_user
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]

    def serve() -> None:  # answer and hang up, so nc ends
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.sendall(b"bye\n")
            conn.close()
    threading.Thread(target=serve, daemon=True).start()
    ctx = user_tmp / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "FROM busybox\n"
        f"RUN echo hi | nc -w 2 127.0.0.1 {port} && echo default-connected || echo default-refused\n"
        f"RUN --network=none echo hi | nc -w 2 127.0.0.1 {port} && echo none-connected || echo none-refused\n")
    os.chown(ctx, u.uid, u.gid)
    store = u.busybox_store(user_tmp, busybox_layout)
    try:
        r = u.bale("bud", "--isolation", "ptrace", "-t", "n", str(ctx), root=store, check=False, timeout=120)
    finally:
        server.close()
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert "default-connected" in lines and "none-refused" in lines, r.stdout + r.stderr


DPKG_TOOLS = ("dpkg", "dpkg-deb", "dpkg-split", "dpkg-query", "tar", "sh", "dash", "chown", "mkdir", "rm", "mv",
              "cp", "ls", "cat", "find", "diff", "xz", "gzip", "zstd", "ldconfig", "start-stop-daemon")


def _debian_tree(dest: Path) -> None:
    """A minimal dpkg system from this (Debian) host's own binaries and the libraries ldd names."""
    import shutil
    for d in ("tmp", "etc/dpkg", "var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers", "var/log",
              "usr/bin", "usr/sbin", "usr/lib", "opt"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    for name in ("bin", "sbin", "lib"):
        (dest / name).symlink_to(f"usr/{name}")
    (dest / "lib64").mkdir(exist_ok=True)
    for f in ("var/lib/dpkg/status", "var/lib/dpkg/available"):
        (dest / f).touch()
    for tool in DPKG_TOOLS:
        found = shutil.which(tool, path="/usr/bin:/usr/sbin:/bin:/sbin")
        if not found:
            continue
        real = Path(found).resolve()
        files = [real] + [Path(p) for p in subprocess.run(["ldd", str(real)], capture_output=True, text=True).stdout.split()
                          if p.startswith("/")]
        for f in files:
            target = dest / str(f).lstrip("/")
            if f == real:
                target = dest / "usr" / ("sbin" if "sbin" in found else "bin") / tool
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                shutil.copy2(f.resolve(), target)
    (dest / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (dest / "etc" / "group").write_text("root:x:0:\n")


def test_dpkg_installs_with_root_s_files_and_the_postinst_s_owners(unprivileged_user, user_tmp, busybox_layout):
    u = unprivileged_user
    if not Path("/usr/bin/dpkg-deb").exists():
        pytest.fail("dpkg-deb missing: the test host is Debian")
    ctx = user_tmp / "ctx"
    _debian_tree(ctx / "root")
    pkg = user_tmp / "pkg"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "opt" / "demo").mkdir(parents=True)
    (pkg / "opt" / "demo" / "file").write_text("hello\n")
    (pkg / "DEBIAN" / "control").write_text("Package: demo\nVersion: 1.0\nArchitecture: all\n"
                                           "Maintainer: bale tests <tests@example.org>\nDescription: demo\n")
    (pkg / "DEBIAN" / "postinst").write_text("#!/bin/sh\nchown 42:43 /opt/demo/file\n"
                                             "mkdir -p /var/lib/demo && chown 7:7 /var/lib/demo\n")
    (pkg / "DEBIAN" / "postinst").chmod(0o755)
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(pkg), str(ctx / "demo.deb")], check=True,
                   capture_output=True)
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY root/ /\nCOPY demo.deb /tmp/\n"
                                    "RUN [\"/usr/bin/dpkg\", \"-i\", \"/tmp/demo.deb\"]\n")
    subprocess.run(["chown", "-R", f"{u.uid}:{u.gid}", str(ctx)], check=True)
    store = user_tmp / "store"
    r = u.bale("bud", "--isolation", "ptrace", "-t", f"oci:{user_tmp}/out:latest", str(ctx), root=store,
               check=False, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Setting up demo (1.0) ..." in r.stdout, r.stdout
    fs = flatten(read_layout(user_tmp / "out")[2])
    owner = {p: (e.info.uid, e.info.gid) for p, e in fs.items()}
    assert owner["/opt/demo/file"] == (42, 43) and fs["/opt/demo/file"].info.mode == 0o644
    assert owner["/var/lib/demo"] == (7, 7) and owner["/opt/demo"] == (0, 0)
    assert owner["/var/lib/dpkg/info/demo.list"] == (0, 0)


def test_a_run_killing_everything_it_may_reaches_nothing_outside(unprivileged_user, user_tmp, busybox_layout):
    u = unprivileged_user
    ctx = user_tmp / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN kill -9 -1; sleep 1; echo survived\nRUN echo next\n")
    os.chown(ctx, u.uid, u.gid)
    store = u.busybox_store(user_tmp, busybox_layout)
    sleeper = subprocess.Popen(["runuser", "-u", u.name, "--", "sleep", "60"])  # another process of bale's uid
    try:
        r = u.bale("bud", "--isolation", "ptrace", "-t", "k", str(ctx), root=store, check=False)
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "survived" in r.stdout.splitlines() and "next" in r.stdout.splitlines(), r.stdout


NON_ROOT_OWNERS_DOCKERFILE = """FROM busybox
USER 1000:1000
RUN chmod u+s /bin/busybox; ln /bin/busybox /tmp/hl; cp /bin/busybox /tmp/mine && chown 0:0 /tmp/mine; \\
    echo chown-root=$?; chmod 4755 /tmp/mine; touch /tmp/own && chown 1000:1000 /tmp/own; echo chown-own=$?; \\
    chmod u+s /tmp/own; cp /bin/busybox /tmp/xo && chmod 4311 /tmp/xo
"""


def test_a_non_root_user_makes_no_set_uid_file_of_another_owner(unprivileged_user, user_tmp, busybox_layout):
    """A RUN under USER 1000 runs as bale's uid, which owns every file on disk. As in Docker (no
    CAP_CHOWN or CAP_FOWNER for a non-root user: the kernel's chown_ok/chgrp_ok and chmod's owner
    check) it can neither chown a file to root (EPERM; was recorded: a set-uid root file of its own
    making) nor make root's /bin/busybox set-uid (the bit is taken away after the RUN), and a hard
    link it makes to root's file leaves that file root's (was recorded as 1000's); its own file
    stays its own, set-uid as it asked, also where it took its own read permission away (chmod 4311:
    the record was unreadable to bale and read as 0:0, a set-uid root binary)."""
    u = unprivileged_user
    ctx = user_tmp / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(NON_ROOT_OWNERS_DOCKERFILE)
    for p in (ctx, ctx / "Dockerfile"):
        os.chown(p, u.uid, u.gid)
    store = u.busybox_store(user_tmp, busybox_layout)
    r = u.bale("bud", "--isolation", "ptrace", "-t", f"oci:{user_tmp}/out:latest", str(ctx), root=store, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "chown-root=1" in r.stdout and "chown-own=0" in r.stdout, r.stdout + r.stderr
    fs = flatten(read_layout(user_tmp / "out")[2])
    assert (fs["/bin/busybox"].info.uid, fs["/bin/busybox"].info.gid, fs["/bin/busybox"].info.mode) == (0, 0, 0o755)
    assert (fs["/tmp/mine"].info.uid, fs["/tmp/mine"].info.gid, fs["/tmp/mine"].info.mode) == (1000, 1000, 0o4755)
    assert (fs["/tmp/own"].info.uid, fs["/tmp/own"].info.mode & 0o7000) == (1000, 0o4000)
    # records read on files their owner cannot read (user.* xattrs need read permission): were 0:0
    assert (fs["/tmp/xo"].info.uid, fs["/tmp/xo"].info.gid, fs["/tmp/xo"].info.mode) == (1000, 1000, 0o4311)
    # (a mode-0000 directory cannot be listed to write the layer: the step fails, see the test below)
    assert not [p for p, e in fs.items() if e.info.mode & 0o6000 and (e.info.uid, e.info.gid) != (1000, 1000)]


def _processes_with(token: str) -> list[str]:
    out = subprocess.run(["pgrep", "-af", token], capture_output=True, text=True).stdout.splitlines()
    return [l for l in out if "pgrep" not in l]


def test_no_process_of_a_run_outlives_the_step_or_a_killed_bale(unprivileged_user, user_tmp, busybox_layout,
                                                                tmp_path):
    """proot traces every process of the RUN and kills them all when it gets SIGQUIT (it sets no
    PTRACE_O_EXITKILL). A clone with CLONE_UNTRACED escaped its tracing (untranslated, unknown to
    proot: it went on after the step and after bale) and is refused (EPERM); proot's parent-death
    signal is SIGQUIT, so bale killed with SIGKILL during a RUN leaves none of the RUN's processes
    (with SIGKILL a setsid'd one went on, detached); bale stopped by SIGTERM sends proot SIGQUIT, not
    SIGKILL, for the same reason."""
    u = unprivileged_user
    token = str(700000 + int.from_bytes(os.urandom(2), "big"))
    ctx = user_tmp / "ctx"
    ctx.mkdir()
    subprocess.run(["gcc", "-static", "-O1", "-o", str(ctx / "untraced"), str(HERE / "testdata" / "untraced.c")],
                   check=True)
    (ctx / "Dockerfile").write_text(f'FROM busybox\nCOPY untraced /untraced\nRUN ["/untraced", "{token}"]\n')
    for p in (ctx, ctx / "Dockerfile", ctx / "untraced"):
        os.chown(p, u.uid, u.gid)
    store = u.busybox_store(user_tmp, busybox_layout)
    try:
        r = u.bale("bud", "--isolation", "ptrace", "-t", "u", str(ctx), root=store, check=False, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"untraced-clone=-1 errno={errno.EPERM}" in r.stdout.splitlines(), r.stdout
        assert _processes_with(token) == []
        (ctx / "Dockerfile").write_text(f"FROM busybox\nRUN (setsid sleep {token} &); sleep {token}\n")
        for sig in (signal.SIGKILL, signal.SIGTERM):
            bale = subprocess.Popen(["runuser", "-u", u.name, "--", "env", "-i",
                                     *[f"{k}={v}" for k, v in u.env().items()], u.python, "-m", "builder.cli.main",
                                     "--root", str(store), "bud", "--isolation", "ptrace", "-t", "k", str(ctx)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            deadline = time.monotonic() + 60
            while len(_processes_with(f"sleep {token}")) < 2 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert len(_processes_with(f"sleep {token}")) == 2
            pids = subprocess.run(["pgrep", "-P", str(bale.pid)], capture_output=True, text=True).stdout.split()
            for pid in pids or [str(bale.pid)]:  # bale itself (runuser waits for it)
                os.kill(int(pid), sig)
            _, err = bale.communicate(timeout=30)
            if sig == signal.SIGTERM:  # stopped at once, one line (stop_all: SIGQUIT to proot)
                assert bale.returncode == 143 and "Traceback" not in err, err
            deadline = time.monotonic() + 10
            while _processes_with(token) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert _processes_with(token) == [], sig
    finally:
        for line in _processes_with(token):
            try:
                os.kill(int(line.split()[0]), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass


def test_an_unlistable_directory_fails_the_step_instead_of_losing_its_files(unprivileged_user, user_tmp,
                                                                           busybox_layout):
    """bale has no CAP_DAC_READ_SEARCH in the ptrace isolation: a directory the RUN leaves at mode 0000
    cannot be listed when the layer is diffed. Its files must not silently vanish from the layer (the
    rootless build keeps /d/f): the step fails in one line naming the directory."""
    u = unprivileged_user
    ctx = user_tmp / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN mkdir /d && echo x > /d/f && chmod 000 /d\n")
    os.chown(ctx, u.uid, u.gid)
    store = u.busybox_store(user_tmp, busybox_layout)
    r = u.bale("bud", "--isolation", "ptrace", "-t", f"oci:{user_tmp}/out:latest", str(ctx), root=store,
               check=False)
    assert r.returncode == 1, r.stdout + r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("bale:") and "WARNING" not in line]
    assert len(errors) == 1 and "Dockerfile:2" in errors[0] and "/d" in errors[0], r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    r = u.bale("bud", "-t", f"oci:{user_tmp}/rootless:latest", str(ctx), root=store, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    fs = flatten(read_layout(user_tmp / "rootless")[2])
    assert fs["/d/f"].content == b"x\n" and fs["/d"].info.mode & 0o7777 == 0
