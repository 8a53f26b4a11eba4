"""The sandbox primitives directly (no store): id maps, USER resolution, and
UserNamespace.run over a plain busybox directory — rootless paths as the real
unprivileged user ``baletest`` (and ``baletest2`` without a subuid range)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from builder.errors import ContainerError
from builder.sandbox.idmap import IDMap, IDMapping, helper_args, subid_ranges
from builder.sandbox.users import resolve_user
from tests.fixtures.rootfs import make_busybox_rootfs
from tests.fixtures.users import make_traversable

# Runs as the test user: UserNamespace().run(spec) over a directory; prints the RunResult as a last line.
SCRIPT = r"""
import json, sys
from builder.sandbox.userns import UserNamespace
from builder.sandbox.spec import ProcessSpec
class Dir:
    def __init__(self, p): self.p = p
    def setup(self): return self.p
a = json.loads(sys.argv[1])
spec = ProcessSpec(args=a["args"], env=["PATH=/bin:/usr/bin", "HOME=/root"], cwd=a.get("cwd", "/"),
                   user=a.get("user", ""), network=a.get("network", "host"), hostname=a.get("hostname", "bale"))
try:
    r = UserNamespace().run(spec, Dir(a["root"]))
except Exception as exc:
    sys.stdout.flush()
    print("RESULT:" + json.dumps({"error": type(exc).__name__, "message": str(exc)}), flush=True)
    sys.exit(0)
sys.stdout.flush()
print("RESULT:" + json.dumps({"status": r.status, "created": r.created_paths}), flush=True)
"""


def _user_rootfs(user, base: Path) -> Path:
    root = make_busybox_rootfs(base / "rootfs")
    for p in [root, *root.rglob("*")]:
        os.lchown(p, user.uid, user.gid)
    return root


def sandbox(who, root: Path, script: str, **kw) -> tuple[str, dict, str]:
    """Run ``sh -c script`` in the rootless sandbox as the test user ``who``; (stdout, result, stderr)."""
    args = {"root": str(root), "args": ["/bin/sh", "-c", script], **kw}
    proc = who.run([who.python, "-c", SCRIPT, json.dumps(args)], check=False, timeout=60)
    out, _, last = proc.stdout.rpartition("RESULT:")
    assert last, f"no result (rc {proc.returncode}): {proc.stdout} {proc.stderr}"
    return out, json.loads(last), proc.stderr


def _subid_base(name: str) -> int:
    for line in Path("/etc/subuid").read_text().splitlines():
        if line.split(":")[0] == name:
            return int(line.split(":")[1])
    raise AssertionError(f"no subuid range for {name}")


# --- pure parts -----------------------------------------------------------------------------
def test_subid_ranges_by_name_and_uid(tmp_path):
    f = tmp_path / "subuid"
    f.write_text("alice:100000:65536\n# comment\n1234:300000:10\nbad line\nbob:x:1\nalice:500000:5\n")
    assert subid_ranges("alice", str(f), 999) == [(100000, 65536), (500000, 5)]
    assert subid_ranges("carol", str(f), 1234) == [(300000, 10)]
    assert subid_ranges("1234", str(f)) == [(300000, 10)]
    assert subid_ranges("bob", str(f), 1) == []
    assert subid_ranges("alice", str(tmp_path / "missing"), 1) == []


def test_idmap_to_host_and_helper_args():
    m = IDMap((IDMapping(0, 1001, 1), IDMapping(1, 100000, 65536)), (IDMapping(0, 1001, 1),))
    assert m.full and m.to_host(0) == 1001 and m.to_host(1234) == 100000 + 1233
    assert m.to_container(100000 + 1233) == 1234 and m.to_container(1001) == 0
    assert m.gid_to_host(0) == 1001 and m.gid_to_container(1001) == 0
    with pytest.raises(ValueError):
        m.to_container(99999)
    with pytest.raises(ValueError):
        m.to_host(70000)
    assert helper_args(42, m.uids) == ["42", "0", "1001", "1", "1", "100000", "65536"]
    assert not IDMap((IDMapping(0, 5, 1),), (IDMapping(0, 5, 1),)).full


def test_resolve_user_forms(busybox_rootfs):
    assert resolve_user(busybox_rootfs, "app") == (1000, 1000, [2000], "/home/app")
    assert resolve_user(busybox_rootfs, "")[:2] == (0, 0)
    assert resolve_user(busybox_rootfs, "1000:2000")[:2] == (1000, 2000)
    assert resolve_user(busybox_rootfs, "app:extra")[:2] == (1000, 2000)
    assert resolve_user(busybox_rootfs, "4242")[:2] == (4242, 0)
    with pytest.raises(ContainerError, match="app2"):
        resolve_user(busybox_rootfs, "app2")


# moby/buildkit executor/oci/user.go GetUser: ParseUIDGID fast path (parseUID: "root" or
# strconv.ParseUint(s, 10, 32)), else vendor/github.com/moby/sys/user/user.go GetExecUser:
# parseNumeric (strconv.Atoi, minID 0 .. maxID 1<<31-1, else ErrRange "uids and gids must be in
# range 0-2147483647"); parseParts reads passwd/group numbers with Atoi, errors ignored (0)
@pytest.mark.parametrize("spec,ids", [
    ("3000000000:0", (3000000000, 0)), ("root:4294967294", (0, 4294967294)), ("2147483647", (2147483647, 0)),
    ("+42", (42, 0)), ("042:07", (42, 7)),
])
def test_resolve_user_numbers_as_buildkit_reads_them(busybox_rootfs, spec, ids):
    assert resolve_user(busybox_rootfs, spec)[:2] == ids


@pytest.mark.parametrize("spec,limit", [
    ("99999999999999", 2147483647), ("3000000000", 2147483647), ("-1", 2147483647), ("4294967295", 2147483647),
    ("99999999999999:0", 2147483647), ("app:-5", 2147483647),
    ("4294967295:0", 4294967294),  # the fast path takes it; setresuid would read it as "unchanged"
])
def test_resolve_user_out_of_range_is_one_clean_line(busybox_rootfs, spec, limit):
    with pytest.raises(ContainerError) as got:
        resolve_user(busybox_rootfs, spec)
    assert str(got.value) == f"user {spec}: uids and gids must be in range 0-{limit}"


def test_resolve_user_reads_odd_files_as_buildkit_does(busybox_rootfs):
    """A non-numeric id in the image's /etc/passwd reads as 0 (parseParts ignores Atoi errors);
    a digit that is not ASCII is a name, not a number (Atoi takes 0-9 only)."""
    with open(busybox_rootfs / "etc" / "passwd", "a") as fh:
        fh.write("odd:x:abc:def::/home/odd:/bin/sh\n")
    assert resolve_user(busybox_rootfs, "odd") == (0, 0, [], "/home/odd")
    with pytest.raises(ContainerError, match="user \u00b2 not found"):
        resolve_user(busybox_rootfs, "\u00b2")


def test_resolve_user_is_confined_to_the_rootfs(busybox_rootfs):
    """A /etc/passwd symlinked to the host's must resolve inside the rootfs, not read the host's."""
    (busybox_rootfs / "etc" / "passwd").unlink()
    (busybox_rootfs / "etc" / "passwd").symlink_to("../../../../../../../../etc/passwd")
    with pytest.raises(ContainerError, match="/etc/passwd"):  # resolves to itself inside the rootfs: a loop
        resolve_user(busybox_rootfs, "root")
    (busybox_rootfs / "etc" / "passwd").unlink()
    (busybox_rootfs / "etc" / "passwd").symlink_to("../../../../../../../../etc/group")
    host_user = Path("/etc/passwd").read_text().splitlines()[-1].split(":")[0]
    with pytest.raises(ContainerError, match=host_user):
        resolve_user(busybox_rootfs, host_user)


# --- rootless, as the unprivileged user ---------------------------------------------------------
@pytest.fixture
def urootfs(unprivileged_user, user_tmp) -> Path:
    return _user_rootfs(unprivileged_user, user_tmp)


def test_rootless_run_sees_a_container(unprivileged_user, urootfs):
    out, res, err = sandbox(unprivileged_user, urootfs, hostname="buildhost", script=(
        "id -u; cat /proc/self/uid_map; echo pid=$$; hostname;"
        "echo x > /etc/hosts && echo hosts-writable; touch /sys/x 2>/dev/null && echo sys-writable;"
        "test -e /work && echo host-visible; grep buildhost /etc/hosts;"
        "touch /tmp/owned && chown 1234:4321 /tmp/owned && echo chowned; echo to-stderr >&2"))
    assert res["status"] == 0, (out, res, err)
    lines = out.split("\n")
    assert lines[0] == "0"
    maps = [l.split() for l in lines if len(l.split()) == 3]
    assert maps[0] == ["0", str(unprivileged_user.uid), "1"] and len(maps) >= 2, out
    assert "pid=1" in lines and "buildhost" in lines and "chowned" in lines
    assert "hosts-writable" not in out and "sys-writable" not in out and "host-visible" not in out
    assert "to-stderr" in err
    st = os.lstat(urootfs / "tmp" / "owned")
    assert st.st_uid == _subid_base(unprivileged_user.name) + 1233
    # mountpoints the sandbox had to make are reported so the diff can drop them
    assert {"/proc", "/dev", "/sys", "/etc/hosts"} <= set(res["created"]), res


def test_rootless_network_none_has_only_loopback(unprivileged_user, urootfs):
    out, res, _ = sandbox(unprivileged_user, urootfs, network="none",
                          script="ls /sys/class/net; ip link show lo")
    assert res["status"] == 0, out
    assert out.split("\n")[0] == "lo" and "UP" in out.split("\n", 1)[1]


def _start(who, root: Path, argv: list[str]):
    import subprocess
    args = {"root": str(root), "args": argv}
    return subprocess.Popen(who.argv([who.python, "-c", SCRIPT, json.dumps(args)]), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _pgrep(uid: int, pattern: str) -> list[str]:
    import subprocess
    return subprocess.run(["pgrep", "-u", str(uid), "-f", pattern], capture_output=True, text=True).stdout.split()


def _wait_for(pred, timeout: float = 20) -> bool:
    import time
    deadline = time.time() + timeout
    while not pred() and time.time() < deadline:
        time.sleep(0.05)
    return bool(pred())


def test_rootless_exit_status_and_signal(unprivileged_user, urootfs):
    assert sandbox(unprivileged_user, urootfs, "exit 3")[1]["status"] == 3
    # the command is PID 1 of its pid namespace: killed from outside, its signal comes back as 128+N
    proc = _start(unprivileged_user, urootfs, ["/bin/sleep", "4712"])
    assert _wait_for(lambda: _pgrep(unprivileged_user.uid, "^/bin/sleep 4712"))
    for pid in _pgrep(unprivileged_user.uid, "^/bin/sleep 4712"):
        os.kill(int(pid), 9)
    out, err = proc.communicate(timeout=20)
    assert json.loads(out.rpartition("RESULT:")[2])["status"] == 137, (out, err)


def test_rootless_user_resolution(unprivileged_user, urootfs):
    out, res, _ = sandbox(unprivileged_user, urootfs, "id -u; id -g; id -G", user="app")
    assert res["status"] == 0 and out.split() == ["1000", "1000", "1000", "2000"], out
    _, res, _ = sandbox(unprivileged_user, urootfs, "true", user="app2")
    assert res["error"] == "ContainerError" and "app2" in res["message"]


def test_rootless_missing_cwd_fails_clearly(unprivileged_user, urootfs):
    _, res, _ = sandbox(unprivileged_user, urootfs, "true", cwd="/nonexistent")
    assert res == {"error": "ContainerError",
                   "message": "working directory /nonexistent: No such file or directory"}, res


def test_resolv_conf_choice(tmp_path):
    from builder.sandbox.process import DEFAULT_RESOLV, _resolv_conf
    host = Path("/etc/resolv.conf").read_text() if os.access("/etc/resolv.conf", os.R_OK) else ""
    assert _resolv_conf("host") == host
    none = _resolv_conf("none")
    assert none == DEFAULT_RESOLV or none == host


def test_call_from_a_multithreaded_parent(unprivileged_user):
    code = ("import threading, time, os\n"
            "from builder.sandbox.userns import UserNamespace as U\n"
            "stop = threading.Event()\n"
            "ts = [threading.Thread(target=stop.wait) for _ in range(4)]\n"
            "[t.start() for t in ts]\n"
            "print(sorted({U().call(os.getuid) for _ in range(5)}))\n"
            "stop.set()\n")
    assert unprivileged_user.run([unprivileged_user.python, "-c", code]).stdout.strip() == "[0]"


def test_call_returns_values_and_exceptions(unprivileged_user):
    code = ("from builder.sandbox.userns import UserNamespace as U\n"
            "from builder.errors import ContainerError\n"
            "import os\n"
            "def f(x): return (os.getuid(), x * 2)\n"
            "def g(): raise ContainerError('boom in child')\n"
            "print(U().call(f, 21))\n"
            "try:\n    U().call(g)\nexcept ContainerError as e:\n    print('caught', e)\n"
            "from snapshotter.errors import SnapshotError\n"
            "def h(): raise SnapshotError('snap broke')\n"
            "try:\n    U().call(h)\nexcept SnapshotError as e:\n    print('caught', e)\n"
            "from builder.errors import SandboxError\n"
            "try:\n    U().call(open, '/nonexistent/x')\nexcept SandboxError as e:\n    print('sandbox', e)\n")
    out = unprivileged_user.run([unprivileged_user.python, "-c", code]).stdout
    lines = out.splitlines()
    assert lines[:3] == ["[0, 42]", "caught boom in child", "caught snap broke"], out
    assert lines[3].startswith("sandbox open:") and "No such file" in lines[3], out


def test_single_mapping_fallback_warns(unmapped_user, tmp_path):
    make_traversable(tmp_path)
    base = unmapped_user.tmpdir(tmp_path)
    root = _user_rootfs(unmapped_user, base)
    out, res, err = sandbox(unmapped_user, root, "id -u; cat /proc/self/uid_map")
    assert res["status"] == 0, (out, err)
    assert out.split()[:4] == ["0", "0", str(unmapped_user.uid), "1"], out
    assert f"no subuid range for {unmapped_user.name}: single-id mapping" in err
    _, res, _ = sandbox(unmapped_user, root, "true", user="app")
    assert res.get("error") == "ContainerError"


def test_sigterm_tears_everything_down(unprivileged_user, urootfs):
    import subprocess
    import time
    marker = "4711"
    args = {"root": str(urootfs), "args": ["/bin/sh", "-c", f"sleep {marker} & sleep {marker}"]}
    proc = subprocess.Popen(unprivileged_user.argv([unprivileged_user.python, "-c", SCRIPT, json.dumps(args)]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def sleepers() -> list[str]:
        out = subprocess.run(["pgrep", "-u", str(unprivileged_user.uid), "-f", f"^sleep {marker}"],
                             capture_output=True, text=True).stdout
        return out.split()
    deadline = time.time() + 20
    while len(sleepers()) < 2 and time.time() < deadline:
        time.sleep(0.1)
    assert len(sleepers()) == 2
    # bale's process: the child of this test's runuser (never another test's process)
    py = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(py) == 1, py
    os.kill(int(py[0]), 15)
    proc.wait(timeout=20)
    deadline = time.time() + 10
    while sleepers() and time.time() < deadline:
        time.sleep(0.1)
    assert sleepers() == []


# --- chroot isolation (real root) ------------------------------------------------------------------
class _Dir:
    def __init__(self, path: Path) -> None:
        self.path = path

    def setup(self) -> Path:
        return self.path


@pytest.mark.skipif(os.geteuid() != 0, reason="chroot isolation needs real root")
def test_chroot_isolation_as_root(busybox_rootfs, capfd):
    from builder.sandbox.chroot import run_chroot
    from builder.sandbox.spec import ProcessSpec
    spec = ProcessSpec(args=["/bin/sh", "-c", "id -u; id -G; test -e /work && echo leak; exit 5"],
                       env=["PATH=/bin"], user="app")
    res = run_chroot(spec, _Dir(busybox_rootfs))
    out = capfd.readouterr().out.split()
    # /dev was made for the device nodes: removed again with them
    assert res.status == 5 and res.created_paths == ["/dev"]
    assert not os.path.lexists(busybox_rootfs / "dev")
    assert out == ["1000", "1000", "2000"]


@pytest.mark.skipif(os.geteuid() != 0, reason="runs runc rootful; the rootless oci path is in tests/cli")
@pytest.mark.skipif(not shutil.which("runc"), reason="runc is not installed (ci/lib.sh installs it)")
def test_oci_isolation_with_runc_as_root(busybox_rootfs, capfd):
    from builder.sandbox.runtime import run_oci
    from builder.sandbox.spec import ProcessSpec
    from builder.sandbox.userns import UserNamespace
    spec = ProcessSpec(args=["/bin/sh", "-c", "id -u; echo pid=$$; exit 4"], env=["PATH=/bin"], user="app")
    res = run_oci(spec, _Dir(busybox_rootfs), userns=UserNamespace())
    out = capfd.readouterr().out.split()
    assert res.status == 4 and out[:2] == ["1000", "pid=1"], out


OVERLAY_SCRIPT = r"""
import io, json, sys, tarfile
from builder.workspace import snapshots
from builder.sandbox.spec import ProcessSpec
from builder.sandbox.userns import UserNamespace
store, tar_path = sys.argv[1], sys.argv[2]
ns = UserNamespace()
layers = [("base", lambda: open(tar_path, "rb"))]
ns.call(snapshots.ensure_layers, store, "overlay", layers)
ns.call(snapshots.prepare, store, "overlay", "ctr", layers)
spec = ProcessSpec(args=["/bin/sh", "-c", "echo hi > /new; chown 7:7 /new; mkdir /run2"], env=["PATH=/bin"])
res = ns.run(spec, snapshots.SnapshotRootfs(store, "overlay", "ctr"))
def names(store, ignore):
    import os, tarfile, tempfile
    fd, path = tempfile.mkstemp()
    snapshots.diff_to_fd(fd, store, "overlay", "ctr", ignore, 0)
    os.close(fd)
    with tarfile.open(path) as t:
        out = sorted((m.name.rstrip("/"), m.uid) for m in t.getmembers())
    os.unlink(path)
    return out
print("RESULT:" + json.dumps({"status": res.status, "created": res.created_paths,
                              "diff": ns.call(names, store, res.created_paths)}))
"""


@pytest.mark.skipif(not os.path.exists("/proc/filesystems") or "overlay" not in open("/proc/filesystems").read(),
                    reason="the kernel has no overlayfs")
def test_rootless_run_over_an_overlay_snapshot(unprivileged_user, user_tmp):
    """The real provider: an overlay snapshot mounted inside the namespace; the mountpoints the
    sandbox created are reported and dropped from the diff, the RUN's own changes are kept."""
    import tarfile
    src = make_busybox_rootfs(user_tmp / "src")
    for cpath in ("etc/hosts", "etc/hostname", "etc/resolv.conf"):
        (src / cpath).unlink(missing_ok=True)
    tar_path = user_tmp / "base.tar"
    with tarfile.open(tar_path, "w") as t:
        t.add(src, arcname=".")
    os.chown(tar_path, unprivileged_user.uid, unprivileged_user.gid)
    store = user_tmp / "snaps"
    store.mkdir()
    os.chown(store, unprivileged_user.uid, unprivileged_user.gid)
    out = unprivileged_user.run([unprivileged_user.python, "-c", OVERLAY_SCRIPT, str(store), str(tar_path)],
                                timeout=120).stdout
    res = json.loads(out.rpartition("RESULT:")[2])
    assert res["status"] == 0
    assert {"/proc", "/dev", "/sys", "/etc/hosts", "/etc/resolv.conf"} <= set(res["created"]), res
    diff = dict((n.lstrip("./"), uid) for n, uid in res["diff"])
    assert diff.get("new") == 7 and "run2" in diff, diff
    assert not {"proc", "dev", "sys", "etc/hosts", "etc/hostname", "etc/resolv.conf"} & set(diff), diff
