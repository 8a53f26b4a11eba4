"""Owners a RUN sees and sets under the ptrace isolation (builder/sandbox/stat_notify.py, owner_notify.py,
ptrace_filter.py), as the unprivileged user baletest (uid 1001 here, 1000 on a fresh machine), against the same build by root on the host,
who really chowns (the image Docker gives: BuildKit runs RUN as real root in the container):

* a chown to bale's own uid or gid number (the test user's uid) is recorded as named, not as the RUN's faked user
  (proot's fake_id0 swap hands the faked id over as the outer filter's SENTINEL instead);
* stat, lstat, fstat and newfstatat (each way: path, symlink not followed, directory fd, AT_EMPTY_PATH
  with "" and with NULL) show the recorded owners, root's for unrecorded files, a pipe's and /dev/null's
  real ones, a mode-0000 file's record too; busybox's ``chown -R UID DIR``, which passes each file's
  stat'ed group, keeps it; a file a ``USER 1234`` RUN makes is 1234's during that RUN;
* hostile calls: a path leading out of the rootfs by '..' or naming the host's own test directory
  finds the rootfs's file or nothing, never the pod's; an unmapped stat buffer gives EFAULT and the
  next call works; a directory swapped for a symlink to a pod directory while the RUN chowns and
  stats the file inside, in a loop, never leads bale to the pod's file;
* the answerer alone (StatView.answer on this process's own memory): the struct stat it writes is
  byte for byte the kernel's for the same file but for the owner; EFAULT for an unmapped buffer;
  a symlink out of its root stays inside.

Layers are read with tarfile (tests/helpers/oci_reader); the image digests must equal root's (so the
RUN's own stat and ``ls -ln /`` output, written into the layer, is root's: its ``total`` line, block counts
of the file system, and /sys, which this isolation does not make, left out).
"""
from __future__ import annotations

import ctypes
import errno
import mmap
import os
import subprocess
from pathlib import Path

import pytest

from builder.sandbox import stat_notify
from tests.helpers.oci_reader import flatten, read_layout
from tests.helpers.root_build import layout_digest, root_build

HERE = Path(__file__).parent
EPOCH = "1700000000"

# /z (mode 0000, its record read with the owner's read bit set for the call) is removed in its own RUN: such
# a file shows up again in the next RUN's layer under this isolation, with or without stat answered (the
# layer writer's chmod around the read changes its ctime), a separate issue
DOCKERFILE = """FROM busybox
COPY statprobe /statprobe
RUN touch /a /b /c && chown {me}:{me} /a && chown 0:{me} /b && chown 5:6 /c \\
 && ln -s /c /lnk && chown -h 9:10 /lnk && mkfifo /fifo && chown 3:4 /fifo \\
 && touch /z && chown 11:12 /z && chmod 000 /z \\
 && mkdir -p /d/e && touch /d/f /d/e/g && chown 7:8 /d/e /d/e/g && chown -R 1234 /d \\
 && echo 'bob:x:{me}:{me}::/home/bob:/bin/sh' >> /etc/passwd && mkdir -p /home/bob/.config \\
 && chown -R bob:{me} /home/bob \\
 && stat -c '%n %u:%g' /a /b /c /d /d/e /d/f /d/e/g /home/bob /home/bob/.config /bin/busybox /etc/passwd \\
    /dev/null /proc /etc/hosts /z > /stat.out && rm /z \\
 && ls -ln / > /tmp/ls && awk 'NR > 1 && $NF != "sys" {print $3 ":" $4, $NF}' /tmp/ls > /ls.out && rm /tmp/ls \\
 && /statprobe {host} > /probe.out && cat /stat.out /probe.out
USER 1234:1234
RUN touch /tmp/mine && stat -c '%n %u:%g' /tmp/mine /tmp /etc/passwd /etc/hosts > /tmp/user.out \\
 && cat /tmp/user.out
"""


@pytest.fixture(scope="module")
def statprobe(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("statprobe") / "statprobe"
    subprocess.run(["gcc", "-static", "-O1", "-o", str(out), str(HERE / "testdata" / "statprobe.c")], check=True)
    return out


@pytest.mark.slow
def test_stat_shows_and_chown_sets_the_owners_root_s_build_gives(unprivileged_user, user_tmp, busybox_layout,
                                                                 statprobe, tmp_path):
    u = unprivileged_user
    me = u.uid  # the chowns to {me} below are to bale's own uid (1000 or 1001, as useradd gave it)
    ctx = user_tmp / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE.replace("{host}", str(user_tmp)).replace("{me}", str(me)))
    (ctx / "statprobe").write_bytes(statprobe.read_bytes())
    (ctx / "statprobe").chmod(0o755)
    for p in (ctx, ctx / "Dockerfile", ctx / "statprobe"):
        os.chown(p, u.uid, u.gid)
    reference, _ = root_build(tmp_path / "root", busybox_layout, "busybox", ctx, EPOCH)
    store = u.busybox_store(user_tmp, busybox_layout)
    r = u.bale("bud", "--isolation", "ptrace", "-t", f"oci:{user_tmp}/out:latest", str(ctx), root=store,
               env={"SOURCE_DATE_EPOCH": EPOCH}, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    seen = dict(line.split(" ", 1) for line in r.stdout.splitlines()
                if line.startswith(("/", "stat", "lstat", "fstat", "efault", "after")) and " " in line)
    assert {k: seen[k] for k in ("/a", "/b", "/c", "/d", "/d/e", "/d/f", "/d/e/g", "/home/bob", "/home/bob/.config",
                                 "/bin/busybox", "/etc/passwd", "/dev/null", "/proc", "/etc/hosts", "/z")} == {
        "/a": f"{me}:{me}", "/b": f"0:{me}", "/c": "5:6", "/d": "1234:0", "/d/e": "1234:8", "/d/f": "1234:0",
        "/d/e/g": "1234:8", "/home/bob": f"{me}:{me}", "/home/bob/.config": f"{me}:{me}", "/bin/busybox": "0:0",
        "/etc/passwd": "0:0", "/dev/null": "0:0", "/proc": "0:0", "/etc/hosts": "0:0", "/z": "11:12"}, r.stdout
    assert seen["stat"] == seen["fstat"] == seen["fstatat-empty"] == seen["fstatat-null"] == "5:6 100644"
    assert seen["stat-link"] == seen["after"] == "5:6 100644"
    assert seen["lstat-link"] == "9:10 120777" and seen["lstat-fifo"] == "3:4 10644"
    assert seen["fstatat-dirfd"] == "1234:8 40755" and seen["fstat-opath-fifo"] == "3:4 10644"
    assert seen["fstat-pipe"] == "0:0 10600" and seen["fstat-devnull"] == "0:0 20666"
    assert seen["fstat-badfd"] == "error EBADF" and seen["stat-missing"] == "error ENOENT"
    assert seen["stat-notdir"] == "error ENOTDIR"
    assert seen["stat-dotdot"] == "0:0 100644"  # the rootfs's /etc/passwd
    assert seen["stat-host"] == "error ENOENT"  # the test's own directory on the host: not there
    assert seen["efault-buffer"] == seen["efault-path"] == seen["efault-fstat"] == "error EFAULT"
    assert "/tmp/mine 1234:1234\n/tmp 0:0\n/etc/passwd 0:0\n/etc/hosts 0:0\n" in r.stdout, r.stdout
    fs = flatten(read_layout(user_tmp / "out")[2])
    owner = {p: (e.info.uid, e.info.gid) for p, e in fs.items()}
    assert owner["/a"] == (me, me) and owner["/b"] == (0, me) and owner["/home/bob"] == (me, me)
    assert owner["/d/e"] == owner["/d/e/g"] == (1234, 8) and owner["/d/f"] == (1234, 0)
    assert owner["/tmp/mine"] == (1234, 1234)
    assert layout_digest(user_tmp / "out") == layout_digest(reference)


def _libc_stat(path: bytes, buf: ctypes.Array[ctypes.c_char], nofollow: bool = False) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return int(libc.syscall(6 if nofollow else 4, ctypes.c_char_p(path), buf))


def test_the_answer_is_the_kernel_s_struct_stat_with_the_owner(tmp_path):
    """stat and lstat answered on this process's own memory: the 144 bytes equal the kernel's own
    struct stat for the same file, but for uid and gid (root's: no record); EFAULT for an unmapped
    buffer, nothing written; a symlink out of the root resolves inside it."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "f").write_text("inside\n")
    (root / "up").symlink_to("../../../../../../../etc/f")
    (tmp_path / "outside").write_text("outside\n")
    (root / "out").symlink_to(str(tmp_path / "outside"))
    view = stat_notify.StatView(str(root), (), (0, 0), frozenset())
    mem = os.open("/proc/self/mem", os.O_RDWR)
    try:
        for guest, host, nr in ((b"/etc/f", root / "etc" / "f", 4), (b"/up", root / "up", 6),
                                (b"/up", root / "etc" / "f", 4)):
            path = ctypes.create_string_buffer(guest)
            got = ctypes.create_string_buffer(144)
            want = ctypes.create_string_buffer(144)
            assert view.answer(nr, [ctypes.addressof(path), ctypes.addressof(got), 0, 0, 0, 0], os.getpid(), mem) == 0
            assert _libc_stat(bytes(host), want, nofollow=nr == 6) == 0
            assert got.raw[:28] + got.raw[36:] == want.raw[:28] + want.raw[36:], guest
            assert got.raw[28:36] == b"\0" * 8  # uid 0, gid 0
        # an absolute symlink to the host's file: resolved inside the root, where it is missing
        path = ctypes.create_string_buffer(b"/out")
        got = ctypes.create_string_buffer(144)
        assert view.answer(4, [ctypes.addressof(path), ctypes.addressof(got), 0, 0, 0, 0], os.getpid(), mem) \
            == errno.ENOENT
        # an unmapped buffer
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
        addr = int(libc.mmap(None, 4096, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                             -1, 0))
        assert libc.munmap(ctypes.c_void_p(addr), 4096) == 0
        path = ctypes.create_string_buffer(b"/etc/f")
        assert view.answer(4, [ctypes.addressof(path), addr, 0, 0, 0, 0], os.getpid(), mem) == errno.EFAULT
        assert view.answer(4, [addr, ctypes.addressof(got), 0, 0, 0, 0], os.getpid(), mem) == errno.EFAULT
        # newfstatat's flags the kernel refuses
        assert view.answer(262, [2**64 - 100, ctypes.addressof(path), ctypes.addressof(got), 0x8000, 0, 0],
                           os.getpid(), mem) == errno.EINVAL
    finally:
        os.close(mem)
        view.close()


RACE_DOCKERFILE = """FROM busybox
RUN mkdir -p /r/d && touch /r/d/f && chmod 4755 /r/d/f \\
 && (i=0; while [ $i -lt 1500 ]; do mv /r/d /r/x; ln -s {host} /r/d; rm /r/d; mv /r/x /r/d; i=$((i+1)); done) & \\
    i=0; while [ $i -lt 1500 ]; do chown 5:5 /r/d/f 2>/dev/null; stat /r/d/f >/dev/null 2>&1; i=$((i+1)); done; \\
    wait; true
"""


@pytest.mark.slow
def test_a_symlink_swapped_in_meanwhile_never_turns_a_chown_to_a_pod_file(unprivileged_user, user_tmp,
                                                                          busybox_layout):
    """A RUN swaps a directory of the rootfs for a symlink to a directory of the pod (the test's own, bale's
    uid's, holding a set-uid file of the same name) while it chowns the file inside in a loop: bale opens
    the file inside the rootfs once and changes it through that fd, so the pod's file keeps its mode and
    gets no record. (When bale resolved a path and then used it, this lost the race here within 1,500
    rounds: the pod's file lost its set-uid bit and got user.bale.owner.)"""
    u = unprivileged_user
    host = user_tmp / "pod" / "d"
    host.mkdir(parents=True)
    (host / "f").write_text("pod\n")
    ctx = user_tmp / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(RACE_DOCKERFILE.replace("{host}", str(host)))
    for p in (host.parent, host, host / "f", ctx, ctx / "Dockerfile"):
        os.chown(p, u.uid, u.gid)
    (host / "f").chmod(0o4755)  # (after the chown, which clears it)
    store = u.busybox_store(user_tmp, busybox_layout)
    r = u.bale("bud", "--isolation", "ptrace", "-t", "race", str(ctx), root=store, check=False, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (host / "f").stat().st_mode & 0o7777 == 0o4755
    assert os.listxattr(host / "f") == [] and os.listxattr(host) == []
