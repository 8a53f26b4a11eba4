"""`bale info` and `bale unshare` (as root and as the unprivileged user), and the
probe's choice of isolation and storage driver."""
from __future__ import annotations

import json
import os
import platform

import pytest

from builder.errors import UsageError
from builder.sandbox.probe import refusals, Capabilities, choose, probe
from tests.fixtures.images import run_bale
from tests.fixtures.users import make_traversable


def caps(**kw) -> Capabilities:
    base = dict(is_root=False, userns=True, userns_error=None, full_mapping=True, mounts=True, mounts_error=None,
                overlay=True, overlay_error=None, fuse_overlayfs=True, fresh_proc=True)
    base.update(kw)
    return Capabilities(**base)


def test_choose_defaults_and_fallbacks():
    assert choose(caps(), None, None) == ("rootless", "overlay", None)
    assert choose(caps(overlay=False, overlay_error="x"), None, None)[:2] == ("rootless", "fuse-overlayfs")
    assert choose(caps(overlay=False, fuse_overlayfs=False), None, None)[:2] == ("rootless", "native")
    assert choose(caps(), "oci", "native") == ("oci", "native", None)
    root_no_ns = caps(is_root=True, userns=False, mounts=False, mounts_error="mount: Operation not permitted",
                      overlay=False)
    iso, drv, notice = choose(root_no_ns, None, None)
    assert (iso, drv) == ("chroot", "native")
    assert notice == ("mounts unavailable (mount: Operation not permitted): "
                      "using chroot isolation with the native driver")
    no_userns = caps(is_root=True, userns=False, userns_error="unshare: Operation not permitted", mounts=False)
    assert choose(no_userns, None, None)[2].startswith("mounts unavailable")
    unpriv_no_userns = caps(userns=False, userns_error="unshare: Operation not permitted", mounts=False)
    with pytest.raises(UsageError, match="chroot isolation|needs root"):
        choose(unpriv_no_userns, None, None)
    with pytest.raises(UsageError, match="rootless"):
        choose(unpriv_no_userns, "rootless", None)
    with pytest.raises(UsageError, match="native"):
        choose(caps(is_root=True), "chroot", "overlay")



def test_choose_the_strongest_isolation_for_any_user():
    """Issue 9: BUILDAH_ISOLATION=chroot as a non-root user picks what works and says so; a restricted
    pod is refused before anything runs; bale info's refusals name the call and the fallback."""
    iso, drv, notice = choose(caps(), "chroot", None)
    assert (iso, drv) == ("rootless", "overlay") and "strongest isolation that works here" in notice
    restricted = caps(userns=False, userns_error="unshare: Operation not permitted", mounts=False,
                      ptrace_error="proot is not installed")
    for asked in (None, "chroot", "ptrace"):
        with pytest.raises(UsageError, match=r"^(cannot build here as uid \d+: user namespaces are refused "
                                             r"\(unshare: Operation not permitted\), chroot isolation needs root, "
                                             r"and ptrace isolation is not available \(proot is not installed\)|"
                                             r"--isolation ptrace: not available here \(proot is not installed\))"):
            choose(restricted, asked, None)
    assert any(l == "ptrace isolation (proot is not installed)" for l in refusals(restricted))
    # the restricted pod where proot and Landlock work: the ptrace isolation, said once, native driver
    restricted_ptrace = caps(userns=False, userns_error="unshare: Operation not permitted", mounts=False,
                             ptrace=True)
    iso, drv, notice = choose(restricted_ptrace, None, None)
    assert (iso, drv) == ("ptrace", "native") and "using ptrace isolation" in notice
    iso, drv, notice = choose(restricted_ptrace, "chroot", None)
    assert (iso, drv) == ("ptrace", "native") and "strongest isolation that works here is used: ptrace" in notice
    assert choose(restricted_ptrace, "ptrace", None) == ("ptrace", "native", None)
    with pytest.raises(UsageError, match="ptrace isolation uses the native driver"):
        choose(restricted_ptrace, "ptrace", "overlay")
    assert choose(caps(ptrace=True), "ptrace", None) == ("ptrace", "native", None)  # forced on a host
    assert any(l.endswith("-> ptrace isolation") for l in refusals(restricted_ptrace))
    pod_root = caps(is_root=True, userns=True, root_userns=True, root_error="unshare: Operation not permitted",
                    hostname_error="Operation not permitted", mapping_error=None, fresh_proc=False)
    assert choose(pod_root, None, None)[:2] == ("rootless", "overlay")
    lines = refusals(pod_root)
    assert lines[0].startswith("mount namespace as root (unshare(CLONE_NEWNS)/mount: unshare: Operation not "
                               "permitted) -> a user namespace")
    assert any(l.startswith("fresh /proc") and "minimal read-only /proc" in l for l in lines)
    assert any(l.startswith("hostname (sethostname: Operation not permitted) -> the outer hostname") for l in lines)
    nnp = caps(mapping_error="newuidmap failed: newuidmap: write to uid_map failed: Operation not permitted",
               full_mapping=False)
    assert "id mapping (newuidmap failed" in refusals(nnp)[0] and "single-id mapping" in refusals(nnp)[0]


@pytest.mark.skipif(os.geteuid() != 0, reason="the rootful probe result is asserted; tests run as root in CI")
def test_probe_as_root_is_cached_per_kernel_and_uid(tmp_path):
    c = probe(tmp_path)
    assert c.is_root and c.mounts and c.full_mapping
    cache = json.loads((tmp_path / "probe.json").read_text())
    assert cache["key"]["kernel"] == platform.release() and cache["key"]["uid"] == 0
    cache["caps"]["overlay_error"] = "from the cache"
    (tmp_path / "probe.json").write_text(json.dumps(cache))
    assert probe(tmp_path).overlay_error == "from the cache"
    cache["key"]["kernel"] = "0.0-other"
    (tmp_path / "probe.json").write_text(json.dumps(cache))
    assert probe(tmp_path).overlay_error != "from the cache"


def test_info_json_fields(tmp_path):
    info = json.loads(run_bale(["info", "--format", "json"], root=tmp_path / "store").stdout)
    assert info["host"]["kernel"] == platform.release() and info["host"]["uid"] == os.getuid()
    assert info["store"] == str(tmp_path / "store")
    assert info["isolation"] in ("rootless", "chroot", "oci") and info["storage_driver"]
    assert {"userns", "mounts", "overlay", "fuse_overlayfs", "fresh_proc", "is_root"} <= set(info["probe"])
    text = run_bale(["info"], root=tmp_path / "store").stdout
    for field in ("kernel:", "uid:", "id mapping:", "isolation:", "storage driver:", "store:", "fresh /proc:"):
        assert field in text


def test_info_and_unshare_as_unprivileged_user(unprivileged_user, user_tmp):
    u = unprivileged_user
    root = user_tmp / "store"
    info = json.loads(u.bale("info", "--format", "json", root=root).stdout)
    assert info["host"]["uid"] == u.uid and info["isolation"] == "rootless"
    assert info["idmap"]["uids"][0] == [0, u.uid, 1] and info["idmap"]["uids"][1][2] == 65536
    assert info["probe"]["userns"] and info["probe"]["full_mapping"]
    r = u.bale("unshare", "--", "sh", "-c", "id -u; echo $BALE_UNSHARED; wc -l < /proc/self/uid_map; exit 7",
               root=root, check=False)
    assert r.returncode == 7, r.stderr
    assert [l.strip() for l in r.stdout.splitlines()] == ["0", "1", "2"]


def test_unshare_single_mapping_warns(unmapped_user, tmp_path):
    make_traversable(tmp_path)
    root = unmapped_user.tmpdir(tmp_path) / "store"
    r = unmapped_user.bale("unshare", "--", "cat", "/proc/self/uid_map", root=root)
    assert r.stdout.split() == ["0", str(unmapped_user.uid), "1"]
    assert f"no subuid range for {unmapped_user.name}: single-id mapping" in r.stderr
