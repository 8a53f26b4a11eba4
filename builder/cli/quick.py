"""`bale from scratch` answered without click (start-up, issue 10: click and what it imports
are about a fifth of that command's time). ``parse`` takes only the plain spellings of the few
flags that matter for an empty container: before ``from``, ``--root`` and ``--storage-driver``;
after it, ``--name``, ``--isolation`` and ``--quiet``/``-q``, with the image ``scratch``. Any
other argument list (another command or image, ``--help``, any other flag or spelling, a value
click would refuse, an environment variable whose meaning for this command only click's
options know) gives None, and the click group (builder/cli/group.py) runs it as before; so
usage errors are click's. tests/cli/test_quick.py checks both give the same container.

Environment, as the click options read it (a set, non-empty variable is a default):
``BALE_ROOT`` (--root), ``BALE_STORAGE_DRIVER`` then ``STORAGE_DRIVER`` (--storage-driver),
``BUILDAH_ISOLATION`` (--isolation). ``BALE_RUNTIME`` and ``BALE_REGISTRY_TIMEOUT`` (options
``from`` validates or records) send the command to click."""
from __future__ import annotations

import os
import stat
import sys

TYPE_CHECKING = False  # typing is not imported on this path
if TYPE_CHECKING:
    from typing import Callable, Mapping

#: the click choices of --storage-driver and --isolation (builder/cli/group.py, commands/containers.py)
DRIVERS = ("overlay", "fuse-overlayfs", "native", "vfs")
ISOLATIONS = ("rootless", "chroot", "oci", "ptrace")
#: option -> parameter, for options that take a value, before and after ``from``
_GLOBAL = {"--root": "root", "--storage-driver": "storage_driver"}
_FROM = {"--name": "name", "--isolation": "isolation"}
#: variables of options that send the command to click when set
_CLICK_ONLY_ENV = ("BALE_RUNTIME", "BALE_REGISTRY_TIMEOUT")


def _env(environ: "Mapping[str, str]", *names: str) -> str | None:
    """The first of ``names`` set to a non-empty value (click's envvar rule)."""
    for n in names:
        if environ.get(n):
            return environ[n]
    return None


def _options(args: list[str], valued: dict[str, str], flags: tuple[str, ...],
             out: dict[str, str | bool]) -> list[str] | None:
    """Fill ``out`` from ``args`` (``--opt VALUE``, ``--opt=VALUE``, flags); returns the
    positional arguments, or None for anything else."""
    positional: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("-"):
            positional.append(arg)
            continue
        if arg in flags:
            out[arg.lstrip("-")] = True
            continue
        name, eq, value = arg.partition("=")
        if name not in valued or valued[name] in out:
            return None  # unknown, or repeated (click keeps the last: rare enough for click)
        if not eq:
            if i == len(args):
                return None
            value = args[i]
            i += 1
        if not value or value.startswith("-"):
            return None
        out[valued[name]] = value
    return positional


def _path_ok(path: str) -> bool:
    """Whether click.Path(file_okay=False) takes ``path``: absent, or there, no regular file and
    readable."""
    try:
        st = os.stat(path)
    except OSError:
        return True
    return not stat.S_ISREG(st.st_mode) and os.access(path, os.R_OK)


def parse(args: list[str], environ: "Mapping[str, str]") -> dict[str, str | None] | None:
    """``args`` (bale's, without the program name) and ``environ`` as {root, storage_driver,
    name, isolation} when they are a `bale from scratch` this module runs, else None."""
    if "from" not in args or any(_env(environ, n) for n in _CLICK_ONLY_ENV):
        return None
    at = args.index("from")
    glob: dict[str, str | bool] = {}
    if _options(args[:at], _GLOBAL, (), glob) != []:
        return None
    sub: dict[str, str | bool] = {}
    if _options(args[at + 1:], _FROM, ("--quiet", "-q"), sub) != ["scratch"]:
        return None
    opts = {"root": glob.get("root") or _env(environ, "BALE_ROOT"),
            "storage_driver": glob.get("storage_driver") or _env(environ, "BALE_STORAGE_DRIVER", "STORAGE_DRIVER"),
            "name": sub.get("name"), "isolation": sub.get("isolation") or _env(environ, "BUILDAH_ISOLATION")}
    if opts["storage_driver"] is not None and opts["storage_driver"] not in DRIVERS:
        return None
    if opts["isolation"] is not None and opts["isolation"] not in ISOLATIONS:
        return None
    if isinstance(opts["root"], str) and not _path_ok(opts["root"]):
        return None
    return {k: v if isinstance(v, str) else None for k, v in opts.items()}


def from_scratch(opts: dict[str, str | None]) -> "Callable[[], None]":
    """The command ``parse`` found: what the click group and `bale from` do for it."""
    def run() -> None:
        from builder.cli.context import setup_logging
        from builder.image.store import default_root
        from builder.scripted import new_container
        from builder.workspace.workspace import Workspace
        setup_logging("warn")
        driver = opts["storage_driver"]
        ws = Workspace(opts["root"] or default_root(), driver="native" if driver == "vfs" else driver)
        if opts["isolation"]:
            ws = ws.with_options(isolation=opts["isolation"])
        state = new_container(ws, "scratch", name=opts["name"], isolation=ws.isolation)
        sys.stdout.write(state.name + "\n")
        sys.stdout.flush()
    return run
