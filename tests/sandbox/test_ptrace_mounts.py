"""RUN --mount in the ptrace isolation (builder/sandbox/ptrace_mounts.py: proot binds with Landlock
rules of their own), forced on this host as the unprivileged user, with the rootless sandbox's
semantics (test_run_mounts.py):

* a cache mount with uid/gid/mode is made once with them (BuildKit's dockerfile2llb
  convert_runmount.go setCacheUIDGID: Mkdir("/cache", mode, WithUIDGID(uid, gid))): its owner is
  recorded (the user.bale.owner xattr, read here with os.getxattr), its mode is real, and what one
  RUN writes the next reads;
* a secret is a file at /run/secrets/ID (mode 0400 by default), never on disk under the store or
  $TMPDIR while the build runs (BuildKit's secretMountInstance: a tmpfs file), nowhere after it;
* a tmpfs target is an empty 1777 directory of the RUN's own, empty again at the next RUN;
* a bind of the context is read-only (a write fails); an ``rw`` bind's writes never reach the
  context (frontend/dockerfile/docs/reference.md, RUN --mount=type=bind: "rw: Allow writes on the
  mount. Written data will be discarded"); a bind of another stage reads that stage;
* no layer holds a mount point: every layer is read with tarfile.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import tarfile
import io
import time
from pathlib import Path

import pytest

from builder.sandbox import ptrace_mounts
from tests.helpers.oci_reader import flatten, read_layout
from tests.helpers.secret_scan import scan_for
from tests.helpers.user_context import tree_view, user_context

pytestmark = [pytest.mark.slow]


def _layer_names(layout: Path) -> list[set[str]]:
    """Each layer's entry names ("/a/b"), read with tarfile."""
    out = []
    for data in read_layout(layout)[2]:
        with tarfile.open(fileobj=io.BytesIO(data)) as t:
            out.append({"/" + m.name.strip("/").removeprefix("./") for m in t.getmembers()})
    return out


def _under(names: set[str], *points: str) -> list[str]:
    return sorted(n for n in names for p in points if n == p or n.startswith(p + "/"))


def test_memory_dir_is_the_host_s_tmpfs():
    kind = subprocess.run(["stat", "-f", "-c", "%T", "/dev/shm"], capture_output=True, text=True).stdout.strip()
    assert ptrace_mounts.fs_type("/dev/shm") == kind == "tmpfs"
    assert ptrace_mounts.memory_dir() == "/dev/shm"
    assert ptrace_mounts.fs_type("/proc/self") == "proc"


CACHE_DOCKERFILE = """FROM busybox
RUN --mount=type=cache,id=c1,target=/var/cache/thing,uid=1000,gid=1001,mode=0750 \\
    echo mode=$(stat -c %a /var/cache/thing) && echo one > /var/cache/thing/f && mkdir /var/cache/thing/d && \
    cd /var/cache/thing && chown 7:8 f && chown 9:10 /var/cache/thing/d && echo chown-cache=ok
RUN --mount=type=cache,id=c1,target=/var/cache/thing,uid=1000,gid=1001,mode=0750 \\
    echo read=$(cat /var/cache/thing/f) && echo two >> /var/cache/thing/f
RUN --mount=type=cache,target=/plain echo plain > /plain/p
RUN --mount=type=cache,target=/plain echo plain=$(cat /plain/p)
USER 1000:1000
RUN --mount=type=cache,id=c1,target=/var/cache/thing,uid=1000,gid=1001,mode=0750 \
    mkdir /var/cache/thing/mine && touch /var/cache/thing/mine/x && echo user-wrote
"""


def test_cache_mount_is_shared_with_uid_gid_mode(unprivileged_user, user_tmp, busybox_layout):
    u = unprivileged_user
    ctx = user_context(u, user_tmp, "ctx", CACHE_DOCKERFILE)
    store = u.busybox_store(user_tmp, busybox_layout)
    r = u.bale("bud", "--isolation", "ptrace", "-t", f"oci:{user_tmp}/out:latest", str(ctx), root=store, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert "mode=750" in lines and "read=one" in lines and "plain=plain" in lines, r.stdout
    key = hashlib.sha256(b"c1").hexdigest()[:24]
    cache = store / "cache-mounts" / key / "cache"
    assert os.getxattr(cache, "user.bale.owner") == b"1000:1001"
    assert cache.stat().st_mode & 0o7777 == 0o750
    assert (cache / "f").read_text() == "one\ntwo\n" and (cache / "d").is_dir()
    # the RUN's chown in the mount is recorded there (relative to a cwd inside it, and by its path)
    assert "chown-cache=ok" in lines, r.stdout
    assert os.getxattr(cache / "f", "user.bale.owner") == b"7:8"
    assert os.getxattr(cache / "d", "user.bale.owner") == b"9:10"
    # USER 1000's files in the cache are its own (as the rootless sandbox's kernel makes them)
    assert "user-wrote" in lines, r.stdout
    assert os.getxattr(cache / "mine", "user.bale.owner") == os.getxattr(cache / "mine" / "x", "user.bale.owner") \
        == b"1000:1000"
    assert os.getxattr(cache / "f", "user.bale.owner") == b"7:8"
    for names in _layer_names(user_tmp / "out"):
        assert not _under(names, "/var/cache/thing", "/plain"), sorted(names)
    fs = flatten(read_layout(user_tmp / "out")[2])
    assert "/var/cache/thing" not in fs and "/plain" not in fs


SECRET_DOCKERFILE = """FROM busybox
RUN --mount=type=secret,id=tok sh -c 'echo got=$(cat /run/secrets/tok | cut -c1-6) mode=$(stat -c %a /run/secrets/tok); \\
    (echo x > /run/secrets/tok) 2>/dev/null && echo secret-written || echo secret-read-only; sleep 2'
RUN --mount=type=secret,id=tok,target=/etc/deep/tok,mode=0440 echo deep=$(stat -c %a /etc/deep/tok) && \\
    grep -q S3CRET /etc/deep/tok && echo deep-ok
RUN echo after > /after
"""


def test_secret_is_readable_in_memory_and_absent_from_layers(unprivileged_user, user_tmp, busybox_layout):
    u = unprivileged_user
    secret = b"S3CRET-" + os.urandom(8).hex().encode()
    src = user_tmp / "secret.txt"
    src.write_bytes(secret)
    os.chown(src, u.uid, u.gid)
    ctx = user_context(u, user_tmp, "ctx", SECRET_DOCKERFILE)
    store = u.busybox_store(user_tmp, busybox_layout)
    tmpdir = user_tmp / "tmpdir"
    tmpdir.mkdir()
    os.chown(tmpdir, u.uid, u.gid)
    shm_before = set(os.listdir("/dev/shm"))
    proc = subprocess.Popen(u.bale_argv("bud", "--isolation", "ptrace", "--secret", f"id=tok,src={src}", "-t",
                                        f"oci:{user_tmp}/out:latest", str(ctx), root=store,
                                        env={"TMPDIR": str(tmpdir)}),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    during: list[str] = []
    in_memory: list[str] = []
    while proc.poll() is None:  # while the build runs: on no disk but the source, in /dev/shm only
        during += scan_for(secret, tmpdir, store)
        in_memory += scan_for(secret, Path("/dev/shm"))
        time.sleep(0.2)
    out, err = proc.communicate()
    assert proc.returncode == 0, out + err
    lines = out.splitlines()
    assert "got=S3CRET mode=400" in lines and "secret-read-only" in lines, out + err
    assert "deep=440" in lines and "deep-ok" in lines, out + err
    assert during == [] and scan_for(secret, tmpdir, store) == []
    assert in_memory and all(p.startswith("/dev/shm/bale-secrets-") for p in in_memory), in_memory
    assert set(os.listdir("/dev/shm")) - shm_before == set()
    for names in _layer_names(user_tmp / "out"):
        assert not _under(names, "/run/secrets", "/etc/deep"), sorted(names)
    assert not [d for d in read_layout(user_tmp / "out")[2] if secret in d]
    fs = flatten(read_layout(user_tmp / "out")[2])
    assert fs["/after"].content == b"after\n"


TMPFS_BIND_DOCKERFILE = """FROM busybox AS other
RUN echo from-other > /other.txt
FROM busybox
RUN --mount=type=tmpfs,target=/scratch echo tmpfs=$(stat -c %a /scratch)$(ls -A /scratch | wc -l) && \\
    echo x > /scratch/f && cat /scratch/f && chown 3:3 /scratch/f && echo tmpfs-chown=ok
RUN --mount=type=tmpfs,target=/scratch echo tmpfs-again=$(ls -A /scratch | wc -l)
RUN --mount=type=bind,target=/ctx echo ro=$(cat /ctx/data.txt); \\
    (echo no > /ctx/data.txt) 2>/dev/null && echo ro-written || echo ro-refused; \\
    touch /ctx/new 2>/dev/null && echo ro-created || echo ro-refused-new; \
    chown 5:5 /ctx/data.txt 2>&1 | grep -q 'Read-only file system' && echo ro-chown-erofs
RUN --mount=type=bind,target=/ctx,rw echo changed > /ctx/data.txt && rm /ctx/sub/x && touch /ctx/new2 && \\
    echo rw=$(cat /ctx/data.txt)
RUN --mount=type=bind,source=data.txt,target=/one.txt echo file=$(cat /one.txt)
RUN --mount=type=bind,from=other,source=/other.txt,target=/o/other.txt echo stage=$(cat /o/other.txt)
"""


def test_tmpfs_and_binds_read_only_and_throw_away(unprivileged_user, user_tmp, busybox_layout):
    u = unprivileged_user
    ctx = user_context(u, user_tmp, "ctx", TMPFS_BIND_DOCKERFILE, {"data.txt": "precious\n", "sub/x": "x\n"})
    before = tree_view(ctx)
    store = u.busybox_store(user_tmp, busybox_layout)
    r = u.bale("bud", "--isolation", "ptrace", "-t", f"oci:{user_tmp}/out:latest", str(ctx), root=store, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert "tmpfs=17770" in lines and "x" in lines and "tmpfs-again=0" in lines, r.stdout
    assert "ro=precious" in lines and "ro-refused" in lines and "ro-refused-new" in lines, r.stdout
    assert "tmpfs-chown=ok" in lines and "ro-chown-erofs" in lines, r.stdout
    assert "rw=changed" in lines and "file=precious" in lines and "stage=from-other" in lines, r.stdout
    assert tree_view(ctx) == before
    assert "user.bale.owner" not in os.listxattr(ctx / "data.txt")
    for names in _layer_names(user_tmp / "out"):
        assert not _under(names, "/scratch", "/ctx", "/one.txt", "/o"), sorted(names)
    assert not list((store / "tmp").rglob("bale-ptrace-*"))


def test_prepare_without_memory_writes_secrets_to_the_private_dir_and_warns(tmp_path, monkeypatch, caplog):
    """A pod with no memory-backed directory: the secret goes to the RUN's private directory (removed
    with it), one warning says so; read-only binds get read rights only, rw binds a copy."""
    from builder.sandbox import landlock
    from builder.sandbox.spec import BindSpec
    monkeypatch.setattr(ptrace_mounts, "memory_dir", lambda: None)
    monkeypatch.setattr(ptrace_mounts, "_warned", set())
    root, priv, src = tmp_path / "root", tmp_path / "priv", tmp_path / "src"
    for d in (root, priv, src):
        d.mkdir()
    (src / "f").write_text("live\n")
    everything = landlock.all_fs_rights(landlock.abi())
    binds, extra = ptrace_mounts.prepare(
        [BindSpec("", "/run/secrets/s", readonly=True, type="secret", data=b"v", mode=0o440),
         BindSpec(str(src), "/ro", readonly=True), BindSpec(str(src), "/rw")], root, priv, everything)
    assert extra == []
    sec, ro, rw = binds
    assert Path(sec.host).parent == priv / "secrets" and Path(sec.host).read_bytes() == b"v"
    assert os.stat(sec.host).st_mode & 0o7777 == 0o440 and sec.rights == landlock.READ_FILE
    assert (ro.host, ro.rights) == (str(src), landlock.READ_EXEC)
    assert Path(rw.host).parent == priv and (Path(rw.host) / "f").read_text() == "live\n"
    assert [r.message for r in caplog.records if "memory-backed" in r.message]
