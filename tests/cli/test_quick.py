"""`bale from scratch` without click (builder/cli/quick.py, issue 10): the argument lists it
takes make the same container, output and exit status as the click group does with them, and
every other list (help, other spellings, values click refuses) is left to click."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from builder.cli import quick
from tests.fixtures.images import REPO

_CLICK = "import sys; from builder.cli.errors import run_cli; from builder.cli.group import cli; run_cli(cli, sys.argv[1:])"


def _bale(args: list[str], env: dict[str, str], via_click: bool) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", _CLICK] if via_click else [sys.executable, "-m", "builder.cli.main"]
    clean = {k: v for k, v in os.environ.items() if k not in ("BALE_ROOT", "STORAGE_DRIVER", "BALE_STORAGE_DRIVER",
                                                               "BUILDAH_ISOLATION", "BALE_RUNTIME")}
    return subprocess.run(cmd + args, capture_output=True, text=True, env=dict(clean, PYTHONPATH=str(REPO), **env))


def _store(root: Path) -> dict[str, object]:
    """The store's containers (records without id and time) and its tree, snapshot keys elided."""
    states, keys = {}, []
    for p in sorted((root / "containers").glob("*/state.json")):
        st = json.loads(p.read_text())
        keys.append(st.pop("id"))
        st.pop("created")
        states[p.parent.name] = st
    tree = []
    for dirpath, dirs, files in os.walk(root):
        for n in sorted(dirs + files):
            rel = os.path.relpath(os.path.join(dirpath, n), root)
            if rel.startswith("leases/") or rel == "probe.json":
                continue  # a live process's lease, the host's probe answer
            for i, key in enumerate(keys):
                rel = rel.replace(key, f"KEY{i}")
            tree.append((rel, oct(os.lstat(os.path.join(dirpath, n)).st_mode)))
    return {"containers": states, "tree": sorted(tree)}


CASES = [
    (["--root", "{root}", "from", "scratch"], {}),
    (["--root={root}", "from", "--name", "work", "scratch"], {}),
    (["--root", "{root}", "--storage-driver", "vfs", "from", "scratch", "--name=a", "-q"], {}),
    (["from", "--quiet", "scratch"], {"BALE_ROOT": "{root}", "STORAGE_DRIVER": "native"}),
    (["--root", "{root}", "from", "--isolation", "chroot", "scratch"], {}),
    (["from", "scratch"], {"BALE_ROOT": "{root}", "BUILDAH_ISOLATION": "chroot", "BALE_STORAGE_DRIVER": "native",
                           "STORAGE_DRIVER": "overlay"}),
]


@pytest.mark.parametrize("args,env", CASES, ids=[" ".join(a) + " " + " ".join(e) for a, e in CASES])
def test_quick_path_makes_what_click_makes(tmp_path: Path, args: list[str], env: dict[str, str]) -> None:
    got = {}
    for via_click in (False, True):
        root = tmp_path / ("click" if via_click else "quick")
        a = [x.format(root=root) for x in args]
        e = {k: v.format(root=root) for k, v in env.items()}
        assert via_click or quick.parse(a, e) is not None  # the quick path really is taken
        first = _bale(a, e, via_click)
        again = _bale(a + ["--name", "second"] if "--name" not in " ".join(a) else a, e, via_click)
        got[via_click] = (first.returncode, first.stdout, first.stderr, again.returncode, again.stdout,
                          again.stderr.replace(str(root), "ROOT"), _store(root))
    assert got[False] == got[True]
    assert got[False][0] == 0 and got[False][-1]["containers"]
    # the quick path ends without the interpreter's teardown, after the exit handlers: no lease is left
    assert not list((tmp_path / "quick" / "leases").iterdir())


LEFT_TO_CLICK = [
    ["from", "--help"], ["--help"], ["from", "scratch", "--quiet=true"], ["from", "busybox"],
    ["from", "--name", "a", "--name", "b", "scratch"], ["from", "--platform", "linux/arm64", "scratch"],
    ["--storage-driver", "zfs", "from", "scratch"], ["from", "--isolation", "jail", "scratch"],
    ["--debug", "from", "scratch"], ["from", "--", "scratch"], ["from", "--name", "-x", "scratch"],
    ["from", "scratch", "extra"], ["from"], ["run", "from", "scratch"], ["--root", "from", "scratch"],
]


@pytest.mark.parametrize("args", LEFT_TO_CLICK, ids=[" ".join(a) for a in LEFT_TO_CLICK])
def test_everything_else_goes_to_click(args: list[str]) -> None:
    assert quick.parse(args, {}) is None


@pytest.mark.parametrize("env", [{"BALE_RUNTIME": "crun"}, {"BALE_REGISTRY_TIMEOUT": "1s"},
                                 {"STORAGE_DRIVER": "btrfs"}, {"BUILDAH_ISOLATION": "none"}])
def test_variables_only_click_options_know_go_to_click(env: dict[str, str]) -> None:
    assert quick.parse(["from", "scratch"], env) is None


def test_a_file_as_root_is_clicks_usage_error(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("")
    assert quick.parse(["--root", str(f), "from", "scratch"], {}) is None
    out = _bale(["--root", str(f), "from", "scratch"], {}, via_click=False)
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1 and "is a file" in out.stderr, out.stderr


def test_a_failure_on_the_quick_path_is_one_line(tmp_path: Path) -> None:
    d = tmp_path / "s"
    for via_click in (False, True):
        _bale(["--root", str(d), "from", "--name", "taken", "scratch"], {}, via_click)
    out = {v: _bale(["--root", str(d), "from", "--name", "taken", "scratch"], {}, v) for v in (False, True)}
    assert out[False].returncode == out[True].returncode == 1
    assert out[False].stderr == out[True].stderr and len(out[False].stderr.splitlines()) == 1, out[False].stderr


# builder/log.py: configured before logging is imported, then used through its ``log`` or through
# logging itself by another module
_LOG = r"""
import sys
from builder import log as bale_log
bale_log.configure(sys.argv[1])
assert "logging" not in sys.modules
if sys.argv[2] == "log":
    bale_log.log.warning("through log %s", 1)
    bale_log.log.info("through log %s", 2)
else:
    import logging
    logging.getLogger("bale").warning("through logging %s", 1)
    logging.getLogger("bale").info("through logging %s", 2)
"""


@pytest.mark.parametrize("how", ["log", "logging"])
def test_log_lines_have_bales_format_whoever_imports_logging_first(how: str) -> None:
    def run(level: str) -> str:
        out = subprocess.run([sys.executable, "-c", _LOG, level, how], capture_output=True, text=True,
                             env=dict(os.environ, PYTHONPATH=str(REPO)))
        assert out.returncode == 0, out.stderr
        return out.stderr
    assert run("warn") == f"bale: WARNING: through {how} 1\n"
    assert run("info") == f"bale: WARNING: through {how} 1\nbale: INFO: through {how} 2\n"
