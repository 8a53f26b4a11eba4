"""apt-get in a Debian base (tests/fixtures/debian.py: apt and dpkg from this host, offline)
installs a local package (no dependencies, so apt needs no mirror) whose postinst chowns a file to
_apt:nogroup and makes a directory of its own owner, as the unprivileged user: with the default
(rootless, user namespace) isolation, with ``--isolation ptrace`` (proot under Landlock, owners
recorded by bale), and in a restricted pod made with seccomp_wrap.py (bale picks ptrace itself).
Read with tarfile (tests/helpers/oci_reader.py): the package's files are root's, the postinst's
owners are kept, dpkg's status lists the package as installed, and every build has the digest of
root's build on the host with the same SOURCE_DATE_EPOCH (issue 9: "apt-get install in a Debian
base must work and leave root-owned files"). The base ships no apt/dpkg lock files (debian.py
says why: an unchanged copy-up of one lands in the rootless layer only)."""
from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.fixtures.debian import make_deb
from tests.helpers.oci_reader import flatten, read_layout
from tests.helpers.pod_bale import bale_in_pod
from tests.helpers.root_build import layout_digest, root_build

pytestmark = [pytest.mark.slow]
EPOCH = "1700000000"
POSTINST = """#!/bin/sh
set -e
chown _apt:nogroup /usr/share/hello-bale/owned-by-apt
mkdir -p /var/lib/hello-bale
chown 42:65534 /var/lib/hello-bale
chmod 0750 /var/lib/hello-bale
"""
DOCKERFILE = """FROM debian
COPY hello-bale.deb /tmp/
RUN apt-get install -y /tmp/hello-bale.deb && dpkg-query -W -f '${Status}\\n' hello-bale \\
    && rm -rf /tmp/hello-bale.deb /var/log/apt /var/log/dpkg.log /var/cache/apt/*.bin /var/cache/ldconfig
"""


@pytest.fixture
def debian_build(unprivileged_user, user_tmp, debian_layout, tmp_path_factory):
    """Build DOCKERFILE as the unprivileged user with ``--isolation ISOLATION`` (None: the default);
    returns (the OCI layout written, bale's stdout)."""
    u = unprivileged_user
    ctx = user_tmp / "ctx"
    make_deb(ctx / "hello-bale.deb", tmp_path_factory.mktemp("deb"), postinst=POSTINST)
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    lay = user_tmp / "debian-layout"
    shutil.copytree(debian_layout, lay)
    subprocess.run(["chown", "-R", f"{u.uid}:{u.gid}", str(ctx), str(lay)], check=True)
    store = user_tmp / "store"
    image = u.bale("pull", "-q", f"oci:{lay}:latest", root=store).stdout.strip()
    u.bale("tag", image, "debian", root=store)

    def build(isolation: str | None, name: str) -> tuple[Path, str]:
        """``isolation`` "restricted-pod": no --isolation, under seccomp_wrap.py's restricted mode."""
        args = ["--isolation", isolation] if isolation and isolation != "restricted-pod" else []
        argv = ["bud", *args, "-t", f"oci:{user_tmp}/{name}:latest", str(ctx)]
        if isolation == "restricted-pod":
            (store / "probe.json").unlink(missing_ok=True)  # probed again under the filter
            r = bale_in_pod("restricted", u, store, *argv, epoch=EPOCH)
            assert "using ptrace isolation (proot under Landlock)" in r.stderr, r.stderr
        else:
            r = u.bale(*argv, root=store, env={"SOURCE_DATE_EPOCH": EPOCH}, check=False, timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        return user_tmp / name, r.stdout
    return build


def _root_build(base: Path, debian_layout: Path, tmp_path_factory) -> Path:
    """DOCKERFILE built by root on the host (who really chowns; the reference): its OCI layout."""
    ctx = base / "ctx"
    make_deb(ctx / "hello-bale.deb", tmp_path_factory.mktemp("deb"), postinst=POSTINST)
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    layout, stdout = root_build(base, debian_layout, "debian", ctx, EPOCH)
    _check(layout, stdout)
    return layout


def _check(layout: Path, stdout: str) -> None:
    assert "Setting up hello-bale (1.0) ..." in stdout, stdout
    assert "install ok installed" in stdout.splitlines(), stdout
    manifest, _, layers = read_layout(layout)
    assert len(manifest["layers"]) == 3
    fs = flatten(layers)
    owner = {p: (e.info.uid, e.info.gid) for p, e in fs.items()}
    for p in ("/usr/share/hello-bale", "/usr/share/hello-bale/README", "/usr/share/hello-bale/run.sh",
              "/var/lib/dpkg/info/hello-bale.list", "/var/lib/dpkg/info/hello-bale.postinst",
              "/var/lib/dpkg/status", "/var/lib/apt/extended_states"):
        assert owner[p] == (0, 0), (p, owner[p])
    assert fs["/usr/share/hello-bale/run.sh"].info.mode == 0o755
    assert fs["/usr/share/hello-bale/README"].content == b"hello from bale\n"
    assert owner["/usr/share/hello-bale/owned-by-apt"] == (42, 65534)
    assert (owner["/var/lib/hello-bale"], fs["/var/lib/hello-bale"].info.mode) == ((42, 65534), 0o750)
    assert owner["/var/cache/apt/archives/partial"] == (42, 0)  # the base's _apt dir, untouched
    status = fs["/var/lib/dpkg/status"].content.decode()
    stanza = next(s for s in status.split("\n\n") if s.startswith("Package: hello-bale\n"))
    assert "Status: install ok installed" in stanza.splitlines() and "Version: 1.0" in stanza.splitlines()
    # the layer the RUN made holds the package, not a copy of the base
    with tarfile.open(fileobj=io.BytesIO(layers[2])) as t:
        names = {m.name.strip("/").removeprefix("./") for m in t.getmembers()}
    assert "usr/share/hello-bale/README" in names and "usr/bin/apt-get" not in names
    assert not [n for n in names if n.startswith("var/log/apt/")]


def test_apt_get_installs_a_local_deb_rootless_and_under_ptrace_with_one_digest(debian_build, debian_layout,
                                                                               tmp_path, tmp_path_factory):
    """The same digest as root's build on the host, rootless (user namespace), with --isolation
    ptrace, and in a restricted pod (no user namespace, no mount, no_new_privs) where bale picks
    the ptrace isolation itself."""
    reference = layout_digest(_root_build(tmp_path / "root", debian_layout, tmp_path_factory))
    rootless, out = debian_build(None, "rootless")
    _check(rootless, out)
    assert layout_digest(rootless) == reference
    ptrace, out = debian_build("ptrace", "ptrace")
    _check(ptrace, out)
    assert layout_digest(ptrace) == reference
    pod, out = debian_build("restricted-pod", "pod")
    _check(pod, out)
    assert layout_digest(pod) == reference
