"""The ``bale`` entry point and its command table. ``bale --version`` is answered
before click or anything else is imported (start-up is most of a quick command's
time), `bale from scratch` without click (builder/cli/quick.py); every other command
goes to the click group in builder/cli/group.py, which imports a subcommand's module
only when it is invoked (pip's commands_dict) and lists them all from COMMANDS."""
from __future__ import annotations

import sys

from builder import __version__

TYPE_CHECKING = False  # typing itself costs ~10 ms of start-up: not imported for --version
if TYPE_CHECKING:
    from typing import Any

#: command name -> (module under builder.cli.commands, attribute, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "pull": ("images", "pull", "Pull an image from a registry or other transport."),
    "push": ("images", "push", "Push an image to a registry or other transport."),
    "images": ("images", "images", "List images in the local store."),
    "inspect": ("images", "inspect", "Show an image's configuration or manifest."),
    "tag": ("images", "tag", "Add names to an image."),
    "rmi": ("images", "rmi", "Remove images."),
    "prune": ("images", "prune", "Remove unused blobs and dangling images."),
    "list-tags": ("registry", "list_tags", "List the tags of a registry repository."),
    "catalog": ("registry", "catalog", "List the repositories of a registry."),
    "verify": ("verify", "verify", "Verify an image's sigstore signatures with a public key."),
    "login": ("auth", "login", "Log in to a registry."),
    "logout": ("auth", "logout", "Log out of a registry."),
    "info": ("system", "info", "Show what isolation and storage bale will use."),
    "unshare": ("system", "unshare", "Run a command in bale's user namespace."),
    "version": ("system", "version", "Show bale's version."),
    "manifest": ("manifest", "manifest", "Create, change, inspect and push manifest lists (OCI indexes)."),
    "from": ("containers", "from_", "Create a working container from an image."),
    "run": ("containers", "run", "Run a command in a working container."),
    "copy": ("containers", "copy", "Copy files into a working container."),
    "add": ("containers", "add", "Add files, archives or URLs into a working container."),
    "config": ("containers", "config", "Change a working container's image configuration."),
    "commit": ("containers", "commit", "Commit a working container to an image."),
    "containers": ("containers", "containers", "List working containers."),
    "rm": ("containers", "rm", "Remove working containers."),
    "mount": ("containers", "mount", "Mount a working container's root filesystem."),
    "umount": ("containers", "umount", "Unmount a working container's root filesystem."),
    "bud": ("bud", "bud", "Build an image from a Dockerfile."),
    "build": ("bud", "bud", "Build an image from a Dockerfile (alias of bud)."),
}


def main(argv: list[str] | None = None) -> "Any":
    args = sys.argv[1:] if argv is None else list(argv)
    if args == ["--version"]:  # click's version_option says the same, 30-40 ms later
        sys.stdout.write(f"bale version {__version__}\n")
        sys.stdout.flush()
        return 0
    import os
    from builder.cli import quick
    opts = quick.parse(args, os.environ)
    if opts is not None:  # `bale from scratch`, answered without click
        from builder.cli.errors import run_plain
        run_plain(quick.from_scratch(opts), args)
    from builder.cli.errors import run_cli
    from builder.cli.group import cli
    return run_cli(cli, args)


if __name__ == "__main__":
    sys.exit(main())
