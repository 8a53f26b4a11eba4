"""bale pull / push / inspect / login against the real registries, checked by skopeo."""
import hashlib
import json
import shutil
import subprocess

import pytest

from tests.fixtures.images import push_busybox

pytestmark = pytest.mark.skipif(not shutil.which("skopeo"), reason="skopeo not installed: it is the independent "
                                "writer and reader for these tests")


def skopeo_args(reg, prefix="src"):
    if reg.scheme == "http":
        args = [f"--{prefix}-tls-verify=false"] if prefix else ["--tls-verify=false"]
    else:
        args = [f"--{prefix}-cert-dir" if prefix else "--cert-dir", str(reg.cert_dir)]
    if reg.username:
        args += [f"--{prefix}-creds" if prefix else "--creds", f"{reg.username}:{reg.password}"]
    return args


def skopeo_digest(reg, ref):
    out = subprocess.run(["skopeo", "inspect", "--raw", *skopeo_args(reg, None), f"docker://{ref}"],
                         check=True, capture_output=True).stdout
    return "sha256:" + hashlib.sha256(out).hexdigest()


def test_pull_push_same_digest_everywhere(any_registry, busybox_layout, bale):
    reg = any_registry
    src = push_busybox(reg, busybox_layout, "bale/busybox:1")
    flags = reg.tls_args() + reg.cred_args()
    image_id = bale("pull", "-q", *flags, src).stdout.strip()
    rec = json.loads(bale("images", "--format", "json").stdout)[0]
    assert rec["id"] == image_id and rec["names"] == [src]
    bale("push", *flags, src, f"docker://{reg.host}/bale/copy:2")
    d_src, d_copy = skopeo_digest(reg, src), skopeo_digest(reg, f"{reg.host}/bale/copy:2")
    assert d_src == d_copy == rec["digest"]
    remote = json.loads(bale("inspect", *flags, f"docker://{reg.host}/bale/copy:2").stdout)
    assert remote["Digest"] == d_src and remote["Id"] == image_id


def test_push_docker_format_and_zstd(registry, busybox_layout, bale):
    bale("pull", "-q", f"oci:{busybox_layout}:latest")
    iid = bale("images", "-q", "--no-trunc").stdout.split()[0]
    bale("push", "--tls-verify=false", "--format", "docker", iid, f"docker://{registry.host}/bale/docker:1")
    man = json.loads(bale("inspect", "--type", "manifest", "--tls-verify=false",
                          f"docker://{registry.host}/bale/docker:1").stdout)
    assert man["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    out = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{registry.host}/bale/docker:1"],
                         check=True, capture_output=True, text=True).stdout
    assert json.loads(out)["Layers"]


def test_short_names_use_registries_conf(registry, busybox_layout, bale):
    push_busybox(registry, busybox_layout, "library/shorty:latest")
    image_id = bale("pull", "-q", "library/shorty", env=registry.env).stdout.strip()
    assert json.loads(bale("images", "--format", "json").stdout)[0]["names"] == \
        [f"{registry.host}/library/shorty:latest"] and image_id


def test_login_logout(registry_htpasswd, tmp_path, bale):
    reg = registry_htpasswd
    authfile = tmp_path / "auth.json"
    r = bale("login", "--cert-dir", str(reg.cert_dir), "--authfile", str(authfile), "-u", reg.username,
             "-p", "wrong", reg.host, check=False)
    assert r.returncode == 1 and r.stderr.strip() == f"bale: login to {reg.host}: wrong username or password"
    assert not authfile.exists()
    bale("login", "--cert-dir", str(reg.cert_dir), "--authfile", str(authfile), "-u", reg.username,
         "--password-stdin", reg.host, input=reg.password + "\n")
    assert oct(authfile.stat().st_mode & 0o777) == "0o600"
    assert reg.host in json.loads(authfile.read_text())["auths"]
    # the stored credentials are used by pull
    r = bale("pull", "-q", "--cert-dir", str(reg.cert_dir), "--authfile", str(authfile),
             f"{reg.host}/bale/none:1", check=False)
    assert "not found" in r.stderr  # authenticated: the registry says the image is absent, not 401
    assert bale("login", "--get-login", "--authfile", str(authfile), reg.host).stdout.strip() == reg.username
    bale("logout", "--authfile", str(authfile), reg.host)
    assert json.loads(authfile.read_text())["auths"] == {}


def test_login_token_registry(registry_token, tmp_path, bale):
    reg = registry_token
    authfile = tmp_path / "auth.json"
    bale("login", "--cert-dir", str(reg.cert_dir), "--authfile", str(authfile), "-u", reg.username,
         "-p", reg.password, reg.host)
    r = bale("login", "--cert-dir", str(reg.cert_dir), "--authfile", str(tmp_path / "x.json"), "-u", "bale",
             "-p", "nope", reg.host, check=False)
    assert r.returncode == 1 and "wrong username or password" in r.stderr


def test_registry_errors_leave_store_clean(registry_htpasswd, registry, bale):
    reg = registry_htpasswd
    cases = [
        (["--cert-dir", str(reg.cert_dir), "--creds", "bale:wrong", f"{reg.host}/bale/busybox:1"],
         "wrong username or password"),
        (["--cert-dir", str(reg.cert_dir), f"{reg.host}/bale/busybox:1"], "authentication required"),
        (["--tls-verify=false", f"{registry.host}/bale/absent:1"], "not found"),
        (["--tls-verify=false", "127.0.0.1:1/bale/x:1"], "cannot reach 127.0.0.1:1"),
        ([f"{reg.host}/bale/busybox:1"], "certificate verify failed"),
    ]
    for args, cause in cases:
        r = bale("pull", *args, check=False, env={"REGISTRY_AUTH_FILE": "/nonexistent/auth.json"})
        assert r.returncode == 1, r.stderr
        assert cause in r.stderr and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert json.loads(bale("images", "--format", "json").stdout) == []


def test_server_error_is_named(registry, flaky_proxy, bale):
    flaky_proxy.add(method="GET", path="/manifests/", times=100, status=500)
    r = bale("pull", "--tls-verify=false", f"{flaky_proxy.host}/bale/x:1", check=False)
    assert r.returncode == 1 and "answered 500" in r.stderr and flaky_proxy.host in r.stderr


def test_push_mounts_blobs_from_the_repository_they_came_from(registry, busybox_layout, flaky_proxy, bale):
    push_busybox(registry, busybox_layout, "bale/origin:1")
    via = flaky_proxy.host  # the same registry, seen through the logging proxy
    bale("pull", "-q", "--tls-verify=false", f"{via}/bale/origin:1")
    bale("push", "--tls-verify=false", f"{via}/bale/origin:1", f"docker://{via}/bale/elsewhere:1")
    mounts = [e for e in flaky_proxy.log if e["method"] == "POST" and "mount=" in e["path"]]
    uploads = [e for e in flaky_proxy.log if e["method"] in ("PUT", "PATCH") and "/blobs/uploads/" in e["path"]]
    assert len(mounts) == 2 and all(e["status"] == 201 for e in mounts)  # the layer and the config
    assert uploads == []
    assert skopeo_digest(registry, f"{registry.host}/bale/elsewhere:1") == \
        skopeo_digest(registry, f"{registry.host}/bale/origin:1")
