"""What comes back from a namespace child is JSON with a fixed schema, never
pickle: a forged answer written into the pipe (a RUN reaching it through
/proc/PID/fd) can be at worst a wrong plain value, never code run in bale."""
from __future__ import annotations

import json
import os
import pickle

import pytest

from builder.errors import BuildError, ContainerError, RunFailed, SandboxError
from builder.sandbox import wire
from snapshotter.errors import SnapshotError


class _Boom:
    def __reduce__(self):  # what an attacker would send to a pickle reader
        return (os.system, ("touch /tmp/bale-wire-pwned",))


def test_plain_values_round_trip_and_tuples_become_lists():
    for v in (None, True, 3, 2.5, "x", [1, "a", None], {"a": [1, {"b": "c"}]}):
        assert wire.decode(wire.encode_ok(v), "t") == v
    assert wire.decode(wire.encode_ok((0, (1, 2))), "t") == [0, [1, 2]]


def test_non_plain_results_are_refused_in_the_child():
    with pytest.raises(SandboxError, match="result not transferable: object is not plain data"):
        wire.decode(wire.encode_ok(object()), "t")
    with pytest.raises(SandboxError, match="not transferable"):
        wire.decode(wire.encode_ok({1: "int key"}), "t")


def test_errors_come_back_as_allowlisted_classes():
    for exc in (ContainerError("c"), BuildError("b"), SnapshotError("s")):
        with pytest.raises(type(exc), match=str(exc)):
            wire.decode(wire.encode_error(exc), "t")
    with pytest.raises(RunFailed) as info:
        wire.decode(wire.encode_error(RunFailed("r", 7)), "t")
    assert info.value.status == 7
    with pytest.raises(SandboxError, match=r"^t: No such file or directory: /x$"):
        wire.decode(wire.encode_error(FileNotFoundError(2, "No such file or directory", "/x")), "t")
    with pytest.raises(SandboxError, match="KeyError: 'k'"):
        wire.decode(wire.encode_error(KeyError("k")), "t")


@pytest.mark.parametrize("payload,why", [
    (pickle.dumps(("ok", _Boom())), "not JSON"),
    (b"", "died without an answer"),
    (b"[1]", "not one key"),
    (b'{"ok": 1, "error": 2}', "not one key"),
    (json.dumps({"error": {"class": "SystemExit", "message": "x"}}).encode(), "unknown error class"),
    (json.dumps({"error": {"class": "os.system", "message": "x"}}).encode(), "unknown error class"),
    (json.dumps({"error": {"class": "BuildError", "message": "x", "__dict__": {}}}).encode(), "bad error record"),
    (json.dumps({"error": {"class": "BuildError", "message": "x" * 10000}}).encode(), "bad error record"),
    (b"[" * 100000 + b"]" * 100000, "not JSON"),
    (b"\xff\xfe", "not JSON"),
])
def test_forged_answers_are_refused(payload, why):
    with pytest.raises(SandboxError, match=why):
        wire.decode(payload, "t")
    assert not os.path.exists("/tmp/bale-wire-pwned")


def test_messages_stay_one_line():
    with pytest.raises(BuildError) as info:
        wire.decode(json.dumps({"error": {"class": "BuildError", "message": "a\nb"}}).encode(), "t")
    assert str(info.value) == "a b"


def test_the_userns_module_does_not_unpickle():
    import inspect

    from builder.sandbox import userns
    src = inspect.getsource(userns)
    assert "pickle" not in src
