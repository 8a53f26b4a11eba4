"""One clean line for every failure (issue 12 item 10, the CLI parts): click's usage errors,
an invalid --platform, a failed git clone, a read-only store, COPY of a socket, a full disk,
and Ctrl-C during a RUN. Each: exactly one line ``bale: ...`` on stderr, no traceback."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.fixtures.images import REPO


def one_line(r, code):
    lines = r.stderr.strip().splitlines()
    assert r.returncode == code, r.stderr
    assert lines and lines[-1].startswith("bale: ") and "Traceback" not in r.stderr \
        and "Exception ignored" not in r.stderr, r.stderr
    return lines[-1]


@pytest.mark.parametrize("args,needle", [
    (["pull"], "Missing argument 'SOURCE'"),
    (["no-such-verb"], "No such command 'no-such-verb'"),
    (["bud", "--no-such-flag", "."], "No such option '--no-such-flag'"),
    (["pull", "--tls-verify=maybe", "x"], "expected true or false, not 'maybe'"),
    (["push", "--retry", "-1", "x"], "--retry"),
])
def test_usage_errors_are_one_line_exit_2(bale, args, needle):
    r = bale(*args, check=False)
    line = one_line(r, 2)
    assert len(r.stderr.strip().splitlines()) == 1 and needle in line and "--help" in line


@pytest.mark.parametrize("verb", ["pull", "from", "bud", "inspect"])
def test_invalid_platform_is_a_usage_error(bale, tmp_path, verb):
    r = bale(verb, "--platform", "linux", str(tmp_path), check=False)
    line = one_line(r, 2)
    assert "invalid platform 'linux': expected OS/ARCH[/VARIANT]" in line
    r = bale(verb, "--platform", "linux/amd64,linux", str(tmp_path), check=False)
    assert one_line(r, 2) and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("dockerfile,line", [
    # dockerfile2llb/convert.go dispatchStopSignal -> moby/sys/signal ParseSignal (v0.7.1 signal.go)
    ("FROM busybox\nSTOPSIGNAL SIGFOO\n", "Dockerfile:2: STOPSIGNAL: invalid signal: SIGFOO"),
    # dockerfile2llb/convert.go:446 platforms.Parse (containerd/platforms platforms.go Parse)
    ("FROM --platform=bogus busybox\n", 'Dockerfile:1: FROM: failed to parse platform bogus: "bogus": '
                                         "unknown operating system or architecture: invalid argument"),
])
def test_what_buildkit_refuses_while_converting_is_one_line_exit_1(bale, store_with_busybox, tmp_path,
                                                                     dockerfile, line):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    r = bale("bud", str(ctx), root=store_with_busybox, check=False)
    assert one_line(r, 1) == "bale: " + line and len(r.stderr.strip().splitlines()) == 1


def test_user_out_of_range_fails_its_run_in_one_line(bale, store_with_busybox, tmp_path):
    """BuildKit fails the RUN (executor/oci/user.go GetUser -> moby/sys/user GetExecUser ErrRange),
    not the USER: an image whose USER is never used by a RUN builds, with that User."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nUSER 99999999999999\nRUN id\n")
    r = bale("bud", str(ctx), root=store_with_busybox, check=False)
    assert one_line(r, 1) == "bale: Dockerfile:3: RUN: user 99999999999999: uids and gids must be in range " \
        "0-2147483647"
    (ctx / "Dockerfile").write_text("FROM busybox\nUSER 4294967295\nRUN id\n")  # was: ran as root
    assert "must be in range" in one_line(bale("bud", str(ctx), root=store_with_busybox, check=False), 1)
    (ctx / "Dockerfile").write_text("FROM busybox\nUSER 99999999999999\n")
    bale("bud", "-t", "highuser", str(ctx), root=store_with_busybox)
    cfg = json.loads(bale("inspect", "--type", "image", "highuser", root=store_with_busybox).stdout)
    assert _find(cfg, "User") == "99999999999999"


def _tar(members: dict[str, str | bytes]) -> bytes:
    """A tar of regular files (str: a symlink to that target)."""
    import io
    import tarfile
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, body in members.items():
            ti = tarfile.TarInfo(name)
            if isinstance(body, str):
                ti.type, ti.linkname = tarfile.SYMTYPE, body
                t.addfile(ti)
            else:
                ti.size = len(body)
                t.addfile(ti, io.BytesIO(body))
    return buf.getvalue()


@pytest.mark.parametrize("members,args,line", [
    ({"a.txt": b"a\n"}, ["-"], "build context on stdin: no Dockerfile in the archive"),
    ({"Dockerfile": b"FROM busybox\n"}, ["-f", "Other", "-"], "build context on stdin: no Other in the archive"),
    # a Dockerfile linked out of the archive is resolved inside it (as BuildKit reads the context),
    # never the host's file (it was: 'Dockerfile:1: <first line of the host file>: unknown instruction')
    ({"Dockerfile": "/etc/hostname"}, ["-"], "build context on stdin: no Dockerfile in the archive"),
])
def test_stdin_context_without_dockerfile_names_no_internal_path(store_with_busybox, members, args, line):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-m", "builder.cli.main", "--root", str(store_with_busybox), "bud", *args],
                       input=_tar(members), capture_output=True, env=env, timeout=120)
    err = r.stderr.decode()
    assert r.returncode == 2 and err.strip().splitlines() == ["bale: " + line], err
    assert str(store_with_busybox) not in err


def test_stdin_context_ignore_file_is_named_and_read_inside_it(store_with_busybox, tmp_path):
    """A bad pattern in an archive's .dockerignore is named by its place in the context, not the
    store's scratch directory; a .dockerignore linked out of the archive is not read (BuildKit
    reads the context's files inside it), so the host file's lines never become patterns."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    bud = [sys.executable, "-m", "builder.cli.main", "--root", str(store_with_busybox), "bud", "-"]
    r = subprocess.run(bud, input=_tar({"Dockerfile": b"FROM busybox\n", ".dockerignore": b"[z-a\n"}),
                       capture_output=True, env=env, timeout=120)
    assert r.returncode == 2 and r.stderr.decode().strip().splitlines() == [
        "bale: .dockerignore:1: invalid pattern '[z-a': syntax error in pattern"], r.stderr
    host = tmp_path / "host-ignore"
    host.write_text("[z-a\n")  # would fail the build if it were read
    r = subprocess.run(bud, input=_tar({"Dockerfile": b"FROM busybox\nCOPY . /c/\n", ".dockerignore": str(host)}),
                       capture_output=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr


def test_tar_file_context_without_dockerfile(bale, store_with_busybox, tmp_path):
    (tmp_path / "ctx.tar").write_bytes(_tar({"a.txt": b"a\n"}))
    r = bale("bud", "ctx.tar", root=store_with_busybox, check=False, cwd=tmp_path)
    assert one_line(r, 2) == "bale: build context ctx.tar: no Dockerfile in the archive"


def test_stop_signal_flag_is_checked(bale, store_with_busybox):
    ctr = bale("from", "-q", "busybox", root=store_with_busybox).stdout.strip()
    r = bale("config", "--stop-signal", "bogus", ctr, root=store_with_busybox, check=False)
    assert one_line(r, 2) == "bale: --stop-signal: invalid signal: bogus"
    for ok in ("RTMIN+3", "term", "15"):  # what ParseSignal accepts
        bale("config", "--stop-signal", ok, ctr, root=store_with_busybox)
    bale("commit", "-q", ctr, "stopped", root=store_with_busybox)
    cfg = json.loads(bale("inspect", "--type", "image", "stopped", root=store_with_busybox).stdout)
    assert _find(cfg, "StopSignal") == "15"


def _find(doc: object, key: str) -> object:
    """The first value of ``key`` anywhere in a JSON document."""
    if isinstance(doc, dict):
        if key in doc:
            return doc[key]
        doc = list(doc.values())
    if isinstance(doc, list):
        for item in doc:
            found = _find(item, key)
            if found is not None:
                return found
    return None


def test_failed_git_clone_is_one_line_not_a_list(bale, tmp_path):
    url = f"file://{tmp_path}/missing.git"
    r = bale("bud", url, check=False)
    line = one_line(r, 1)
    assert line.startswith(f"bale: build context {url}: git clone failed: ") and "['" not in line \
        and "missing.git" in line.split("git clone failed: ")[1]


def test_copy_of_a_socket_names_it(bale, store_with_busybox, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY sock /x\n")
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(ctx / "sock"))
    try:
        r = bale("bud", str(ctx), root=store_with_busybox, check=False)
    finally:
        s.close()
    assert one_line(r, 1) == "bale: Dockerfile:2: COPY: copy source 'sock': sock is a socket: only files, " \
        "directories and symbolic links can be copied"


@pytest.mark.parametrize("tag,cause", [("BAD NAME!", "invalid image name 'BAD NAME!'"),
                                       ("oci:", "invalid image location 'oci:': no path")])
def test_invalid_tag_is_refused_before_any_step(bale, store_with_busybox, tmp_path, tag, cause):
    """Docker answers "invalid reference format" before building; bale ran every step first."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN echo ran-a-step\n")
    r = bale("bud", "-t", tag, str(ctx), root=store_with_busybox, check=False)
    assert one_line(r, 2).startswith("bale: " + cause)
    assert "STEP" not in r.stderr and "ran-a-step" not in r.stdout + r.stderr


def _bale_in_mount_ns(setup: str, args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    """bale in a private mount namespace after the shell lines ``setup`` (needs root: CI runs as root)."""
    if os.geteuid() != 0:
        pytest.fail("read-only and full-disk stores are made with mounts: run the tests as root (as CI does)")
    env = dict(os.environ, PYTHONPATH=str(REPO), BALE_RETRY_BASE_DELAY="0.05")
    cmd = " ".join(["exec", sys.executable, "-m", "builder.cli.main", *args])
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-ec", f"{setup}\n{cmd}"],
                          capture_output=True, text=True, env=env, timeout=timeout)


@pytest.mark.parametrize("verb", ["from", "pull"])
def test_read_only_store_says_so(store_with_busybox, busybox_layout, verb):
    (store_with_busybox / "probe.json").unlink(missing_ok=True)
    ro = f"mount --bind {store_with_busybox} {store_with_busybox}; mount -o remount,bind,ro {store_with_busybox}"
    args = ["--root", str(store_with_busybox)] + (["from", "busybox"] if verb == "from" else
                                                  ["pull", f"oci:{busybox_layout}:latest"])
    r = _bale_in_mount_ns(ro, args)
    line = one_line(r, 1)
    assert str(store_with_busybox) in line and "read-only file system" in line.lower(), line
    assert "chroot" not in line and len(r.stderr.strip().splitlines()) == 1


def test_full_disk_is_one_line(tmp_path, busybox_layout):
    small = tmp_path / "small"
    small.mkdir()
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY big /big\n")
    (ctx / "big").write_bytes(os.urandom(8 << 20))
    root = small / "root"
    setup = (f"mount -t tmpfs -o size=6m tmpfs {small}\n"
             f"{sys.executable} -m builder.cli.main --root {root} pull -q oci:{busybox_layout}:latest >/dev/null\n"
             f"{sys.executable} -m builder.cli.main --root {root} tag "
             f"$({sys.executable} -m builder.cli.main --root {root} images -q | head -1) busybox")
    r = _bale_in_mount_ns(setup, ["--root", str(root), "bud", str(ctx)])
    line = one_line(r, 1)
    assert line.startswith("bale: Dockerfile:2: COPY: ") and "No space left on device" in line, r.stderr


def test_ctrl_c_stops_a_running_run_promptly(store_with_busybox, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    marker = f"sleep {4000 + os.getpid() % 1000}"
    (ctx / "Dockerfile").write_text(f"FROM busybox\nRUN echo started; {marker}\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.Popen([sys.executable, "-m", "builder.cli.main", "--root", str(store_with_busybox), "bud",
                          "--no-cache", str(ctx)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until the RUN's command is running
        ps = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.split()
        if ps:
            break
        time.sleep(0.1)
    else:
        p.kill()
        pytest.fail("the RUN never started")
    t0 = time.monotonic()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    elapsed = time.monotonic() - t0
    assert p.returncode == 130 and err.strip().splitlines()[-1] == "bale: interrupted", err
    assert "Traceback" not in err
    assert elapsed < 5, elapsed
    time.sleep(0.2)
    assert subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode == 1  # the RUN is gone
