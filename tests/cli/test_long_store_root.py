"""A store whose root path is long (issue 12): overlay's fsconfig takes each path as a string of
under 256 bytes (PLATFORM.md 2.4: 254 bytes work, 257 give EINVAL), so a ``--root`` of 300
characters made every RUN fail with 'overlay mount failed: fsconfig upperdir: Invalid argument'
and the overlay probe fail. Long lowerdir, upperdir and workdir paths now go as /proc/self/fd/N
of O_PATH descriptors (the fsopen ``lowerdir+`` API, kernel 6.8+; 6.18 here)."""
from __future__ import annotations

import json

from tests.helpers.oci_reader import flatten, read_layout


def test_overlay_build_with_a_300_character_root_as_the_unprivileged_user(unprivileged_user, user_tmp,
                                                                         busybox_layout):
    u = unprivileged_user
    base = user_tmp / "/".join(["r" * 59] * 5)
    u.run(["mkdir", "-p", str(base)])
    root = u.busybox_store(base, busybox_layout)
    assert len(str(root)) >= 300
    ctx = base / "ctx"
    u.run(["mkdir", str(ctx)])
    u.run(["sh", "-c", f"printf 'FROM busybox\\nRUN echo built > /x && id -u > /uid\\nCOPY a /a\\n' > {ctx}/Dockerfile"
                       f" && echo a > {ctx}/a"])
    out = base / "layout"
    r = u.bale("--storage-driver", "overlay", "bud", "-t", f"oci:{out}:latest", str(ctx), root=root, check=False)
    assert r.returncode == 0 and "overlay mount failed" not in r.stderr, r.stderr
    fs = flatten(read_layout(out, "latest")[2])  # an independent reader of the layers
    assert fs["/x"].content == b"built\n" and fs["/uid"].content == b"0\n" and fs["/a"].content == b"a\n"
    snaps = root / "snapshots"
    assert (snaps / "overlay" / "layers").is_dir() and not (snaps / "native").exists()  # overlay, no fallback
    caps = json.loads((root / "probe.json").read_text())["caps"]
    assert caps["overlay"] is True, caps  # the probe mounts under the long root too
