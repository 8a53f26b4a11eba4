"""The flattened tar of a layer stack (--output type=tar): whiteouts, opaque
directories, replaced directories and hard links, checked against the
independent reader in tests/helpers/oci_reader.py; headers copied exactly."""
from __future__ import annotations

import io
import tarfile

import pytest

from builder.build.export import write_flat_tar
from tests.helpers.oci_reader import flatten

CAP = b"\x01\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"  # v2, cap_net_bind_service


def _layer(*entries: tuple) -> bytes:
    """entries: (name, kind, extra dict) with kind f/d/l(symlink)/h(hardlink)/c(char dev)/w(whiteout)/o(opaque)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, kind, *rest in entries:
            extra = rest[0] if rest else {}
            ti = tarfile.TarInfo(name)
            ti.mtime = 1700000000
            ti.uid, ti.gid = extra.get("owner", (0, 0))
            ti.mode = extra.get("mode", 0o755 if kind == "d" else 0o644)
            data = None
            if kind == "f":
                data = extra.get("data", name.encode())
                ti.size = len(data)
            elif kind == "d":
                ti.type = tarfile.DIRTYPE
            elif kind == "l":
                ti.type, ti.linkname = tarfile.SYMTYPE, extra["to"]
            elif kind == "h":
                ti.type, ti.linkname = tarfile.LNKTYPE, extra["to"]
            elif kind == "c":
                ti.type, ti.devmajor, ti.devminor = tarfile.CHRTYPE, *extra["dev"]
            ti.pax_headers = dict(extra.get("pax", {}))
            t.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _flat(layers: list[bytes]) -> tuple[dict[str, tarfile.TarInfo], dict[str, bytes], list[str]]:
    out = io.BytesIO()
    n = write_flat_tar([lambda d=d: io.BytesIO(d) for d in layers], out)
    out.seek(0)
    heads, data, order = {}, {}, []
    with tarfile.open(fileobj=out) as t:
        for m in t.getmembers():
            assert not m.name.startswith(("/", "./")) and ".wh." not in m.name
            heads[m.name] = m
            order.append(m.name)
            data[m.name] = t.extractfile(m).read() if m.isreg() else b""
    assert n == len(order) == len(set(order)), order
    return heads, data, order


def _same_as_reader(layers: list[bytes]) -> tuple[dict[str, tarfile.TarInfo], dict[str, bytes]]:
    heads, data, _ = _flat(layers)
    expected = flatten(layers)
    # a non-directory replacing a directory takes its subtree; the reader keeps it, appliers do not
    # (moby pkg/archive UnpackLayer and containerd archive/tar.go: "If path exits we almost always
    # just want to remove and replace it. The only exception is when it is a directory *and* the
    # file from the layer is also a directory.")
    expected = {p: e for p, e in expected.items()
                if not any(not expected[a].info.isdir() for a in _ancestors(p) if a in expected)}
    assert sorted("/" + n for n in heads) == sorted(expected)
    for name, entry in expected.items():
        m = heads[name[1:]]
        content = data[name[1:]]
        if m.islnk():
            content = data[m.linkname]
        assert content == entry.content, name
        assert (m.uid, m.gid, m.mode, m.type if not entry.info.islnk() else tarfile.LNKTYPE) == \
            (entry.info.uid, entry.info.gid, entry.info.mode, entry.info.type if not m.islnk() else tarfile.LNKTYPE)
    return heads, data


def _ancestors(path: str) -> list[str]:
    parts = path.strip("/").split("/")
    return ["/" + "/".join(parts[:k]) for k in range(1, len(parts))]


BASE = _layer(("a", "d"), ("a/b", "d"), ("a/b/f", "f"), ("a/g", "f"), ("keep", "f"), ("gone", "f"),
              ("dir2file", "d"), ("dir2file/x", "f"), ("file2dir", "f"), ("opq", "d"), ("opq/old", "f"),
              ("opq/sub", "d"), ("opq/sub/old2", "f"), ("orig", "f", {"data": b"v1"}))

CASES = {
    "file whiteout": [BASE, _layer(("a", "d"), (".wh.gone", "w"))],
    "directory whiteout takes the subtree": [BASE, _layer((".wh.a", "w"))],
    "opaque directory keeps its own layer's entries": [BASE, _layer(("opq", "d"), ("opq/.wh..wh..opq", "o"),
                                                                    ("opq/new", "f"))],
    "opaque marker after a re-made subdirectory": [BASE, _layer(("opq", "d"), ("opq/sub", "d"), ("opq/sub/new", "f"),
                                                                  ("opq/.wh..wh..opq", "o"))],
    "directory replaced by a file": [BASE, _layer(("dir2file", "f"))],
    "file replaced by a directory": [BASE, _layer(("file2dir", "d"), ("file2dir/y", "f"))],
    "recreated after a whiteout": [BASE, _layer((".wh.a", "w")), _layer(("a", "d"), ("a/new", "f"))],
    "hard link to a file that stays": [BASE, _layer(("ln", "h", {"to": "keep"}))],
    "hard link whose target a later layer replaces": [
        BASE, _layer(("ln", "h", {"to": "orig"}), ("ln2", "h", {"to": "orig"})),
        _layer(("orig", "f", {"data": b"v2"}))],
    "hard link whose target a later layer deletes": [BASE, _layer(("ln", "h", {"to": "orig"})),
                                                     _layer((".wh.orig", "w"))],
}


@pytest.mark.parametrize("layers", list(CASES.values()), ids=list(CASES))
def test_flattened_tar_matches_the_layer_stack(layers):
    heads, data = _same_as_reader(layers)
    for name, m in heads.items():  # a link always points at an entry written before it
        if m.islnk():
            assert m.linkname in heads


def test_hard_link_to_a_replaced_version_keeps_the_old_content():
    layers = CASES["hard link whose target a later layer replaces"]
    heads, data, order = _flat(layers)
    assert data["orig"] == b"v2"
    assert heads["ln"].isreg() and data["ln"] == b"v1"
    assert heads["ln2"].islnk() and heads["ln2"].linkname == "ln"


def test_headers_are_the_layers_own():
    layers = [BASE, _layer(("x", "f", {"owner": (1234, 4321), "mode": 0o4755}),
                           ("cap", "f", {"pax": {"SCHILY.xattr.security.capability": CAP.decode("utf-8", "surrogateescape"),
                                                 "SCHILY.xattr.user.note": "hello",
                                                 "SCHILY.xattr.user.overlay.origin": "dropped"}}),
                           ("dev", "d"), ("dev/null", "c", {"dev": (1, 3), "mode": 0o666}),
                           ("sym", "l", {"to": "/keep", "owner": (7, 8)}))]
    heads, data, order = _flat(layers)
    x = heads["x"]
    assert (x.uid, x.gid, x.mode) == (1234, 4321, 0o4755)
    assert heads["cap"].pax_headers["SCHILY.xattr.user.note"] == "hello"
    assert heads["cap"].pax_headers["SCHILY.xattr.security.capability"].encode("utf-8", "surrogateescape") == CAP
    assert not any("overlay" in k for k in heads["cap"].pax_headers)
    dev = heads["dev/null"]
    assert dev.ischr() and (dev.devmajor, dev.devminor, dev.mode) == (1, 3, 0o666)
    assert heads["sym"].issym() and heads["sym"].linkname == "/keep" and (heads["sym"].uid, heads["sym"].gid) == (7, 8)
    assert order.index("a") < order.index("a/b") < order.index("a/b/f")  # parents first
    assert heads["orig"].mtime == 1700000000
