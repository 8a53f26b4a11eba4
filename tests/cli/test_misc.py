"""Small CLI behaviours: --version speed path, prune, commit to a transport, mount in unshare."""
import json
import subprocess
import sys
import time

from tests.fixtures.images import run_bale


def test_version_is_quick_and_imports_nothing_heavy():
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "builder.cli.main", "--version"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("bale version")
    assert time.perf_counter() - t0 < 3
    for heavy in ("requests", "zstandard", "cryptography", "tqdm", "dockerfile_parse", "click", "typing"):
        assert f" {heavy}\n" not in out.stderr and f"| {heavy}" not in out.stderr, heavy


def test_usage_errors_exit_2(bale):
    r = bale("bud", "--output", "type=weird,dest=x", ".", check=False)
    assert r.returncode == 2 and "unknown type 'weird'" in r.stderr
    r = bale("pull", check=False)
    assert r.returncode == 2


def test_prune_removes_dangling_and_unused_blobs(bale, busybox_layout):
    iid = bale("pull", "-q", f"oci:{busybox_layout}:latest").stdout.strip()
    blobs = list((bale.root / "blobs" / "sha256").iterdir())
    assert json.loads(bale("images", "--format", "json").stdout)[0]["names"] == []
    assert iid in bale("prune").stdout
    assert json.loads(bale("images", "--format", "json").stdout) == []
    assert blobs and not list((bale.root / "blobs" / "sha256").iterdir())


def test_commit_to_a_transport_and_mount_in_unshare(bale, busybox_layout, tmp_path):
    bale("tag", bale("pull", "-q", f"oci:{busybox_layout}:latest").stdout.strip(), "busybox")
    ctr = bale("from", "busybox").stdout.strip()
    bale("run", ctr, "--", "sh", "-c", "echo hi > /hi")
    bale("commit", ctr, f"oci:{tmp_path}/out:v1")
    from tests.helpers.oci_reader import flatten, read_layout
    assert flatten(read_layout(tmp_path / "out", "v1")[2])["/hi"].content == b"hi\n"
    assert [r["names"] for r in json.loads(bale("images", "--format", "json").stdout)] == \
        [["localhost/busybox:latest"]]
    out = bale("unshare", "--", sys.executable, "-m", "builder.cli.main", "--root", str(bale.root), "mount", ctr,
               env={"PYTHONPATH": str(run_bale.__globals__["REPO"])}).stdout.strip()
    assert out.endswith("/merged") or out.endswith("/rootfs")


def test_from_scratch(bale, tmp_path):
    ctr = bale("from", "scratch").stdout.strip()
    assert ctr == "working-container"
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "hello").write_text("from scratch\n")
    bale("copy", "--contextdir", str(tmp_path / "ctx"), ctr, str(tmp_path / "ctx" / "hello"), "/hello")
    bale("config", "--entrypoint", '["/hello"]', ctr)
    bale("commit", ctr, "scratchy")
    bale("push", "scratchy", f"oci:{tmp_path}/s:1")
    from tests.helpers.oci_reader import flatten, read_layout
    manifest, config, layers = read_layout(tmp_path / "s", "1")
    assert list(flatten(layers)) == ["/hello"] and config["config"]["Entrypoint"] == ["/hello"]
