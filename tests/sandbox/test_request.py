"""The namespace helper's requests (builder/sandbox/request.py): JSON naming functions and
classes of bale's modules, never pickle; anything else is refused, and what cannot be named
goes to a forked child of its own (NotPortable)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from builder.errors import SandboxError
from builder.sandbox import request
from builder.sandbox.spec import BindSpec, ProcessSpec
from builder.workspace import snapshots
from builder.workspace.runtime import StoreBlobOpener


def _roundtrip(fn, *args):
    doc, fds = request.encode_call(fn, args)
    doc = json.loads(json.dumps(doc))  # what travels is text
    return request.decode_call(request.check(doc), fds), fds


def test_calls_of_bale_functions_round_trip_with_objects_fds_and_bytes():
    spec = ProcessSpec(["sh", "-c", "true"], ["A=1"], mounts=[BindSpec("s", "/d", options=("ro",), data=b"\0k",
                                                                      type="secret")], stdin_data=None)
    opener = StoreBlobOpener("/store", "sha256:" + "0" * 64, "application/vnd.oci.image.layer.v1.tar")
    rootfs = snapshots.SnapshotRootfs("/s", "overlay", "k", [("native", "x")])
    (fn, args, what), fds = _roundtrip(snapshots.prepare, "/s", "overlay", "k",
                                       [("l1", opener)], spec, rootfs, request.Fd(1), Path("/p"), {1: (2, 3)})
    assert fn is snapshots.prepare and what == "prepare" and fds == [1]
    assert args[:3] == ["/s", "overlay", "k"]
    assert isinstance(args[3][0], tuple) and args[3][0][0] == "l1" and vars(args[3][0][1]) == vars(opener)
    assert args[4] == spec and args[4].mounts[0].data == b"\0k" and args[4].mounts[0].options == ("ro",)
    assert vars(args[5]) == vars(rootfs) and args[6] == 1 and args[7] == Path("/p") and args[8] == {1: (2, 3)}


@pytest.mark.parametrize("fn,args", [
    (lambda: None, ()),             # a lambda has no name
    (os.getpid, ()),                # not bale's
    (json.dumps, ({},)),            # not bale's
    (snapshots.remove, (object(),)),  # an object of no module of bale's
    (snapshots.remove, ({1, 2},)),  # a set
    (snapshots.remove, (float("nan"),)),
])
def test_what_cannot_be_named_is_not_portable(fn, args):
    with pytest.raises(request.NotPortable):
        request.encode_call(fn, args)


def test_closures_are_not_portable():
    def inner() -> None:
        pass
    with pytest.raises(request.NotPortable):
        request.encode_call(inner, ())


@pytest.mark.parametrize("doc", [
    {"fn": "os:system", "args": ["id"], "what": "x", "modules": []},
    {"fn": "builder.cli.main:main", "args": [], "what": "x", "modules": []},
    {"fn": "builder.workspace.snapshots:__class__", "args": [], "what": "x", "modules": []},
    {"fn": "builder.workspace.snapshots:os.system", "args": ["id"], "what": "x", "modules": []},
    {"fn": "builder.workspace.snapshots:remove", "args": [{"$o": "subprocess:Popen", "s": {}}], "what": "x",
     "modules": []},
    {"fn": "builder.workspace.snapshots:remove", "args": [{"$f": "os:system"}], "what": "x", "modules": []},
    {"fn": "builder.workspace.snapshots:remove", "args": [{"$o": "builder.errors:SandboxError", "s": {}}],
     "what": "x", "modules": []},
    {"fn": "builder.workspace.snapshots:remove", "args": [{"$fd": 3}], "what": "x", "modules": []},
    {"fn": "builder.workspace.snapshots:remove", "args": [{"$x": 1}], "what": "x", "modules": []},
    {"fn": "builder.workspace.snapshots:SnapshotRootfs", "args": [], "what": "x", "modules": []},
])
def test_requests_naming_anything_else_are_refused(doc):
    with pytest.raises(SandboxError):
        request.decode_call(request.check(doc), [])


def test_malformed_envelopes_are_refused():
    for doc in ([], {"fn": "x"}, {"fn": 1, "args": [], "what": "", "modules": []},
                {"fn": "a:b", "args": [], "what": "", "modules": [1]}):
        with pytest.raises(SandboxError):
            request.check(doc)
