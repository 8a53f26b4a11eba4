"""containers-registries.conf(5) as containers/image reads it (pkg/sysregistriesv2,
pkg/shortnames): mirrors tried before the registry (falling back to it), pull-from-mirror
digest-only, prefix rewriting to a location, [aliases] and short-name-mode, blocked
registries refused before any request, drop-in directories. The registries are real
docker-registry servers (FlakyProxy in front of one to see and fail requests)."""
import hashlib
import json
import shutil
import subprocess

import pytest

from tests.fixtures.images import push_busybox

pytestmark = pytest.mark.skipif(not shutil.which("skopeo"), reason="skopeo not installed: it is the independent "
                                "writer for these tests")


def conf_env(tmp_path, text, dropins=None):
    (tmp_path / "registries.conf").write_text(text)
    d = tmp_path / "registries.conf.d"
    d.mkdir(exist_ok=True)
    for name, body in (dropins or {}).items():
        (d / name).write_text(body)
    return {"CONTAINERS_REGISTRIES_CONF": str(tmp_path / "registries.conf"), "BALE_REGISTRIES_CONF_DIR": str(d)}


def digest_of(registry, ref):
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/{ref}"],
                         check=True, capture_output=True).stdout
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def test_pull_through_mirror_keeps_the_primary_name(registry, busybox_layout, bale, tmp_path):
    push_busybox(registry, busybox_layout, "bale/mirrored:1")
    env = conf_env(tmp_path, f'[[registry]]\nlocation = "127.0.0.1:1"\ninsecure = true\n'
                             f'[[registry.mirror]]\nlocation = "{registry.host}"\ninsecure = true\n')
    bale("pull", "-q", "127.0.0.1:1/bale/mirrored:1", env=env)  # the registry itself is unreachable
    rec = json.loads(bale("images", "--format", "json").stdout)[0]
    assert rec["names"] == ["127.0.0.1:1/bale/mirrored:1"] and rec["digest"] == digest_of(registry, "bale/mirrored:1")


def test_failing_mirror_falls_back_to_the_registry(registry, flaky_proxy, busybox_layout, bale, tmp_path):
    push_busybox(registry, busybox_layout, "bale/fallback:1")
    flaky_proxy.add(method="*", path="/v2/bale/", times=100, status=404)
    env = conf_env(tmp_path, f'[[registry]]\nlocation = "{registry.host}"\ninsecure = true\n'
                             f'[[registry.mirror]]\nlocation = "{flaky_proxy.host}"\ninsecure = true\n')
    bale("pull", "-q", f"{registry.host}/bale/fallback:1", env=env)
    assert [e["status"] for e in flaky_proxy.log if "/manifests/" in e["path"]] == [404]  # tried first
    assert json.loads(bale("images", "--format", "json").stdout)[0]["names"] == [f"{registry.host}/bale/fallback:1"]


def test_digest_only_mirror_is_skipped_for_tags(registry, flaky_proxy, busybox_layout, bale, tmp_path):
    push_busybox(registry, busybox_layout, "bale/digestonly:1")
    env = conf_env(tmp_path, f'[[registry]]\nlocation = "{registry.host}"\ninsecure = true\n'
                             f'[[registry.mirror]]\nlocation = "{flaky_proxy.host}"\ninsecure = true\n'
                             'pull-from-mirror = "digest-only"\n')
    bale("pull", "-q", f"{registry.host}/bale/digestonly:1", env=env)
    assert flaky_proxy.log == []
    digest = digest_of(registry, "bale/digestonly:1")
    bale("pull", "-q", f"{registry.host}/bale/digestonly@{digest}", env=env)
    assert any(digest in e["path"] for e in flaky_proxy.log)  # by digest: through the mirror


def test_prefix_is_rewritten_to_the_location(registry, busybox_layout, bale, tmp_path):
    push_busybox(registry, busybox_layout, "bale/inner/img:3")
    env = conf_env(tmp_path, f'[[registry]]\nprefix = "rewrite.test/team"\nlocation = "{registry.host}/bale/inner"\n'
                             'insecure = true\n')
    bale("pull", "-q", "rewrite.test/team/img:3", env=env)
    rec = json.loads(bale("images", "--format", "json").stdout)[0]
    assert rec["names"] == ["rewrite.test/team/img:3"] and rec["digest"] == digest_of(registry, "bale/inner/img:3")


def test_aliases_and_short_name_mode(registry, busybox_layout, bale, tmp_path):
    push_busybox(registry, busybox_layout, "bale/aliased:2")
    base = (f'unqualified-search-registries = ["127.0.0.1:1", "{registry.host}"]\n'
            f'[[registry]]\nlocation = "{registry.host}"\ninsecure = true\n')
    env = conf_env(tmp_path, 'short-name-mode = "enforcing"\n' + base,
                   {"50-alias.conf": f'[aliases]\n"myalias" = "{registry.host}/bale/aliased"\n'})
    iid = bale("pull", "-q", "myalias:2", env=env).stdout.strip()  # an alias is never ambiguous
    assert json.loads(bale("images", "--format", "json").stdout)[0]["names"] == [f"{registry.host}/bale/aliased:2"]
    assert bale("inspect", "--format", "{{.Id}}", "myalias:2", env=env).stdout.strip().endswith(iid)  # local lookup
    r = bale("pull", "bale/aliased:2", env=env, check=False)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"bale: short name 'bale/aliased:2' is ambiguous (127.0.0.1:1/bale/aliased:2, {registry.host}/bale/aliased:2): "
        f"short-name-mode is enforcing in {tmp_path / 'registries.conf'} and bale does not prompt; use a fully "
        "qualified name or an [aliases] entry"]
    env = conf_env(tmp_path, 'short-name-mode = "permissive"\n' + base)
    bale("rmi", "-a")
    bale("pull", "-q", "bale/aliased:2", env=env)  # permissive: every search registry in order


def test_blocked_registry_is_refused_before_any_request(flaky_proxy, busybox_layout, bale, tmp_path):
    env = conf_env(tmp_path, f'[[registry]]\nlocation = "{flaky_proxy.host}"\nblocked = true\n')
    iid = bale("pull", "-q", f"oci:{busybox_layout}:latest").stdout.strip()
    conf = tmp_path / "registries.conf"
    for args in (["pull", f"{flaky_proxy.host}/bale/x:1"], ["push", iid, f"docker://{flaky_proxy.host}/bale/x:1"],
                 ["list-tags", f"docker://{flaky_proxy.host}/bale/x"]):
        r = bale(*args, env=env, check=False)
        assert r.returncode == 1, r.stderr
        line = r.stderr.strip().splitlines()
        assert len(line) == 1 and f"registry {flaky_proxy.host} is blocked in {conf}" in line[0], r.stderr
    assert flaky_proxy.log == []


def test_bad_registries_conf_is_one_line(bale, tmp_path):
    env = conf_env(tmp_path, 'short-name-mode = "sometimes"\n')
    r = bale("pull", "busybox", env=env, check=False)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"bale: {tmp_path / 'registries.conf'}: invalid short-name mode 'sometimes' (enforcing, permissive or disabled)"]
