"""The Dockerfile corpus (testdata/bud): each case is built by `bale bud` as a real
unprivileged user; the result is read back with the stdlib (tests/helpers/oci_reader)
and checked against the case's expect.json."""
import hashlib
import http.server
import json
import os
import platform
import shutil
import threading
from pathlib import Path

import pytest

from tests.helpers.oci_reader import flatten, read_layout

CORPUS = Path(__file__).resolve().parents[2] / "testdata" / "bud"
CASES = sorted(p.name for p in CORPUS.iterdir() if (p / "expect.json").exists())
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
REMOTE = b"remote file\n"

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="session")
def http_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("http")
    (d / "remote.txt").write_bytes(REMOTE)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(d), **kw)

        def log_message(self, *a):
            pass
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


@pytest.fixture(scope="session")
def corpus_env(unprivileged_user, tmp_path_factory, busybox_layout):
    from tests.fixtures.users import _make_traversable
    u = unprivileged_user
    base = tmp_path_factory.mktemp("corpus")
    _make_traversable(base)
    work = u.tmpdir(base)
    return u, work, u.busybox_store(work, busybox_layout)


def _chown_tree(path, u):
    for p in [path, *path.rglob("*")]:
        os.lchown(p, u.uid, u.gid)


def build_case(name, env, http_url, built=None):
    u, work, root = env
    built = built if built is not None else set()
    expect = json.loads((CORPUS / name / "expect.json").read_text())
    for need in expect.get("needs", []):
        dep = next(c for c in CASES if c.endswith("-" + need))
        if dep not in built:
            build_case(dep, env, http_url, built)
    ctx = work / name
    shutil.rmtree(ctx, ignore_errors=True)
    shutil.copytree(CORPUS / name, ctx, symlinks=True)
    dockerfile = ctx / expect.get("dockerfile", "Dockerfile")
    text = dockerfile.read_text().replace("{SHA_REMOTE}", hashlib.sha256(REMOTE).hexdigest())
    for need in expect.get("needs", []):
        text = text.replace("{PREV:%s}" % need, f"corpus-{need}")
    dockerfile.write_text(text)
    args = [a.replace("{CTX}", str(ctx)) for a in expect.get("args", [])]
    if expect.get("http"):
        args += ["--build-arg", f"BASE_URL={http_url}"]
    for sid, value in expect.get("secrets", {}).items():
        (ctx / f".secret-{sid}").write_text(value)
        args += ["--secret", f"id={sid},src={ctx}/.secret-{sid}"]
    _chown_tree(ctx, u)
    short = name.split("-", 1)[1]
    r = u.bale("bud", "-f", str(dockerfile), "-t", f"corpus-{short}", *args, str(ctx), root=root, check=False,
               env=expect.get("env"))
    built.add(name)
    return expect, r, short


@pytest.mark.parametrize("name", CASES)
def test_corpus(name, corpus_env, http_files):
    u, work, root = corpus_env
    expect, r, short = build_case(name, corpus_env, http_files)
    if "error" in expect:
        err = expect["error"]
        assert r.returncode == err["exit"], r.stderr
        assert err["contains"] in r.stderr, r.stderr
        assert r.stderr.strip().count("\n") == 0 or "Traceback" not in r.stderr
        assert "Traceback" not in r.stderr
        return
    assert r.returncode == 0, r.stderr
    out = work / f"{name}-out"
    shutil.rmtree(out, ignore_errors=True)
    u.bale("push", f"corpus-{short}", f"oci:{out}:latest", root=root)
    manifest, config, layers = read_layout(out)
    cfg = config.get("config", {})
    for key, want in expect.get("config", {}).items():
        got = cfg.get(key)
        if key == "Env":
            assert set(want) <= set(got or []), (got, want)
        elif isinstance(want, dict) and key not in ("Healthcheck",):
            assert {k: got.get(k) for k in want} == want, got
        else:
            assert got == want, (key, got)
    for key in expect.get("config_absent", []):
        assert not cfg.get(key), (key, cfg.get(key))
    for var in expect.get("config_absent_env", []):
        assert not any(e.startswith(var + "=") for e in cfg.get("Env", [])), cfg.get("Env")
    if "author" in expect:
        assert config.get("author") == expect["author"]
    if "annotations" in expect:
        assert expect["annotations"].items() <= manifest.get("annotations", {}).items()
    if "layers" in expect:
        assert len(layers) == expect["layers"]
    assert len(config["history"]) >= len(layers)
    fs = flatten(layers)
    for path, want in expect.get("files", {}).items():
        assert path in fs, f"{path} missing; have {sorted(fs)[:40]}"
        e = fs[path]
        if "content" in want:
            assert e.content.decode() == want["content"].replace("{ARCH}", ARCH)
        if "content_contains" in want:
            assert want["content_contains"] in e.content.decode()
        if "mode" in want:
            assert e.info.mode & 0o7777 == int(want["mode"], 8), oct(e.info.mode)
        if "uid" in want:
            assert e.info.uid == want["uid"]
        if "gid" in want:
            assert e.info.gid == want["gid"]
        if "type" in want:
            kind = {"file": e.info.isreg() or e.info.islnk(), "dir": e.info.isdir(), "symlink": e.info.issym()}
            assert kind[want["type"]], e.info.type
        if "target" in want:
            assert e.info.linkname == want["target"]
    for path in expect.get("absent", []):
        assert path not in fs, path
    for path in fs:
        assert not path.startswith(("/proc/", "/sys/", "/dev/")), path
    if "no_secret_in_image" in expect:
        secret = expect["no_secret_in_image"].encode()
        assert all(secret not in l for l in layers)
        assert secret not in json.dumps(config).encode()
