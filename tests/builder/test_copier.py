"""Host side of COPY/ADD: source resolution inside the context and the tar it streams."""
import gzip
import io
import os
import tarfile

import pytest

from builder.build import copier
from builder.errors import BuildError


@pytest.fixture
def ctx(tmp_path):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "run.sh").write_text("#!/bin/sh\necho run\n")
    (tmp_path / "app" / "sub").mkdir()
    (tmp_path / "app" / "sub" / "data.txt").write_text("data")
    (tmp_path / "app" / "link").symlink_to("run.sh")
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "b.txt").write_text("b")
    os.link(tmp_path / "a.txt", tmp_path / "app" / "hard.txt")
    (tmp_path / "escape").symlink_to("/etc")
    return tmp_path


def _members(plan):
    buf = io.BytesIO()
    copier.write_tar(plan, buf)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as t:
        return {m.name: m for m in t.getmembers()}, buf


def test_directory_source_copies_contents_with_symlinks(ctx):
    srcs = copier.resolve_sources(ctx, ["app"])
    plan = copier.plan_copy(srcs, "/opt/app", None)
    assert plan.dest_dir == "/opt/app" and plan.rename == ""
    members, _ = _members(plan)
    assert set(members) == {"run.sh", "sub", "sub/data.txt", "link", "hard.txt"}
    assert members["link"].issym() and members["link"].linkname == "run.sh"
    assert all(m.uid == 0 and m.gid == 0 for m in members.values())


def test_single_file_to_new_name_or_into_dir(ctx):
    srcs = copier.resolve_sources(ctx, ["a.txt"])
    plan = copier.plan_copy(srcs, "/etc/renamed.txt", None)
    assert (plan.dest_dir, plan.rename) == ("/etc", "renamed.txt")
    assert list(_members(plan)[0]) == ["renamed.txt"]
    plan = copier.plan_copy(srcs, "/etc", "dir")
    assert (plan.dest_dir, list(_members(plan)[0])) == ("/etc", ["a.txt"])
    plan = copier.plan_copy(srcs, "/new/", None)
    assert (plan.dest_dir, list(_members(plan)[0])) == ("/new", ["a.txt"])


def test_wildcards_and_chmod(ctx):
    srcs = copier.resolve_sources(ctx, ["*.txt"])
    plan = copier.plan_copy(srcs, "/d/", None, chmod=0o640)
    members, _ = _members(plan)
    assert sorted(members) == ["a.txt", "b.txt"]
    assert all(m.mode == 0o640 for m in members.values())


def test_missing_source_names_pattern_and_context(ctx):
    with pytest.raises(BuildError, match=r"'nope': no such file or directory in context"):
        copier.resolve_sources(ctx, ["nope"])
    # a wildcard may match nothing (BuildKit AllowEmptyWildcard, dockerfile2llb/convert_copy.go:283)
    assert copier.resolve_sources(ctx, ["nope*", "a.txt"])[0].rel == "a.txt"
    assert copier.resolve_sources(ctx, ["nope*"]) == []


def test_sources_never_leave_the_context(ctx):
    # symlinks resolve with the context as / (continuity fs.RootPath, as BuildKit's copy does)
    with pytest.raises(BuildError, match="no such file or directory in context"):
        copier.resolve_sources(ctx, ["escape/passwd"])
    (ctx / "etc").mkdir()
    (ctx / "etc" / "passwd").write_text("inside")
    assert copier.resolve_sources(ctx, ["escape/passwd"])[0].path == ctx.resolve() / "etc" / "passwd"
    srcs = copier.resolve_sources(ctx, ["../../a.txt"])  # `..` is clamped at the context root
    assert srcs[0].path == (ctx / "a.txt").resolve()


def test_excludes_and_exceptions(ctx):
    # patterns match context-relative paths, so "app/" is part of what they see
    excluded = copier.match_any(["app/sub", "app/*.sh"])
    srcs = copier.resolve_sources(ctx, ["app"], excluded=excluded)
    members, _ = _members(copier.plan_copy(srcs, "/x", None, excluded=excluded))
    assert set(members) == {"link", "hard.txt"}


def test_add_extracts_local_archives(ctx):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        ti = tarfile.TarInfo("inner/file")
        ti.size, ti.uid = 2, 1234
        t.addfile(ti, io.BytesIO(b"hi"))
    (ctx / "pkg.tar.gz").write_bytes(gzip.compress(buf.getvalue()))
    srcs = copier.resolve_sources(ctx, ["pkg.tar.gz"], add=True)
    assert srcs[0].archive
    plan = copier.plan_copy(srcs, "/opt", None)
    members, raw = _members(plan)
    assert members["inner/file"].uid == 1234
    # COPY never extracts
    assert not copier.resolve_sources(ctx, ["pkg.tar.gz"])[0].archive


def test_tar_writer_body_is_the_header_size_whatever_the_file_does(tmp_path):
    """Bodies are sent by the kernel from the source fd (issue 10); a file that grew since its
    header was made is cut at the header size, one that shrank is one error line naming it."""
    from builder.build.tarstream import TarWriter
    src = tmp_path / "f"
    src.write_bytes(b"x" * 5000)
    for out_kind in ("bytesio", "file", "pipe"):
        if out_kind == "pipe":
            r, w = os.pipe()
            out = os.fdopen(w, "wb", buffering=1 << 20)
        else:
            out = io.BytesIO() if out_kind == "bytesio" else open(tmp_path / "o.tar", "w+b")  # noqa: SIM115
        tw = TarWriter(out)
        fd = os.open(src, os.O_RDONLY)
        ti = tarfile.TarInfo("grown")
        ti.size = 3000  # the file is larger now
        tw.add_fd(ti, fd, "f")
        tw.header(tarfile.TarInfo("after"))
        ti = tarfile.TarInfo("shrunk")
        ti.size = 9000
        with pytest.raises(BuildError, match=r"^copy source f: file shrank while being copied"):
            tw.add_fd(ti, fd, "f")
        os.close(fd)
        out.flush()
        if out_kind == "pipe":
            out.close()
            with os.fdopen(r, "rb") as fh:
                raw = fh.read()
        else:
            out.seek(0)
            raw = out.read()
            out.close()
        with tarfile.open(fileobj=io.BytesIO(raw[:512 * 8])) as t:  # the members before the failure
            grown = t.next()
            assert grown is not None and grown.name == "grown"
            f = t.extractfile(grown)
            assert f is not None and f.read() == b"x" * 3000
            after = t.next()
            assert after is not None and after.name == "after"


def test_write_tar_to_a_file_matches_tarfile(ctx, tmp_path):
    """The kernel-sent stream into a regular file (the COPY --from spool) reads back whole."""
    srcs = copier.resolve_sources(ctx, ["."])
    plan = copier.plan_copy(srcs, "/x/", None)
    with open(tmp_path / "s.tar", "w+b") as spool:
        copier.write_tar(plan, spool)
        spool.seek(0)
        with tarfile.open(fileobj=spool, mode="r|") as t:
            got = {m.name: (t.extractfile(m).read() if m.isreg() else m.type) for m in t}  # type: ignore[union-attr]
    assert got["a.txt"] == b"a" and got["app/sub/data.txt"] == b"data"
    assert got["app/hard.txt"] == tarfile.LNKTYPE or got["a.txt"] == tarfile.LNKTYPE
