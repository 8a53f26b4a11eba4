"""One user namespace per bale invocation (issue 10): the namespace helper
(builder/sandbox/helper.py) enters it once, with one newuidmap and one newgidmap,
and serves every snapshot, copy, commit and RUN of the build from there.

Counted, not timed: newuidmap/newgidmap are wrapped by scripts first on PATH that
log each run with the user namespace of the process they map
(/proc/PID/ns/user), and every RUN prints the user namespace it runs in. A
second namespace anywhere (the probe, an unpack, a COPY, a commit, a RUN) shows
up as a second mapping run or as a RUN in a namespace no mapping was made for."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

WRAPPER = """#!/bin/sh
echo "$(basename "$0") $(readlink /proc/$1/ns/user)" >> {log}
exec {real} "$@"
"""


@pytest.fixture
def counted(unprivileged_user, user_tmp) -> tuple[dict[str, str], Path]:
    """(env, log): PATH with newuidmap/newgidmap wrappers first, and the log they append to."""
    u = unprivileged_user
    bindir = user_tmp / "wrap"
    bindir.mkdir()
    log = user_tmp / "maps.log"
    for tool in ("newuidmap", "newgidmap"):
        real = next(p for p in ("/usr/bin/" + tool, "/bin/" + tool) if os.path.exists(p))
        (bindir / tool).write_text(WRAPPER.format(log=log, real=real))
        (bindir / tool).chmod(0o755)
    os.chown(bindir, u.uid, u.gid)
    return {"PATH": f"{bindir}:{u.env()['PATH']}"}, log


def _maps(log: Path) -> list[tuple[str, str]]:
    if not log.exists():
        return []
    return [tuple(line.split(" ", 1)) for line in log.read_text().splitlines()]  # type: ignore[misc]


def test_four_step_build_enters_one_user_namespace(unprivileged_user, user_tmp, busybox_layout, counted):
    u = unprivileged_user
    env, log = counted
    store = u.busybox_store(user_tmp, busybox_layout)
    ctx = user_tmp / "ctx"
    ctx.mkdir()
    (ctx / "f").write_text("from the context\n")
    (ctx / "Dockerfile").write_text(
        "FROM busybox\n"
        "RUN echo \"ns-a $(readlink /proc/self/ns/user)\" && echo a > /a\n"
        "COPY f /f\n"
        "RUN echo \"ns-b $(readlink /proc/self/ns/user)\" && cat /f /a > /b\n"
        "RUN echo \"ns-c $(readlink /proc/self/ns/user)\" && test -s /b\n")
    for p in (ctx, ctx / "f", ctx / "Dockerfile"):
        os.chown(p, u.uid, u.gid)
    log.unlink(missing_ok=True)
    r = u.bale("bud", "--no-cache", "-t", "counted", str(ctx), root=store, env=env)
    maps = _maps(log)
    assert sorted(tool for tool, _ in maps) == ["newgidmap", "newuidmap"], (maps, r.stderr)
    (ns_uid, ns_gid) = (ns for _, ns in maps)
    assert ns_uid == ns_gid and re.fullmatch(r"user:\[\d+\]", ns_uid), maps
    runs = dict(re.findall(r"^(ns-[abc]) (user:\[\d+\])$", r.stdout, re.M))
    assert runs == {"ns-a": ns_uid, "ns-b": ns_uid, "ns-c": ns_uid}, (runs, r.stdout)


def test_new_store_first_command_enters_one_user_namespace(unprivileged_user, user_tmp, counted):
    """`bale from scratch` on a new store: the probe (its cache outside the store is emptied here:
    a new XDG_RUNTIME_DIR) enters the helper's one namespace; the empty snapshot needs none
    (scripted._prepare_empty), so with the probe's answer kept, the next store enters none."""
    u = unprivileged_user
    env, log = counted
    run = user_tmp / "xdg"
    run.mkdir(mode=0o700)
    os.chown(run, u.uid, u.gid)
    env = dict(env, XDG_RUNTIME_DIR=str(run))
    for store, tools in (("s1", ["newgidmap", "newuidmap"]), ("s2", [])):
        log.unlink(missing_ok=True)
        r = u.bale("from", "scratch", root=user_tmp / store, env=env)
        assert r.stdout.strip().startswith("working-container"), r.stdout
        assert sorted(tool for tool, _ in _maps(log)) == tools, (store, _maps(log), r.stderr)
    assert list((run / "bale").glob("probe-*.json")), "the probe's answer was not kept outside the store"


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _uid(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return -1
    return int(next(l for l in status.splitlines() if l.startswith("Uid:")).split()[1])


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rpartition(")")[2].split()[1])
            children.setdefault(ppid, []).append(int(name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def test_helper_survives_a_run_that_kills_all_it_sees_and_is_closed_to_its_uid(unprivileged_user, user_tmp,
                                                                                busybox_layout, counted):
    """A RUN killing every process it can see (kill -9 -1) and its parent leaves the helper serving the
    next steps in the same namespace; while a RUN runs, neither bale nor the helper nor its worker
    lets a process of the same uid read its environment (not dumpable)."""
    import subprocess
    import time
    u = unprivileged_user
    env, log = counted
    store = u.busybox_store(user_tmp, busybox_layout)
    ctx = user_tmp / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "FROM busybox\n"
        "RUN kill -9 -1; kill -9 $PPID; echo killed\n"
        "RUN sleep 4\n"
        "RUN echo \"after $(readlink /proc/self/ns/user)\"\n")
    os.chown(ctx, u.uid, u.gid)
    os.chown(ctx / "Dockerfile", u.uid, u.gid)
    log.unlink(missing_ok=True)
    full = u.bale_argv("bud", "--no-cache", "-t", "k", str(ctx), root=store, env=env)
    proc = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/tmp")
    try:
        seen: dict[int, str] = {}
        deadline = time.monotonic() + 120
        while not seen and time.monotonic() < deadline and proc.poll() is None:
            mine = [(p, _cmdline(p)) for p in _descendants(proc.pid) if _uid(p) == u.uid]
            if any(cmd.startswith(b"sleep") for _, cmd in mine):
                for p, cmd in mine:  # bale, the helper and the worker running the sleep
                    if b"builder.cli.main" in cmd:
                        r = subprocess.run(["runuser", "-u", u.name, "--", "cat", f"/proc/{p}/environ"],
                                           capture_output=True)
                        seen[p] = "read" if r.returncode == 0 else r.stderr.decode().strip()
            time.sleep(0.05)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert len(seen) >= 3 and all("Permission denied" in v for v in seen.values()), seen
    maps = _maps(log)
    assert sorted(tool for tool, _ in maps) == ["newgidmap", "newuidmap"], (maps, err)
    assert f"after {maps[0][1]}" in out.splitlines(), out
