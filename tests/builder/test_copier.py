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
