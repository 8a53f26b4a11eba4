"""Heredoc files and --chown ids as BuildKit (moby/buildkit 73ed6825) treats them, built for real
as the unprivileged test user (chroot isolation: as root, which it needs) and read back from the
OCI layout with the stdlib tar reader (tests/helpers/oci_reader), never bale's own.

* A COPY/ADD heredoc, and a RUN heredoc script with a ``#!`` line, is a file BuildKit writes with
  ``llb.Scratch().File(llb.Mkfile(NAME, ...))`` (dockerfile2llb/convert_copy.go:302-306,
  convert.go:1373-1377): NAME is cleaned and made absolute (client/llb/fileop.go:428, 897-914
  normalizePath) and written with one os.WriteFile in an empty root (solver/llbsolver/file/
  backend.go:111-123). One component (``/x``, ``./y``, ``../z``) is that file; a directory in it
  fails (ENOENT), the root itself too (EISDIR).
* A RUN heredoc whose body starts with ``#!`` (convert.go:1365-1382): the body is /dev/pipes/NAME,
  mode 0755, on a read-only mount; the shell runs ``path.Join("/dev/pipes/", NAME)``, so the kernel
  reads the ``#!`` line, $0 is that path and stdin is the RUN's own (empty). The mount is on /dev's
  tmpfs: nothing of it is in the layer.
* ``--chown=N`` with N beyond int32 (client/llb/fileop.go:258-266 parseUID: ParseInt(str, 10, 32)
  fails) is a user *name* (WithUser, fileop.go:231-254), looked up in the image's /etc/passwd
  (solver/llbsolver/ops/user_linux.go:28-64 readUser); no entry leaves 0:0. BuildKit does not
  refuse it, so bale does not either.
"""
from __future__ import annotations

import io
import os
import tarfile

import pytest

from frontend.errors import FrontendError
from frontend.graph import build_graph
from frontend.steps import BaseInfo
from tests.fixtures.images import run_bale
from tests.helpers.oci_reader import flatten, read_layout

# heredoc name -> the file it is in /dst/, or BuildKit's error (backend.go:121 os.WriteFile)
NAMES = [
    ("x1", "x1"),
    ("/x2", "x2"),
    ("./x3", "x3"),
    ("../x4", "x4"),
    ("a/../x5", "x5"),
    ('"/x6"', "x6"),
    ("a/b", "heredoc <<a/b: open /a/b: no such file or directory"),
    ('"/etc/passwd"', "heredoc <</etc/passwd: open /etc/passwd: no such file or directory"),
    ("./d/e", "heredoc <<./d/e: open /d/e: no such file or directory"),
    (".", "heredoc <<.: open /: is a directory"),
    ("/", "heredoc <</: open /: is a directory"),
]


def _delimiter(word: str) -> str:
    return word.strip('"')


def _graph(text: str):  # type: ignore[no-untyped-def]
    return build_graph(text, resolve_base=lambda ref, plat: BaseInfo(env=["PATH=/bin"]))


@pytest.mark.parametrize("kw", ["COPY", "ADD"])
@pytest.mark.parametrize("word,want", NAMES, ids=[n for n, _ in NAMES])
def test_copy_heredoc_names_as_buildkit(kw, word, want):
    text = f"FROM a\n{kw} <<{word} /dst/\nbody\n{_delimiter(word)}\n"
    if "heredoc" in want:
        with pytest.raises(FrontendError) as exc:
            _graph(text)
        assert str(exc.value) == f"Dockerfile:2: {kw}: {want}"
        return
    step = _graph(text).stages[0].steps[0]
    assert [(i.name, i.content) for i in step.inline] == [(want, b"body\n")]


@pytest.mark.parametrize("word,want", NAMES, ids=[n for n, _ in NAMES])
def test_run_script_names_as_buildkit(word, want):
    """Only a #! script is written as a file (convert.go:1364); the shell runs path.Join of the name
    as written (convert.go:1382), so ``../x4`` runs /dev/x4, as in BuildKit."""
    text = f"FROM a\nRUN <<{word}\n#!/bin/sh\necho hi\n{_delimiter(word)}\n"
    plain = _graph(f"FROM a\nRUN <<{word}\necho hi\n{_delimiter(word)}\n").stages[0].steps[0]
    assert plain.args == ("/bin/sh", "-c", "echo hi\n") and plain.script is None
    if "heredoc" in want:
        with pytest.raises(FrontendError) as exc:
            _graph(text)
        assert str(exc.value) == f"Dockerfile:2: RUN: {want}"
        return
    step = _graph(text).stages[0].steps[0]
    assert step.script is not None and (step.script.name, step.script.content) == (want, b"#!/bin/sh\necho hi\n")
    joined = os.path.normpath("/dev/pipes/" + _delimiter(word))
    assert step.args == ("/bin/sh", "-c", joined)


def test_same_named_heredocs_pick_by_name():
    """instructions/parse.go:284-300: each source word is looked up by its heredoc's name."""
    step = _graph("FROM a\nCOPY <<ba <<a /dst/\nB\nba\nA\na\n").stages[0].steps[0]
    assert [(i.name, i.content) for i in step.inline] == [("ba", b"B\n"), ("a", b"A\n")]


@pytest.fixture
def build(unprivileged_user, user_tmp, busybox_layout):
    u = unprivileged_user
    root = u.busybox_store(user_tmp, busybox_layout)

    def run(dockerfile: str, name: str, *extra: str, check: bool = True):  # type: ignore[no-untyped-def]
        ctx = user_tmp / f"ctx-{name}"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(dockerfile)
        (ctx / "f").write_text("f\n")
        for p in [ctx, *ctx.rglob("*")]:
            os.lchown(p, u.uid, u.gid)
        r = u.bale("bud", *extra, "-t", name, str(ctx), root=root, check=check, timeout=600)
        if not check:
            return r, None, None
        u.bale("push", name, f"oci:{user_tmp}/{name}-out:latest", root=root)
        _, config, layers = read_layout(user_tmp / f"{name}-out", "latest")
        return r, config, layers
    return run


@pytest.mark.slow
def test_copy_heredoc_names_built(build):
    accepted = [(w, n) for w, n in NAMES if "heredoc" not in n]
    words = " ".join(f"<<{w}" for w, _ in accepted)
    bodies = "".join(f"body of {n}\n{_delimiter(w)}\n" for w, n in accepted)
    _, _, layers = build(f"FROM busybox\nCOPY {words} /dst/\n{bodies}", "names")
    fs = flatten(layers)
    assert {p: (fs[p].content, fs[p].info.mode) for p in fs if p.startswith("/dst/")} == \
        {f"/dst/{n}": (f"body of {n}\n".encode(), 0o644) for _, n in accepted}
    r, _, _ = build("FROM busybox\nCOPY <<a/b /dst/\nx\na/b\n", "refused", check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert [l for l in r.stderr.splitlines() if "Dockerfile:2" in l] == \
        ["bale: Dockerfile:2: COPY: heredoc <<a/b: open /a/b: no such file or directory"], r.stderr


@pytest.mark.slow
def test_chown_beyond_int32_is_a_name(build):
    """fileop.go:258-266: "2147483648" and longer fail ParseInt(.., 32) and are names; user_linux.go:
    28-64 finds the name in /etc/passwd (uid:gid from the entry) or leaves 0:0."""
    big, bigger = "2147483648", "99999999999999"
    _, _, layers = build(f"FROM busybox\nRUN echo '{bigger}:x:4242:4343::/:/bin/sh' >> /etc/passwd\n"
                         f"COPY --chown={bigger} f /named\nCOPY --chown={big} f /unnamed\n"
                         f"COPY --chown=7:{bigger} f /group-unnamed\n", "chown")
    fs = flatten(layers)
    owners = {p: (fs[p].info.uid, fs[p].info.gid) for p in ("/named", "/unnamed", "/group-unnamed")}
    assert owners == {"/named": (4242, 4343), "/unnamed": (0, 0), "/group-unnamed": (7, 7)}


SHEBANG = """FROM busybox
RUN mkdir -m 1777 /out
RUN <<EOF
#!/bin/sh
echo "$0" > /out/zero
cat > /out/stdin
ls -ln /dev/pipes | tail -n +2 | awk '{print $1, $3, $4, $NF}' > /out/pipes
touch /dev/pipes/new 2>/dev/null && echo writable > /out/ro || echo read-only > /out/ro
EOF
RUN <<'AWK'
#!/bin/awk -f
BEGIN { print "awk ran" > "/out/awk" }
AWK
USER 1000:1000
RUN <<EOF
#!/bin/sh
id -u > /out/uid
EOF
"""


def _check_shebang(layers: list[bytes], read_only: bool) -> None:
    fs = flatten(layers)
    want = {"/out/zero": b"/dev/pipes/EOF\n", "/out/stdin": b"", "/out/awk": b"awk ran\n",
            "/out/pipes": b"-rwxr-xr-x 0 0 EOF\n", "/out/uid": b"1000\n",
            "/out/ro": b"read-only\n" if read_only else b"writable\n"}
    assert {p: fs[p].content for p in want} == want
    base = set(flatten(layers[:1]))
    for layer in layers[1:]:  # each RUN's own layer: what it wrote, no /dev, no mount point
        names = {m.name.rstrip("/") for m in tarfile.open(fileobj=io.BytesIO(layer)).getmembers()}
        assert not [n for n in names if n.lstrip("./").startswith("dev")], names
    assert not [p for p in fs if p.startswith("/dev")] and not [p for p in base if p.startswith("/dev")]


@pytest.mark.slow
@pytest.mark.parametrize("isolation", ["rootless", "oci", "ptrace"])
def test_run_shebang_heredoc_runs_from_dev_pipes(build, isolation):
    """ptrace isolation (proot): /dev/pipes is a bind of proot's, read-only by the RUN's Landlock rule."""
    _, config, layers = build(SHEBANG, f"shebang-{isolation}", "--isolation", isolation)
    assert config["history"][-1]["created_by"].endswith('"/bin/sh", "-c", "/dev/pipes/EOF"]')
    _check_shebang(layers, read_only=True)


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="chroot isolation is root's (CI runs as root)")
def test_run_shebang_heredoc_in_chroot_isolation(tmp_path, busybox_layout):
    """No mounts in chroot isolation: /dev/pipes is made in the rootfs (writable: no read-only
    mount can be had) and removed after the RUN with all it holds, /dev with it when made for it."""
    store, ctx = tmp_path / "store", tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(SHEBANG)
    image = run_bale(["pull", "-q", f"oci:{busybox_layout}:latest"], root=store).stdout.strip()
    run_bale(["tag", image, "busybox"], root=store)
    run_bale(["bud", "--isolation", "chroot", "-t", "sb", str(ctx)], root=store, timeout=600)
    run_bale(["push", "sb", f"oci:{tmp_path}/out:latest"], root=store)
    _, _, layers = read_layout(tmp_path / "out", "latest")
    _check_shebang(layers, read_only=False)


@pytest.mark.slow
def test_heredoc_only_copy_history_text(build):
    """BuildKit's created_by for a COPY of heredocs only (dockerfile2llb/convert_copy.go:99-103,
    294-295, 320): "COPY <<EOF /x", one space apart (bale adds no " # buildkit" to any step)."""
    _, config, layers = build("FROM busybox\nCOPY <<EOF /x\nhi\nEOF\nCOPY --chmod=600 <<A <<B /d/\na\nA\nb\nB\n",
                              "heredoc-history")
    assert [h["created_by"] for h in config["history"][-2:]] == ["COPY <<EOF /x", "COPY --chmod=600 <<A <<B /d/"]
    fs = flatten(layers)
    assert fs["/x"].content == b"hi\n" and fs["/d/A"].content == b"a\n" and fs["/d/B"].content == b"b\n"
