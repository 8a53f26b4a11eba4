"""The direct COPY (snapshotter.copytree fed by copier.plan_items) against the tar path it
replaces (copier.write_tar + apply_tar): the same plan must give the same tree, byte for byte and
attribute for attribute (the tar path encodes BuildKit's rules, tests/builder/test_copy_semantics.py
and tests/cli/test_copy_docker_exact.py); and the hostile inputs the tar path withstands
(symlinks out of the destination, sources swapped while copying, FIFOs, device nodes) must not
get further with the direct one."""
import errno
import io
import os
import stat
import threading

import pytest

from builder.build import copier
from builder.errors import BuildError
from frontend.dockerignore import Matcher
from snapshotter import copytree
from snapshotter.apply import apply_tar
from snapshotter.errors import SnapshotError

T0 = 1_600_000_000


def _tree(root):
    """path -> (type, mode, uid, gid, mtime in ms, content or link target, xattrs); plus the
    hard-link groups (paths sharing an inode)."""
    out, inodes = {}, {}
    for dirpath, dirs, files in os.walk(root):
        for n in sorted(dirs + files):
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            if stat.S_ISREG(st.st_mode):
                body = open(p, "rb").read()
                inodes.setdefault(st.st_ino, []).append(rel)
            elif stat.S_ISLNK(st.st_mode):
                body = os.readlink(p).encode("utf-8", "surrogateescape")
            else:
                body = b""
            try:
                xattrs = sorted((k, os.getxattr(p, k, follow_symlinks=False))
                                for k in os.listxattr(p, follow_symlinks=False))
            except OSError:
                xattrs = []
            mtime = None if stat.S_ISLNK(st.st_mode) else st.st_mtime_ns // 1_000_000
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, mtime, body, xattrs)
    return out, sorted(sorted(v) for v in inodes.values() if len(v) > 1)


def _rich_context(ctx):
    (ctx / "d" / "sub" / "deeper").mkdir(parents=True)
    (ctx / "d" / "sub" / "f.txt").write_text("hello\n")
    (ctx / "d" / "sub" / "deeper" / "g").write_bytes(os.urandom(3 << 20))  # through the pool
    (ctx / "d" / "empty").write_bytes(b"")
    (ctx / "d" / "exec").write_text("#!/bin/sh\n")
    os.chmod(ctx / "d" / "exec", 0o4751)
    os.symlink("../../etc/passwd", ctx / "d" / "sub" / "up")
    os.symlink("/nowhere", ctx / "d" / "dangling")
    os.link(ctx / "d" / "sub" / "f.txt", ctx / "d" / "hard")
    os.mkfifo(ctx / "d" / "pipe")
    raw = os.path.join(os.fsencode(ctx / "d"), b"caf\xe9-\xff")
    with open(raw, "wb") as fh:
        fh.write(b"latin1")
    os.setxattr(raw, "user.note", b"\x00\x01\xff")
    os.setxattr(ctx / "d" / "sub", "user.dir", b"x")
    (ctx / "d" / "skip.tmp").write_text("excluded")
    (ctx / "d" / "logs").mkdir()
    (ctx / "d" / "logs" / "a.log").write_text("dropped")
    (ctx / "d" / "logs" / "keep.log").write_text("kept by an exception")
    (ctx / "top.txt").write_text("top\n")
    os.chown(ctx / "d" / "exec", 1234, 5678)
    for dirpath, dirs, files in os.walk(ctx):
        for n in dirs + files:
            p = os.path.join(dirpath, n)
            if not os.path.islink(p):
                os.utime(p, ns=(T0 * 10**9 + 123_456_789, T0 * 10**9 + 123_456_789))


def _both(tmp_path, ctx, patterns, dest, *, kind=None, chmod=None, owner=None, excluded=None, keep_owner=False,
          existing=None):
    results = []
    for how in ("tar", "direct"):
        out = tmp_path / f"out-{how}"
        out.mkdir()
        if existing:
            existing(out)
        sources = copier.resolve_sources(ctx, patterns, excluded=excluded)
        for s in sources:
            s.keep_owner = keep_owner
        plan = copier.plan_copy(sources, dest, kind, chmod=chmod, excluded=excluded)
        target = out / plan.dest_dir.lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        if how == "tar":
            buf = io.BytesIO()
            copier.write_tar(plan, buf)
            buf.seek(0)
            apply_tar(buf, target, chown=owner, strict=True)
        else:
            assert copier.direct(plan)
            items = []
            copier.plan_items(plan, items.append)
            copytree.copy_items(items, target, owner)
        p = target
        while p != out:  # made here, not by the copy: their times are now's
            os.utime(p, (0, 0))
            p = p.parent
        results.append(_tree(out))
    return results


@pytest.mark.parametrize("case", ["dir", "chmod-chown", "excluded", "several", "rename", "keep-owner"])
def test_direct_copy_equals_the_tar_path(tmp_path, case):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    _rich_context(ctx)
    if case == "dir":
        tar, direct = _both(tmp_path, ctx, ["d"], "/dest/")
    elif case == "chmod-chown":
        tar, direct = _both(tmp_path, ctx, ["d"], "/dest", chmod=0o640, owner=(1000, 1001))
    elif case == "excluded":
        m = Matcher(["**/*.tmp", "d/logs", "!d/logs/keep.log"])
        tar, direct = _both(tmp_path, ctx, ["d", "top.txt"], "/dest/", excluded=m)
    elif case == "several":
        tar, direct = _both(tmp_path, ctx, ["top.txt", "d/sub", "d/exec"], "/x/y/")
    elif case == "rename":
        tar, direct = _both(tmp_path, ctx, ["d/exec"], "/bin/renamed")
    else:
        tar, direct = _both(tmp_path, ctx, ["d"], "/", keep_owner=True)
    assert direct == tar
    paths = direct[0]
    assert len(paths) > 1
    if case == "keep-owner":
        assert paths["exec"][2:4] == (1234, 5678)
    if case == "dir":
        assert direct[1] == [["dest/hard", "dest/sub/f.txt"]]  # hard links stay hard links
        assert paths["dest/caf\udce9-\udcff"][6] == [("user.note", b"\x00\x01\xff")]
        assert stat.S_ISFIFO(paths["dest/pipe"][0])


def test_existing_entries_are_replaced_as_the_tar_path_replaces_them(tmp_path):
    """A directory already there is kept (its metadata replaced), a file where a directory goes
    and a directory where a file goes are removed first (apply_tar's rules)."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    _rich_context(ctx)

    def existing(out):
        (out / "dest" / "sub" / "old").mkdir(parents=True)
        (out / "dest" / "sub" / "old" / "x").write_text("old")
        (out / "dest" / "exec").mkdir()
        (out / "dest" / "exec" / "inside").write_text("gone")
        (out / "dest" / "sub" / "deeper").write_text("a file where a directory goes")
        for p in ("dest/sub/old/x", "dest/sub/old"):
            os.utime(out / p, (T0, T0))
    tar, direct = _both(tmp_path, ctx, ["d"], "/dest/", existing=existing)
    assert direct == tar
    assert "dest/sub/old/x" in direct[0] and "dest/exec/inside" not in direct[0]


def test_a_symlink_in_the_destination_never_leads_out(tmp_path):
    """The destination's own symlinks resolve inside the destination directory, however they
    point (absolute, .., chains), as apply_tar resolves them: nothing lands outside."""
    ctx = tmp_path / "ctx"
    (ctx / "d" / "sub").mkdir(parents=True)
    (ctx / "d" / "sub" / "evil").write_text("payload")
    (ctx / "d" / "up" / "x").mkdir(parents=True)
    (ctx / "d" / "up" / "x" / "f").write_text("payload2")
    outside = tmp_path / "outside"
    outside.mkdir()

    def existing(out):
        (out / "dest").mkdir()
        os.symlink(str(outside), out / "dest" / "sub")
        os.symlink("../../../../../../" + str(outside).lstrip("/"), out / "dest" / "up")
    tar, direct = _both(tmp_path, ctx, ["d"], "/dest/", existing=existing)
    assert direct == tar
    assert os.listdir(outside) == []


def test_a_source_swapped_for_a_symlink_is_not_followed(tmp_path):
    """Planned as a directory and a file, replaced by symlinks to a secret before the copy: the
    copier opens every level with O_NOFOLLOW and re-checks types on the fd, so the secret is
    never read (an error for the directory, ENOTDIR or ELOOP, a symlink copied as a symlink for the file)."""
    ctx = tmp_path / "ctx"
    (ctx / "d" / "sub").mkdir(parents=True)
    (ctx / "d" / "sub" / "f").write_text("fine")
    (ctx / "d" / "g").write_text("fine")
    secret = tmp_path / "secret"
    (secret / "sub").mkdir(parents=True)
    (secret / "sub" / "f").write_text("SECRET")
    (secret / "g").write_text("SECRET")
    plan = copier.plan_copy(copier.resolve_sources(ctx, ["d"]), "/", "dir")
    items = []
    copier.plan_items(plan, items.append)
    os.rename(ctx / "d" / "g", tmp_path / "g.old")
    os.symlink(secret / "g", ctx / "d" / "g")
    out = tmp_path / "out"
    out.mkdir()
    copytree.copy_items([i for i in items if i.rel == "g"], out)
    assert os.readlink(out / "g") == str(secret / "g")
    os.rename(ctx / "d" / "sub", tmp_path / "sub.old")
    os.symlink(secret / "sub", ctx / "d" / "sub")
    with pytest.raises(SnapshotError, match=r"copy source d/sub.*: (Not a directory|Too many levels of symbolic links)"):
        copytree.copy_items([i for i in items if i.rel.startswith("sub")], tmp_path / "out")
    assert b"SECRET" not in b"".join(open(os.path.join(d, f), "rb").read()
                                     for d, _, fs in os.walk(out) for f in fs if not os.path.islink(os.path.join(d, f)))


def test_a_file_swapped_for_a_fifo_is_never_opened(tmp_path):
    """Type checks come before any open: a regular file turned into a FIFO after planning is made
    as a FIFO in the destination, and the copy does not block on it."""
    ctx = tmp_path / "ctx"
    (ctx / "d").mkdir(parents=True)
    (ctx / "d" / "f").write_text("x")
    plan = copier.plan_copy(copier.resolve_sources(ctx, ["d"]), "/", "dir")
    items = []
    copier.plan_items(plan, items.append)
    os.unlink(ctx / "d" / "f")
    os.mkfifo(ctx / "d" / "f")
    out = tmp_path / "out"
    out.mkdir()
    done = threading.Event()
    t = threading.Thread(target=lambda: (copytree.copy_items(items, out), done.set()), daemon=True)
    t.start()
    t.join(20)
    assert done.is_set() and stat.S_ISFIFO(os.lstat(out / "f").st_mode)


def test_device_nodes_that_cannot_be_made_are_errors(tmp_path, monkeypatch):
    """As the tar path (strict): BuildKit makes device nodes (fsutil copy/copy.go:456-461) or fails."""
    ctx = tmp_path / "ctx"
    (ctx / "devs").mkdir(parents=True)
    os.mknod(ctx / "devs" / "null0", stat.S_IFCHR | 0o666, os.makedev(1, 3))

    def refuse(*a, **kw):
        raise OSError(errno.EPERM, "Operation not permitted")
    monkeypatch.setattr(os, "mknod", refuse)
    plan = copier.plan_copy(copier.resolve_sources(ctx, ["devs"]), "/d/", None)
    items = []
    copier.plan_items(plan, items.append)
    with pytest.raises(SnapshotError, match=r"^null0: cannot create device node: Operation not permitted"):
        copytree.copy_items(items, tmp_path)


def test_unreadable_file_in_a_directory_is_an_error_for_an_unprivileged_builder(tmp_path, monkeypatch):
    """The copier may be root of a user namespace and able to read what the builder cannot: the
    planner refuses what the builder could not open, as the tar path's open refuses it."""
    ctx = tmp_path / "ctx"
    (ctx / "d").mkdir(parents=True)
    (ctx / "d" / "secret").write_text("s")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(os, "access", lambda p, m: not str(p).endswith("secret"))
    plan = copier.plan_copy(copier.resolve_sources(ctx, ["d"]), "/", "dir")
    with pytest.raises(BuildError, match=r"^copy source d/secret: Permission denied$"):
        copier.plan_items(plan, lambda i: None)


@pytest.mark.parametrize("refuse", ["nothing", "copy_file_range", "copy_file_range+sendfile"])
def test_contents_through_every_kernel_path(tmp_path, monkeypatch, refuse):
    """copy_file_range, else sendfile, else reads and writes: the same bytes, big and small."""
    data = {"big": os.urandom(5 << 20) + b"tail", "small": b"s" * 1000}
    src = tmp_path / "src"
    src.mkdir()
    for n, b in data.items():
        (src / n).write_bytes(b)
    if "copy_file_range" in refuse:
        monkeypatch.setattr(os, "copy_file_range", lambda *a: (_ for _ in ()).throw(OSError(errno.EXDEV, "x")))
    if "sendfile" in refuse:
        monkeypatch.setattr(os, "sendfile", lambda *a: (_ for _ in ()).throw(OSError(errno.EINVAL, "x")))
    out = tmp_path / "out"
    out.mkdir()
    copytree.copy_items([copytree.Item(str(src), n, n) for n in data], out)
    for n, b in data.items():
        assert (out / n).read_bytes() == b


def test_names_deeper_than_path_max(tmp_path):
    """Directory fds all the way: a tree whose paths exceed PATH_MAX (4096) copies."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    fd = os.open(ctx, os.O_RDONLY)
    rel = []
    for _ in range(30):  # 30 x 200 bytes
        n = "n" * 199
        os.mkdir(n, dir_fd=fd)
        nxt = os.open(n, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = nxt
        rel.append(n)
    with open(os.open("leaf", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd), "w") as fh:
        fh.write("bottom")
    os.close(fd)
    items = [copytree.Item(str(ctx), "/".join(rel[:i + 1]), "/".join(rel[:i + 1])) for i in range(len(rel))]
    items.append(copytree.Item(str(ctx), "/".join(rel) + "/leaf", "/".join(rel) + "/leaf"))
    out = tmp_path / "out"
    out.mkdir()
    copytree.copy_items(items, out)
    fd = os.open(out, os.O_RDONLY)
    for n in rel:
        nxt = os.open(n, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = nxt
    with open(os.open("leaf", os.O_RDONLY, dir_fd=fd)) as fh:
        assert fh.read() == "bottom"
    os.close(fd)


def test_items_survive_the_wire(tmp_path):
    item = copytree.Item("/r", "a/caf\udce9", "x/caf\udce9", 0o600, 5, True, "ctx/caf\udce9", True)
    assert list(copytree.read_items(io.BytesIO(copytree.encode_item(item) * 2))) == [item, item]
    with pytest.raises(SnapshotError, match="malformed"):
        list(copytree.read_items(io.BytesIO(b"[1, 2]\n")))


@pytest.mark.parametrize("pooled", [0, copytree.POOLED])
def test_sources_overlapping_in_the_destination_keep_their_order(tmp_path, monkeypatch, pooled):
    """Several sources naming the same destination entries with other types (file, then directory
    with files, then file again, and back) end as the sequential tar path ends, though files are
    copied by a thread pool (here every file, with ``pooled`` 0): a name being made by a job is waited
    for, directories are removed only when no job runs."""
    monkeypatch.setattr(copytree, "POOLED", pooled)
    ctx = tmp_path / "ctx"
    for i, src in enumerate("abcd"):
        (ctx / src).mkdir(parents=True)
        for n in range(40):
            if (i + n) % 2:
                (ctx / src / f"x{n}").mkdir()
                for k in range(3):
                    (ctx / src / f"x{n}" / f"f{k}").write_bytes(os.urandom(2000 + k))
            else:
                (ctx / src / f"x{n}").write_bytes(os.urandom(100 + i))
        os.link(ctx / src / "x0" if not i % 2 else ctx / src / "x1", ctx / src / "hard")
    tar, direct = _both(tmp_path, ctx, ["a", "b", "c", "d"], "/dest/")
    assert direct == tar
    assert len(direct[0]) > 80


def test_copy_from_makes_a_socket_an_empty_file_as_buildkit(tmp_path):
    """COPY --from (Source.socket_files): fsutil's copyDevice gives mknod the socket's mode with
    S_IFSOCK cleared (tonistiigi/fsutil 6d9dc2eb copy/copy_nowindows.go:33-45, reached from
    copy/copy.go:455-461), so the copy holds an empty regular file with the socket's owner,
    permission bits and mtime. Both paths agree; a context COPY still leaves sockets out."""
    import socket
    ctx = tmp_path / "ctx"
    (ctx / "d").mkdir(parents=True)
    (ctx / "d" / "f").write_text("f\n")
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(ctx / "d" / "sock"))
    try:
        os.chmod(ctx / "d" / "sock", 0o751)
        os.chown(ctx / "d" / "sock", 1234, 5678)
        os.utime(ctx / "d" / "sock", ns=(T0 * 10**9, T0 * 10**9), follow_symlinks=False)
        results = []
        for how in ("tar", "direct", "context"):
            out = tmp_path / f"out-{how}"
            out.mkdir()
            sources = copier.resolve_sources(ctx, ["d"])
            for src in sources:
                src.keep_owner = src.socket_files = how != "context"
            plan = copier.plan_copy(sources, "/", "dir")
            if how == "tar":
                buf = io.BytesIO()
                copier.write_tar(plan, buf)
                buf.seek(0)
                apply_tar(buf, out, strict=True)
            else:
                with copytree.Copier(out, None, socket_files=how == "direct") as c:
                    copier.plan_items(plan, c.add)
                    c.close()
            os.utime(out, (0, 0))
            results.append(_tree(out)[0])
    finally:
        s.close()
    tar, direct, context = results
    assert tar == direct
    assert direct["sock"] == (stat.S_IFREG, 0o751, 1234, 5678, T0 * 1000, b"", [])
    assert "sock" not in context and "f" in context
