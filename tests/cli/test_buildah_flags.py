"""buildah's flag and verb spellings as CI scripts use them (issue 11 item 1): Go-style
``--flag=true|false`` on every boolean flag (spf13/pflag's boolFlag, strconv.ParseBool),
STORAGE_DRIVER=vfs, BUILDAH_* variables, bud's --env/--unsetenv/--add-host/-v/--logfile/
--metadata-file/--source-date-epoch, inspect --format's Go-template subset, images IMAGE and
--filter, copy --exclude/--parents, version, and flags accepted without being honoured
saying so in one line."""
from __future__ import annotations

import importlib
import json
import tarfile
from pathlib import Path

import click
import pytest

from builder.cli.gobool import parse_go_bool, rewrite_bool_args
from builder.cli.gotemplate import TemplateError, render
from builder.cli.main import COMMANDS
from tests.fixtures.images import load_busybox


def _commands() -> list[tuple[str, click.Command]]:
    out = []
    for name, (mod, attr, _) in sorted(COMMANDS.items()):
        cmd = getattr(importlib.import_module(f"builder.cli.commands.{mod}"), attr)
        if isinstance(cmd, click.Group):
            out += [(f"{name} {sub}", c) for sub, c in sorted(cmd.commands.items())]
        else:
            out.append((name, cmd))
    return out


def _bool_flags(cmd: click.Command) -> list[click.Option]:
    return [p for p in cmd.params if isinstance(p, click.Option) and p.is_flag and p.is_bool_flag]


@pytest.mark.parametrize("name,cmd", _commands(), ids=[n for n, _ in _commands()])
def test_every_boolean_flag_takes_go_style_values(name, cmd):
    """--flag=true sets it and --flag=false clears it, whatever the default (env included);
    a flag with no --no- form must default to false, or =false could not clear it."""
    for opt in _bool_flags(cmd):
        long = next((o for o in opt.opts if o.startswith("--")), None)
        if long is None:
            continue
        if not opt.secondary_opts:
            default = cmd.make_context(name, _required_args(cmd), resilient_parsing=True).params[opt.name]
            assert not default, f"{name} {long}: defaults to true without a --no- form"
        for value, want in (("true", True), ("True", True), ("1", True), ("false", False), ("0", False),
                            ("F", False)):
            args = rewrite_bool_args(cmd, [f"{long}={value}"])
            ctx = cmd.make_context(name, args + _required_args(cmd), resilient_parsing=True)
            got = ctx.params[opt.name]
            assert bool(got) is want, f"{name} {long}={value} gave {got!r}"


def _required_args(cmd: click.Command) -> list[str]:
    return ["x" for p in cmd.params if isinstance(p, click.Argument) and p.required
            for _ in range(1 if p.nargs == 1 else 1)]


def test_go_bool_rejects_other_words_and_leaves_what_follows_double_dash():
    with pytest.raises(click.UsageError, match="--layers"):
        parse_go_bool("yes please", "--layers")
    cmd = importlib.import_module("builder.cli.commands.containers").run
    assert rewrite_bool_args(cmd, ["--terminal=false", "c", "--", "sh", "--terminal=true"]) == \
        ["c", "--", "sh", "--terminal=true"]
    bud = importlib.import_module("builder.cli.commands.bud").bud  # pflag: a bare bool-valued flag is true
    assert rewrite_bool_args(bud, ["--tls-verify", "ctx"]) == ["--tls-verify=true", "ctx"]
    ctx = bud.make_context("bud", rewrite_bool_args(bud, ["--tls-verify", "."]), resilient_parsing=True)
    assert ctx.params["tls_verify"] is True


def test_go_template_subset():
    data = {"Digest": "sha256:ab", "OCIv1": {"architecture": "amd64", "config": {"Env": ["A=1"]}},
            "Labels": {"k": "v", "a.b": "c"}, "Names": ["x", "y"], "Docker": {"config": {"Cmd": ["sh"]}}}
    assert render("{{.Digest}}", data) == "sha256:ab"
    assert render("{{.OCIv1.architecture}} {{.OCIv1.Architecture}}", data) == "amd64 amd64"
    assert render("{{json .OCIv1.config}}", data) == '{"Env": ["A=1"]}'
    assert json.loads(render("{{json .}}", data)) == data
    assert render('{{index .Labels "a.b"}}|{{index .Labels "missing"}}', data) == "c|"
    assert render("{{.Names}} {{.Labels}} {{.Nope}}", data) == "[x y] map[a.b:c k:v] <no value>"
    assert render("a {{- .Digest -}} b", data) == "asha256:abb"
    for bad, part in (("{{range .Names}}{{.}}{{end}}", "range"), ("{{.Digest | printf}}", "pipes"),
                      ("{{printf \"%s\" .Digest}}", "printf")):
        with pytest.raises(TemplateError, match=part):
            render(bad, data)


@pytest.fixture
def store(tmp_path: Path, busybox_layout: Path) -> Path:
    root = tmp_path / "store"
    load_busybox(root, busybox_layout)
    return root


def test_bud_with_ci_flags(bale, store, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "f").write_text("hi\n")
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "data").write_text("from the volume\n")
    (ctx / "Dockerfile").write_text("FROM busybox\nENV A=1 B=2\nCOPY f /f\nARG SOURCE_DATE_EPOCH\n"
                                    "RUN cat /etc/hosts > /hosts && cat /mnt/v/data > /vol && echo $SOURCE_DATE_EPOCH > /sde\n")
    log = tmp_path / "build.log"
    r = bale("bud", "--layers=false", "--no-cache=true", "--squash=false", "--rm=true", "--quiet=false",
             "--pull=false", "--add-host", "myhost:10.1.2.3", "-v", f"{vol}:/mnt/v:ro", "--env", "C=3",
             "--unsetenv", "B", "--metadata-file", str(tmp_path / "md.json"), "--iidfile", str(tmp_path / "iid"),
             "--digestfile", str(tmp_path / "dig"), "--source-date-epoch", "1700000000",
             "--logfile", str(log), "--cap-add", "CAP_NET_ADMIN", "--compression-format", "zstd",
             "-t", "ci", str(ctx), root=store)
    assert r.stdout == "" and r.stderr == ""  # --logfile takes everything
    text = log.read_text()
    assert "STEP 1/4: FROM busybox" in text  # ARG is no step of its own
    assert "--cap-add: ignored" in text  # accepted but not honoured: one line saying so
    iid = (tmp_path / "iid").read_text()
    assert text.strip().splitlines()[-1] == iid.split(":")[1]
    md = json.loads((tmp_path / "md.json").read_text())
    assert md["containerimage.digest"] == (tmp_path / "dig").read_text()
    assert md["containerimage.config.digest"] == iid and md["image.name"] == "ci"
    info = json.loads(bale("inspect", "ci", root=store).stdout)
    env = info["OCIv1"]["config"]["Env"]
    assert "A=1" in env and "C=3" in env and not any(e.startswith("B=") for e in env)
    assert info["OCIv1"]["created"].startswith("2023-11-14T22:13:20")
    out = tmp_path / "flat.tar"
    bale("bud", "-q", "--output", f"type=tar,dest={out}", "-f", str(ctx / "Dockerfile"), "--add-host",
         "myhost:10.1.2.3", "-v", f"{vol}:/mnt/v", "--source-date-epoch=1700000000", str(ctx), root=store)
    with tarfile.open(out) as tf:
        assert "10.1.2.3\tmyhost" in tf.extractfile("hosts").read().decode()
        assert tf.extractfile("vol").read() == b"from the volume\n"
        assert tf.extractfile("sde").read() == b"1700000000\n"


def test_storage_driver_vfs_and_buildah_env(bale, store, tmp_path):
    r = bale("info", "--format", "json", root=store, env={"STORAGE_DRIVER": "vfs"})
    assert json.loads(r.stdout)["storage_driver"] == "native"
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN echo x > /x\n")
    env = {"STORAGE_DRIVER": "vfs", "BUILDAH_LAYERS": "true", "BUILDAH_FORMAT": "docker",
           "BUILDAH_ISOLATION": "chroot"}
    r = bale("--storage-driver", "vfs", "--runroot", str(tmp_path / "run"), "--storage-opt", "overlay.mount_program=x",
             "--log-level", "info", "bud", "-t", "envs", str(ctx), root=store, env=env)
    assert "--runroot" in r.stderr and "--storage-opt overlay.mount_program=x: ignored" in r.stderr
    man = json.loads(bale("inspect", "--type", "manifest", "envs", root=store).stdout)
    assert man["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"  # BUILDAH_FORMAT
    r = bale("bud", "-t", "envs2", str(ctx), root=store, env=env)
    assert "--> Using cache" in r.stderr  # BUILDAH_LAYERS=true
    r = bale("bud", "--layers=false", "-t", "envs3", str(ctx), root=store, env=env)
    assert "--> Using cache" not in r.stderr


def test_inspect_format_and_images_filter(bale, store, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nLABEL team=ci version=2\n")
    iid = bale("bud", "-q", "-t", "labelled", str(ctx), root=store).stdout.strip()
    out = bale("inspect", "--format", '{{.OCIv1.architecture}}/{{index .Labels "team"}}/{{.FromImageID}}',
               "labelled", root=store).stdout.strip()
    arch = json.loads(bale("inspect", "labelled", root=store).stdout)["Architecture"]
    assert out == f"{arch}/ci/{iid}"
    assert json.loads(bale("inspect", "--format", "{{json .Docker.config.Labels}}", "labelled",
                           root=store).stdout) == {"team": "ci", "version": "2"}
    r = bale("inspect", "--format", "{{range .Layers}}{{.}}{{end}}", "labelled", root=store, check=False)
    assert r.returncode == 2 and "range" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    names = bale("images", "--format", "{{.Name}}", "labelled", root=store).stdout.split()
    assert names == ["localhost/labelled:latest"]
    assert bale("images", "-q", "--filter", "label=team=ci", root=store).stdout.split() == [iid[:12]]
    assert bale("images", "-q", "--filter", "label=team=other", root=store).stdout.split() == []
    assert bale("images", "-q", "--filter", "reference=busybox", root=store).stdout.split() != []
    assert iid[:12] not in bale("images", "-q", "--filter", "reference=busybox", root=store).stdout
    assert bale("images", "-q", "--filter", "dangling=true", root=store).stdout.split() == []
    r = bale("images", "--filter", "color=red", root=store, check=False)
    assert r.returncode == 2 and "color" in r.stderr
    r = bale("images", "nothere", root=store, check=False)
    assert r.returncode == 1


def test_copy_exclude_parents_link_and_version(bale, store, tmp_path):
    ctx = tmp_path / "ctx"
    (ctx / "a" / "b").mkdir(parents=True)
    (ctx / "a" / "b" / "keep.txt").write_text("k")
    (ctx / "a" / "b" / "skip.log").write_text("s")
    c = bale("from", "busybox", root=store).stdout.strip()
    bale("copy", "--contextdir", str(ctx), "--exclude", "*.log", "--parents", "--link", c,
         str(ctx / "a" / "b" / "keep.txt"), str(ctx / "a" / "b" / "skip.log"), "/dst/", root=store)
    bale("copy", "--contextdir", str(ctx), "--exclude", "**/*.log", c, str(ctx / "a"), "/whole/", root=store)
    out = tmp_path / "o"
    bale("commit", "--compression-format=zstd", c, f"oci:{out}:x", root=store)
    idx = json.loads((out / "index.json").read_text())
    man = json.loads((out / "blobs" / "sha256" / idx["manifests"][0]["digest"][7:]).read_text())
    assert man["layers"][-1]["mediaType"].endswith("+zstd")
    paths = bale("run", c, "--", "find", "/dst", "/whole", root=store).stdout.split()
    assert "/dst/a/b/keep.txt" in paths and not any(p.endswith(".log") for p in paths)
    assert "/whole/b/keep.txt" in paths
    v = bale("version", root=store).stdout
    assert v.startswith("Version:") and "OS/Arch:" in v
    assert json.loads(bale("version", "--json", root=store).stdout)["version"]
