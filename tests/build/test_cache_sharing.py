"""RUN --mount=type=cache,sharing=shared|private|locked with two users of one cache id at once,
as the unprivileged user: two `bale bud` processes on one store, and two parallel stages of one
build. What each RUN saw of the cache is read back from the exported layers with the stdlib tar
reader (tests/helpers/oci_reader); the order of events from files a host directory (``-v``)
shares between the RUNs.

Spec, BuildKit solver/llbsolver/mounts/mount.go (moby/buildkit 73ed6825):
* getRefCacheDir, lines 92-103: SHARED goes through ``globalCacheRefs`` (every concurrent user
  gets the one ref), PRIVATE and LOCKED through getRefCacheDirNoCache with block false / true;
* getRefCacheDirNoCache, lines 118-147: an instance another user holds (``cache.ErrLocked``)
  is skipped; PRIVATE then makes a new, empty ref (``makeMutable``), LOCKED sleeps 100 ms and
  looks again until the holder lets go."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers.oci_reader import flatten, read_layout

pytestmark = [pytest.mark.slow]

MOUNT = "--mount=type=cache,id=shared-id,target=/c,sharing={mode}"
# the first RUN: writes into the cache, says it is in, and holds the cache until the test releases it
FIRST = ("FROM busybox\nRUN {mount} echo one > /c/one && touch /sync/one-started && "
         "while [ ! -e /sync/release ]; do sleep 0.1; done; ls /c > /seen && touch /sync/one-ended\n")
# the second: what it finds in the cache, then its own file
SECOND = ("FROM busybox\nRUN {mount} touch /sync/two-started && ls /c > /seen && echo two > /c/two\n")


def _wait(cond, what: str, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def env(unprivileged_user, user_tmp, busybox_layout):
    u = unprivileged_user
    root = u.busybox_store(user_tmp, busybox_layout)
    sync = user_tmp / "sync"
    sync.mkdir()
    os.chown(sync, u.uid, u.gid)

    def ctx(name: str, dockerfile: str) -> Path:
        d = user_tmp / f"ctx-{name}"
        d.mkdir()
        (d / "Dockerfile").write_text(dockerfile)
        for p in (d, d / "Dockerfile"):
            os.lchown(p, u.uid, u.gid)
        return d

    def start(name: str, dockerfile: str, *extra: str) -> subprocess.Popen[str]:
        argv = ["runuser", "-u", u.name, "--", "env", "-i", *[f"{k}={v}" for k, v in u.env().items()],
                u.python, "-m", "builder.cli.main", "--root", str(root), "bud", *extra, "-v", f"{sync}:/sync",
                "-t", f"oci:{user_tmp}/{name}:latest", str(ctx(name, dockerfile))]
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/tmp")

    def result(name: str, p: subprocess.Popen[str]) -> dict:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, out + err
        return flatten(read_layout(user_tmp / name, "latest")[2])

    return start, result, sync, root


def _instances(root: Path) -> list[str]:
    return sorted(os.listdir(root / "cache-mounts"))


@pytest.mark.parametrize("isolation", [None, "ptrace"])
@pytest.mark.parametrize("mode", ["shared", "private", "locked"])
def test_second_user_of_a_held_cache(env, mode, isolation):
    start, result, sync, root = env
    extra = ("--isolation", isolation) if isolation else ()
    one = start("one", FIRST.format(mount=MOUNT.format(mode=mode)), *extra)
    _wait(lambda: (sync / "one-started").exists() or one.poll() is not None, "the first RUN")
    assert one.poll() is None, one.communicate()
    two = start("two", SECOND.format(mount=MOUNT.format(mode=mode)), *extra)
    if mode == "locked":
        # the second build gets to its RUN and waits there as long as the first holds the cache
        time.sleep(4)
        assert not (sync / "two-started").exists() and two.poll() is None
    else:  # shared and private never wait: the second RUN ends while the first still holds the cache
        _wait(lambda: two.poll() is not None, "the second build")
        assert not (sync / "one-ended").exists()
    (sync / "release").touch()
    fs_one, fs_two = result("one", one), result("two", two)
    seen_one, seen_two = fs_one["/seen"].content.split(), fs_two["/seen"].content.split()
    if mode == "shared":  # one directory for both, at the same time
        assert seen_two == [b"one"] and seen_one == [b"one", b"two"]
        assert len(_instances(root)) == 1
    elif mode == "private":  # a new, empty instance for the second; each sees only its own
        assert seen_two == [] and seen_one == [b"one"]
        names = _instances(root)
        assert len(names) == 2 and names[1] == names[0] + "-2", names
        assert sorted(os.listdir(root / "cache-mounts" / names[1])) == ["two"]
    else:  # the second ran after the first let go, in the same directory
        assert (sync / "two-started").stat().st_mtime_ns >= (sync / "one-ended").stat().st_mtime_ns
        assert seen_one == [b"one"] and seen_two == [b"one"]
        assert len(_instances(root)) == 1
        assert sorted(os.listdir(root / "cache-mounts" / _instances(root)[0])) == ["one", "two"]


PARALLEL = ("FROM busybox AS a\nRUN {mount} echo a > /c/a && touch /sync/a && "
            "i=0; while [ ! -e /sync/b ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; ls /c > /seen\n"
            "FROM busybox AS b\nRUN {mount} echo b > /c/b && touch /sync/b && "
            "i=0; while [ ! -e /sync/a ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; ls /c > /seen\n"
            "FROM scratch\nCOPY --from=a /seen /a\nCOPY --from=b /seen /b\n")


@pytest.mark.parametrize("mode", ["shared", "private"])
def test_parallel_stages_of_one_build(env, mode):
    """Two stages run at once (scheduler.run_graph, --jobs 2) and wait for each other inside their
    RUNs: shared, both see both files; private, each its own instance and only its own file."""
    start, result, sync, root = env
    fs = result("par", start("par", PARALLEL.format(mount=MOUNT.format(mode=mode)), "--jobs", "2"))
    a, b = fs["/a"].content.split(), fs["/b"].content.split()
    if mode == "shared":
        assert a == b == [b"a", b"b"] and len(_instances(root)) == 1
    else:
        assert a == [b"a"] and b == [b"b"] and len(_instances(root)) == 2


def test_locked_parallel_stages_take_turns(env):
    """Two stages, locked: the one that got the cache first ends before the other starts, and the
    other finds its file (BuildKit mount.go:134-146, block until the holder lets go)."""
    start, result, sync, root = env
    body = ("RUN {mount} touch /sync/{s}-in && ls /c > /seen && echo {s} > /c/{s} && sleep 2 && "
            "touch /sync/{s}-out\n")
    m = MOUNT.format(mode="locked")
    df = (f"FROM busybox AS a\n{body.format(mount=m, s='a')}FROM busybox AS b\n{body.format(mount=m, s='b')}"
          "FROM scratch\nCOPY --from=a /seen /a\nCOPY --from=b /seen /b\n")
    fs = result("lockpar", start("lockpar", df, "--jobs", "2"))
    t = {n: (sync / n).stat().st_mtime_ns for n in ("a-in", "a-out", "b-in", "b-out")}
    first, second = ("a", "b") if t["a-in"] < t["b-in"] else ("b", "a")
    assert t[f"{first}-out"] <= t[f"{second}-in"], t  # no overlap
    assert fs[f"/{first}"].content == b"" and fs[f"/{second}"].content == first.encode() + b"\n"
    assert len(_instances(root)) == 1
