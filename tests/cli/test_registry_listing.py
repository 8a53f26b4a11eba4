"""bale list-tags / bale catalog against the four real registry set-ups, compared with
skopeo list-tags (the independent reader); pages followed through Link headers."""
import json
import shutil
import subprocess

import pytest

from tests.cli.test_pull_push import skopeo_args
from tests.fixtures.images import push_busybox

pytestmark = pytest.mark.skipif(not shutil.which("skopeo"), reason="skopeo not installed: it is the independent "
                                "reader for these tests")


def test_list_tags_and_catalog_with_pull_auth(any_registry, busybox_layout, bale):
    reg = any_registry
    for ref in ("bale/listed:1", "bale/listed:2", "bale/listed:latest", "bale/other:x"):
        push_busybox(reg, busybox_layout, ref)
    flags = reg.tls_args() + reg.cred_args()
    out = json.loads(bale("list-tags", *flags, f"docker://{reg.host}/bale/listed").stdout)
    want = json.loads(subprocess.run(["skopeo", "list-tags", *skopeo_args(reg, None),
                                      f"docker://{reg.host}/bale/listed"], check=True, capture_output=True).stdout)
    assert out == want and sorted(out["Tags"]) == ["1", "2", "latest"]
    repos = bale("catalog", *flags, reg.host).stdout.split()
    assert {"bale/listed", "bale/other"} <= set(repos)


def test_pages_are_followed(registry, flaky_proxy, busybox_layout, bale):
    for i in range(5):
        push_busybox(registry, busybox_layout, f"bale/paged:t{i}")
    push_busybox(registry, busybox_layout, "bale/paged2:x")
    push_busybox(registry, busybox_layout, "bale/paged3:x")
    tags = bale("list-tags", "--tls-verify=false", "--page-size", "2", "--format", "lines",
                f"docker://{flaky_proxy.host}/bale/paged").stdout.split()
    assert sorted(tags) == [f"t{i}" for i in range(5)]
    # distribution 2.8 answers tags/list whole (it pages only the catalog): one request here
    repos = json.loads(bale("catalog", "--tls-verify=false", "--page-size", "1", "--format", "json",
                            flaky_proxy.host).stdout)
    assert {"bale/paged", "bale/paged2", "bale/paged3"} <= set(repos) and len(repos) == len(set(repos))
    assert len([e for e in flaky_proxy.log if "/_catalog" in e["path"]]) >= len(repos)


def test_listing_errors_are_one_line(registry, registry_htpasswd, bale):
    r = bale("list-tags", "--tls-verify=false", f"docker://{registry.host}/bale/none", check=False)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "not found" in r.stderr
    r = bale("list-tags", f"docker://{registry.host}/bale/x:1", check=False)
    assert r.returncode == 2 and "without a tag or digest" in r.stderr
    r = bale("catalog", "--cert-dir", str(registry_htpasswd.cert_dir), registry_htpasswd.host, check=False)
    assert r.returncode == 1 and "authentication required" in r.stderr and r.stderr.count("\n") == 1
