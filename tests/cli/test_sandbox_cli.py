"""Sandbox behaviour through the CLI, as the unprivileged user: what a RUN sees,
network none, oci isolation via runc, bale info/unshare/mount, and cleanup after
bale is killed."""
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from tests.helpers.processes import running, signal_children, wait_started

pytestmark = [pytest.mark.slow]


@pytest.fixture
def ctr(unprivileged_user, user_tmp, busybox_layout):
    u = unprivileged_user
    root = u.busybox_store(user_tmp, busybox_layout)
    name = u.bale("from", "busybox", root=root).stdout.strip()

    def bale(*args, **kw):
        return u.bale(*args, root=root, **kw)
    return u, bale, name, root


def test_what_a_run_sees(ctr):
    u, bale, name, root = ctr
    script = ("echo pid=$$; cat /proc/self/uid_map | tr -s ' ' | sed 's/^ //'; hostname; ls /work 2>&1; "
              "echo x > /etc/hosts 2>&1 || echo hosts-ro; echo x > /sys/x 2>&1 || echo sys-ro; "
              "ls /dev | tr '\\n' ' '; echo; id -u; su app -c 'id -u'")
    out = bale("run", "--hostname", "buildhost", name, "--", "sh", "-c", script).stdout.splitlines()
    assert out[0] == "pid=1"
    assert out[1] == "0 1001 1" or out[1].startswith("0 ") and out[2].startswith("1 ")
    assert "buildhost" in out and "hosts-ro" in out and "sys-ro" in out
    assert any("No such file" in l for l in out)  # the host's /work is not reachable
    devs = next(l for l in out if "null" in l)
    for d in ("null", "zero", "full", "random", "urandom", "tty", "pts", "shm"):
        assert d in devs.split()
    assert out[-2:] == ["0", "1000"]


def test_network_none_has_only_loopback_up(ctr):
    u, bale, name, root = ctr
    out = bale("run", "--network", "none", name, "--", "sh", "-c",
               "ls /sys/class/net; cat /sys/class/net/lo/operstate /sys/class/net/lo/flags").stdout.split()
    assert out[0] == "lo" and len([x for x in out if not x.startswith(("0x", "unknown", "up"))]) == 1
    assert int(out[-1], 16) & 1  # IFF_UP


def test_exit_status_and_signal(ctr):
    u, bale, name, root = ctr
    assert bale("run", name, "--", "sh", "-c", "exit 5", check=False).returncode == 5
    # PID 1 ignores signals sent from inside its namespace; kill it from the host
    argv = u.bale_argv("run", name, "--", "sleep", "4343", root=root)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(200):
        found = subprocess.run(["pgrep", "-x", "-f", "sleep 4343"], capture_output=True, text=True).stdout.split()
        if found:
            break
        time.sleep(0.05)
    os.kill(int(found[0]), signal.SIGKILL)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 137 and "killed by signal 9" in err


def test_oci_isolation_with_runc(ctr):
    if not shutil.which("runc"):
        pytest.skip("runc not installed: cannot test --isolation oci")
    u, bale, name, root = ctr
    out = bale("run", "--isolation", "oci", name, "--", "sh", "-c",
               "echo $$; echo oci > /via-oci; chown 42:42 /via-oci").stdout.split()
    assert out == ["1"]
    bale("commit", name, "viaoci")
    bale("push", "viaoci", f"oci:{root.parent}/o:1")
    from tests.helpers.oci_reader import flatten, read_layout
    fs = flatten(read_layout(root.parent / "o", "1")[2])
    assert fs["/via-oci"].content == b"oci\n" and fs["/via-oci"].info.uid == 42


def test_info_and_unshare_mount(ctr):
    u, bale, name, root = ctr
    info = json.loads(bale("info", "--format", "json").stdout)
    assert info["isolation"] == "rootless" and info["storage_driver"] == "overlay"
    assert info["probe"]["userns"] and info["probe"]["overlay"] and info["idmap"]["uids"][1][2] == 65536
    text = bale("info").stdout
    assert "isolation:       rootless" in text
    r = bale("unshare", "--mount", f"MNT={name}", "--", "sh", "-c", "id -u; cat $MNT/etc/passwd | head -1")
    assert r.stdout.splitlines() == ["0", "root:x:0:0:root:/root:/bin/sh"]


def test_killed_bale_leaves_no_processes_or_mounts(ctr):
    u, bale, name, root = ctr
    argv = u.bale_argv("run", name, "--", "sleep", "4242", root=root)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    wait_started(proc, "sleep 4242", "the sandboxed sleep", timeout=20)
    # kill -9 of this test's bale itself (the child of its runuser), not of its children nor of other tests'
    signal_children(proc, signal.SIGKILL)
    proc.wait(10)
    time.sleep(0.5)
    assert not running("sleep 4242")
    with open("/proc/self/mountinfo") as fh:
        assert str(root) not in fh.read()
    # the container is intact and usable afterwards
    assert bale("run", name, "--", "true").returncode == 0


def test_sigterm_during_bud_leaves_nothing_running(ctr, user_tmp):
    u, bale, name, root = ctr
    ctx = user_tmp / "sigctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN sleep 4545\n")
    os.lchown(ctx, u.uid, u.gid)
    os.lchown(ctx / "Dockerfile", u.uid, u.gid)
    argv = u.bale_argv("bud", "-t", "never", str(ctx), root=root)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_started(proc, "sleep 4545", "the RUN", timeout=10)
    # only this test's bale (the child of its runuser): other tests' bale processes run as the same user
    signal_children(proc, signal.SIGTERM)
    proc.wait(20)
    time.sleep(0.5)
    assert proc.returncode != 0
    assert not running("sleep 4545")
    with open("/proc/self/mountinfo") as fh:
        assert str(root) not in fh.read()
    assert "localhost/never:latest" not in bale("images").stdout
