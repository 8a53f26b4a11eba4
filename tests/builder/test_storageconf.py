"""storage.conf defaults (issue 11 item 2), read as containers/storage reads them: the
file search order, STORAGE_DRIVER over the file's driver, the driver names mapped to bale's,
and graphroot giving bale's store GRAPHROOT/bale; the CLI then uses them."""
import json

import pytest

from builder.errors import UsageError
from builder.image import storageconf
from builder.image.store import default_root
from builder.workspace.workspace import Workspace


@pytest.fixture(autouse=True)
def _fresh(monkeypatch, tmp_path):
    storageconf._load.cache_clear()
    for var in ("CONTAINERS_STORAGE_CONF", "STORAGE_DRIVER", "BALE_ROOT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    yield
    storageconf._load.cache_clear()


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_env_file_sets_driver_graphroot_runroot(tmp_path, monkeypatch):
    f = write(tmp_path / "s.conf", '[storage]\ndriver = "vfs"\ngraphroot = "/srv/ci-cache"\nrunroot = "/run/x"\n')
    monkeypatch.setenv("CONTAINERS_STORAGE_CONF", str(f))
    conf = storageconf.storage_conf()
    assert (conf.driver, conf.graphroot, conf.runroot, conf.source) == ("native", "/srv/ci-cache", "/run/x", str(f))
    assert default_root() == storageconf.Path("/srv/ci-cache/bale")
    assert Workspace(tmp_path / "ws").driver == "native"
    assert Workspace(tmp_path / "ws", driver="overlay").driver == "overlay"  # the flag wins


def test_storage_driver_env_wins_and_fuse_overlayfs_is_named(tmp_path, monkeypatch):
    f = write(tmp_path / "s.conf", '[storage]\ndriver = "overlay"\n[storage.options.overlay]\n'
                                   'mount_program = "/usr/bin/fuse-overlayfs"\n')
    monkeypatch.setenv("CONTAINERS_STORAGE_CONF", str(f))
    assert storageconf.storage_conf().driver == "fuse-overlayfs"
    storageconf._load.cache_clear()
    monkeypatch.setenv("STORAGE_DRIVER", "vfs")
    assert storageconf.storage_conf().driver == "native"


def test_user_file_for_rootless_and_missing_env_file(tmp_path, monkeypatch):
    write(tmp_path / "cfg" / "containers" / "storage.conf", '[storage]\ndriver = "overlay"\ngraphroot = "/g"\n')
    monkeypatch.setattr(storageconf.os, "geteuid", lambda: 1000)
    conf = storageconf.storage_conf()
    assert (conf.driver, conf.graphroot) == ("overlay", "/g")
    storageconf._load.cache_clear()
    monkeypatch.setenv("CONTAINERS_STORAGE_CONF", str(tmp_path / "absent.conf"))
    with pytest.raises(UsageError, match="absent.conf: no such file"):
        storageconf.storage_conf()


def test_cli_uses_the_graphroot(tmp_path, busybox_layout):
    from tests.fixtures.images import run_bale
    f = write(tmp_path / "s.conf", f'[storage]\ndriver = "vfs"\ngraphroot = "{tmp_path / "graph"}"\n')
    env = {"CONTAINERS_STORAGE_CONF": str(f), "BALE_ROOT": ""}  # empty: not set
    iid = run_bale(["pull", "-q", f"oci:{busybox_layout}:latest"], env=env).stdout.strip()
    assert (tmp_path / "graph" / "bale" / "blobs" / "sha256" / iid).exists()
    out = json.loads(run_bale(["images", "--format", "json"], root=tmp_path / "graph" / "bale").stdout)
    assert out[0]["id"].endswith(iid)
