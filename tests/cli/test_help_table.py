"""The command table (builder/cli/main.py COMMANDS) against the real commands: `bale --help`
lists every command with its one-line help from the table, without importing a command's
module (builder/cli/group.py imports one only when it is invoked), so the table must name
every command there is, each entry must resolve to the command of that name, and the listing
must be the table's."""
from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys

import click

import builder.cli.commands
from builder.cli.main import COMMANDS
from tests.fixtures.images import REPO

ALIASES = {"build": "bud"}


def _bale(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "builder.cli.main", *args], capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))


def test_every_entry_is_the_command_of_its_name() -> None:
    for name, (module, attr, text) in COMMANDS.items():
        cmd = getattr(importlib.import_module(f"builder.cli.commands.{module}"), attr)
        assert isinstance(cmd, click.Command), name
        assert cmd.name == ALIASES.get(name, name), (name, cmd.name)
        assert text and "\n" not in text and text.endswith(".") and len(text) <= 70, (name, text)
        if name in ALIASES:
            assert text.endswith(f"(alias of {ALIASES[name]}).")


def test_every_command_is_in_the_table() -> None:
    listed = {(m, a) for m, a, _ in COMMANDS.values()}
    for info in pkgutil.iter_modules(builder.cli.commands.__path__):
        module = importlib.import_module(f"builder.cli.commands.{info.name}")
        for attr, obj in vars(module).items():
            if isinstance(obj, click.Command) and not attr.startswith("_") and \
                    getattr(obj.callback, "__module__", None) == module.__name__ and _top_level(module, obj):
                assert (info.name, attr) in listed, f"builder.cli.commands.{info.name}.{attr} is not in COMMANDS"


def _top_level(module: object, cmd: click.Command) -> bool:
    """Whether ``cmd`` is a command of the group, not a subcommand of one of the module's groups."""
    groups = [g for g in vars(module).values() if isinstance(g, click.Group)]
    return not any(cmd in g.commands.values() for g in groups if g is not cmd)


def test_help_lists_the_table_without_importing_a_command() -> None:
    out = _bale("--help")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split("Commands:", 1)[1].splitlines()
    listed = {ln.split()[0]: " ".join(ln.split()[1:]) for ln in lines if ln.startswith("  ") and ln.split()}
    assert listed == {name: text for name, (_, _, text) in COMMANDS.items()}
    imported = {ln.rsplit("|", 1)[1].strip() for ln in out.stderr.splitlines() if ln.startswith("import time:")}
    assert not sorted(m for m in imported if m.startswith("builder.cli.commands.")), imported
