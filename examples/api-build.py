#!/usr/bin/env python3
"""bale's Python API end to end, without network: a busybox base image made
locally (examples/make-busybox-image.py), pulled from its OCI layout, changed
verb by verb (from, run, copy, config, commit), then used as the base of a
Dockerfile build whose filesystem is exported as a tar, and pushed to another
OCI layout.

    python3 examples/api-build.py WORKDIR

WORKDIR is created; it receives the store (WORKDIR/store), the layouts and the
exported tar. Prints one line per step and exits 0 when the image holds what
the steps put there.
"""
from __future__ import annotations

import runpy
import sys
import tarfile
from pathlib import Path

import bale

HERE = Path(__file__).resolve().parent


def main(workdir: str) -> None:
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    layout = work / "busybox"
    if not (layout / "index.json").exists():
        runpy.run_path(str(HERE / "make-busybox-image.py"))["main"](str(layout))

    ws = bale.Workspace(work / "store")

    # pull: any transport; here an OCI layout on disk
    base = bale.pull(ws, f"oci:{layout}:latest")
    print(f"pulled     {base.id}")

    # the scripted verbs: a working container, a command in it, a file, configuration, a commit
    c = bale.from_image(ws, base.id, bale.FromOptions(name="api-example"))
    try:
        bale.run(ws, c.name, ["sh", "-c", "mkdir -p /app && echo 'hello from bale' > /app/message.txt"])
        src = work / "src"
        src.mkdir(exist_ok=True)
        (src / "greet.sh").write_text("#!/bin/sh\ncat /app/message.txt\n")
        bale.copy(ws, c.name, ["greet.sh"], "/app/", bale.CopyOptions(contextdir=str(src), chmod="755"))
        bale.config(ws, c.name, bale.ConfigOptions(cmd='["/app/greet.sh"]', env=("APP_HOME=/app",),
                                                   labels=("org.opencontainers.image.title=greeter",)))
        greeter = bale.commit(ws, c.name, "localhost/greeter-base:1", bale.CommitOptions(timestamp=0))
        print(f"committed  {greeter.id} as localhost/greeter-base:1")
    finally:
        bale.remove(ws, [c.name])

    # a Dockerfile build on top of it, exported as a flattened tar
    (src / "Dockerfile").write_text(
        "FROM localhost/greeter-base:1\n"
        "RUN echo built >> /app/message.txt && chown 1234:4321 /app/message.txt\n"
        "USER 1234\n")
    out_tar = work / "rootfs.tar"
    result = bale.build(ws, bale.BuildOptions(
        context=str(src), tags=["localhost/greeter:1"], quiet=True,
        outputs=[bale.OutputSpec("tar", str(out_tar))]))
    print(f"built      {result.image_id}")

    # push to another OCI layout
    pushed = bale.push(ws, "localhost/greeter:1", f"oci:{work / 'out'}:1")
    print(f"pushed     {pushed.manifest_digest} to oci:{work / 'out'}:1")

    with tarfile.open(out_tar) as t:
        msg = t.getmember("app/message.txt")
        text = t.extractfile(msg).read().decode()  # type: ignore[union-attr]
        mode = t.getmember("app/greet.sh").mode
    assert text == "hello from bale\nbuilt\n", text
    assert (msg.uid, msg.gid) == (1234, 4321) and mode == 0o755, (msg.uid, msg.gid, oct(mode))
    print(f"exported   {out_tar}: app/message.txt owned 1234:4321, app/greet.sh mode 755")

    try:
        bale.run(ws, "no-such-container", ["true"])
    except bale.ContainerError as exc:  # every failure is a BaleError with one line
        print(f"errors     {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: api-build.py WORKDIR")
    try:
        main(sys.argv[1])
    except bale.BaleError as exc:
        sys.exit(f"api-build: {exc}")
