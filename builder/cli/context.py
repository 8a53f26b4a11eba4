"""Per-invocation state shared by all commands: the global flags, and the
library Workspace they describe (commands add --isolation/--runtime to it)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import click

    from builder.image.store import Store
    from builder.workspace.workspace import Workspace


class AppContext:
    """The global flags of one invocation, and the Workspace made from them on first use."""

    def __init__(self, root: Path, storage_driver: str | None, debug: bool, log_level: str) -> None:
        self.root, self.storage_driver, self.debug, self.log_level = root, storage_driver, debug, log_level
        self._workspace: Workspace | None = None

    @classmethod
    def create(cls, root: str | None, storage_driver: str | None, debug: bool, log_level: str) -> "AppContext":
        from builder.image.store import default_root
        level = "debug" if debug else log_level
        setup_logging(level)
        return cls(Path(root) if root else default_root(), storage_driver, debug, level)

    @property
    def workspace(self) -> "Workspace":
        """The Workspace of the global flags (no isolation or OCI runtime chosen)."""
        if self._workspace is None:
            from builder.workspace.workspace import Workspace
            self._workspace = Workspace(self.root, driver=self.storage_driver)
        return self._workspace

    @property
    def store(self) -> "Store":
        return self.workspace.store


def setup_logging(level: str) -> None:
    """bale's log lines (``bale: LEVEL: message`` on stderr) from ``level`` on: debug, info, warn
    or error."""
    from builder.log import configure
    configure(level)


def workspace(ctx: "click.Context", *, isolation: str | None = None, oci_runtime: str | None = None) -> "Workspace":
    """The command's Workspace: the global flags plus its --isolation and --runtime (or the
    --runtime an option callback recorded in ``ctx.meta["bale.runtime"]``)."""
    app: AppContext = ctx.find_root().obj
    runtime = oci_runtime or ctx.meta.get("bale.runtime")
    if isolation is None and runtime is None:
        return app.workspace
    return app.workspace.with_options(isolation=isolation, oci_runtime=runtime)
