"""Credential lookup order and docker-credential helpers."""
import base64
import json
import os
import stat

import pytest

from builder.image.registry import auth


def _auths(path, host, user, pw):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"auths": {host: {"auth": base64.b64encode(f"{user}:{pw}".encode()).decode()}}}))


@pytest.fixture
def home(tmp_path, monkeypatch):
    for var in ("REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "DOCKER_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_lookup_order(home, monkeypatch):
    _auths(home / ".docker" / "config.json", "reg.io", "docker", "d")
    assert auth.lookup("reg.io", "x/y").username == "docker"
    _auths(home / ".config" / "containers" / "auth.json", "reg.io", "podman", "p")
    assert auth.lookup("reg.io", "x/y").username == "podman"
    run = home / "run"
    _auths(run / "containers" / "auth.json", "reg.io", "runtime", "r")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    assert auth.lookup("reg.io", "x/y").username == "runtime"
    _auths(home / "explicit.json", "reg.io", "explicit", "e")
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(home / "explicit.json"))
    assert auth.lookup("reg.io", "x/y").username == "explicit"
    assert auth.lookup("reg.io", "x/y", creds="cli:pw") == auth.Credentials("cli", "pw")


def test_repository_prefix_and_docker_hub_keys(home):
    p = home / ".docker" / "config.json"
    p.parent.mkdir(parents=True)
    p.write_text(json.dumps({"auths": {
        "reg.io/team": {"auth": base64.b64encode(b"team:t").decode()},
        "reg.io": {"auth": base64.b64encode(b"all:a").decode()},
        "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:h").decode()}}}))
    assert auth.lookup("reg.io", "team/app").username == "team"
    assert auth.lookup("reg.io", "other/app").username == "all"
    assert auth.lookup("docker.io", "library/busybox").username == "hub"
    assert auth.lookup("nowhere.io", "x") is None


def _helper(bin_dir, name, store):
    script = bin_dir / f"docker-credential-{name}"
    script.write_text(f"""#!/bin/sh
case "$1" in
get) read server; if [ -f "{store}/$server" ]; then cat "{store}/$server"; else echo "credentials not found in native keychain"; exit 1; fi ;;
store) cat > "{store}/tmp.json"; server=$(sed 's/.*"ServerURL": *"\\([^"]*\\)".*/\\1/' "{store}/tmp.json");
       sed 's/"ServerURL": *"[^"]*", *//' "{store}/tmp.json" > "{store}/$server" ;;
erase) read server; rm -f "{store}/$server" ;;
esac
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_credential_helpers(home, monkeypatch):
    bin_dir, store = home / "bin", home / "store"
    bin_dir.mkdir()
    store.mkdir()
    _helper(bin_dir, "test", store)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    cfg = home / ".docker" / "config.json"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(json.dumps({"credHelpers": {"helper.io": "test"}, "credsStore": "test"}))
    (store / "helper.io").write_text(json.dumps({"Username": "hu", "Secret": "hs"}))
    assert auth.lookup("helper.io", "r") == auth.Credentials("hu", "hs")
    assert auth.lookup("other.io", "r") is None  # credsStore answers "not found"
    auth.save_login("other.io", auth.Credentials("ou", "os"), str(cfg))
    assert auth.lookup("other.io", "r") == auth.Credentials("ou", "os")
    assert auth.remove_login("other.io", str(cfg))
    assert auth.lookup("other.io", "r") is None


def test_login_file_is_private_and_atomic(home):
    path = auth.save_login("reg.io", auth.Credentials("u", "p"), str(home / "a" / "auth.json"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert auth.lookup("reg.io", None, authfile=str(path)) == auth.Credentials("u", "p")
    assert auth.remove_login(None, str(path)) and json.loads(path.read_text())["auths"] == {}


def test_challenge_parsing():
    scheme, params = auth.parse_challenge('Bearer realm="https://auth.io/token",service="reg",scope="repository:a:pull"')
    assert scheme == "bearer" and params == {"realm": "https://auth.io/token", "service": "reg",
                                             "scope": "repository:a:pull"}
    assert auth.parse_challenge('Basic realm="x"') == ("basic", {"realm": "x"})
