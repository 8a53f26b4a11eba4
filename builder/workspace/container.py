"""Working containers (buildah's Builder): a base image, a writable snapshot
over its layers, and the image configuration being edited. State persists in
``STORE/containers/<name>/state.json`` so scripted verbs (from, run, copy,
config, commit) work across bale invocations."""
from __future__ import annotations

import contextlib
import json
import re
import secrets
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from builder.errors import ContainerError, UsageError
from builder.image.atomic import write_atomic
from builder.image.oci import Descriptor, ImageConfig, parse_config

if TYPE_CHECKING:
    from builder.image.commit import Layer


@dataclass
class ContainerState:
    name: str
    id: str
    image: str  # as given to `from` ("scratch" for none)
    image_id: str | None  # config digest of the base image
    layers: list[Layer]  # the base image's, bottom first
    config: dict[str, Any]  # ImageConfig JSON being edited
    driver: str
    isolation: str
    #: container paths the sandbox created as mountpoints (dropped from diffs if still empty)
    created_paths: list[str] = field(default_factory=list)
    #: history entries for steps since `from` (commit appends them to the base history)
    pending_history: list[dict[str, Any]] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    #: number of base-config history entries (so commit knows what is new)
    base_history_len: int = 0

    @property
    def key(self) -> str:
        """Snapshot key for the writable layer."""
        return self.id

    @property
    def image_config(self) -> ImageConfig:
        return parse_config(json.dumps(self.config).encode())

    def set_image_config(self, cfg: ImageConfig) -> None:
        self.config = cfg.to_json()

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = [{"diff_id": l.diff_id, "digest": l.digest, "media_type": l.media_type, "size": l.size}
                       for l in self.layers]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "ContainerState":
        from builder.image.commit import Layer  # not at import: `bale from scratch` needs no image code (issue 10)
        d = dict(d)
        d["layers"] = [Layer(Descriptor(l["media_type"], l["digest"], l["size"]), l["diff_id"])
                       for l in d.get("layers", [])]
        return cls(**d)


_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


class ContainerRegistry:
    """The set of working containers in one store (files under STORE/containers)."""

    def __init__(self, store_root: Path) -> None:
        self.dir = Path(store_root) / "containers"
        self.dir.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        return self.dir / name / "state.json"

    def names(self) -> list[str]:
        return sorted(p.parent.name for p in self.dir.glob("*/state.json"))

    def all(self) -> list[ContainerState]:
        out = []
        for n in self.names():
            with contextlib.suppress(ContainerError):
                out.append(self.get(n))
        return out

    def get(self, name_or_id: str) -> ContainerState:
        path = self._path(name_or_id) if _NAME_RE.match(name_or_id) else None
        if path is None or not path.exists():
            hits = [c for c in self._all_raw() if c.id.startswith(name_or_id)] if len(name_or_id) >= 6 else []
            if len(hits) == 1:
                return hits[0]
            raise ContainerError(f"container {name_or_id}: no such working container")
        try:
            return ContainerState.from_json(json.loads(path.read_text()))
        except (ValueError, TypeError, KeyError) as exc:
            raise ContainerError(f"container {name_or_id}: corrupt state {path}: {exc}") from None

    def _all_raw(self) -> list[ContainerState]:
        out = []
        for p in self.dir.glob("*/state.json"):
            with contextlib.suppress(ValueError, TypeError, KeyError, OSError):
                out.append(ContainerState.from_json(json.loads(p.read_text())))
        return out

    def new_name(self, image: str, requested: str | None) -> str:
        """A container name, reserved for the caller: ``requested`` (ContainerError if taken), else
        ``<image>-working-container[-N]``, the first free one as buildah numbers them. The name's
        directory is made under the store's exclusive lock, so concurrent processes never get the
        same name; ``save`` fills it in."""
        if requested:
            if not _NAME_RE.match(requested):
                raise UsageError(f"invalid container name {requested!r}")
            with self._store_lock():
                if not self._reserve(requested):
                    raise ContainerError(f"container {requested}: the name is already in use")
            return requested
        base = "working-container" if image == "scratch" else \
            re.sub(r"[^a-zA-Z0-9_.-]", "-", image.rsplit("/", 1)[-1].split("@")[0].split(":")[0]) + "-working-container"
        name, n = base, 1
        with self._store_lock():
            while not self._reserve(name):
                name = f"{base}-{n}"
                n += 1
        return name

    def _store_lock(self) -> contextlib.AbstractContextManager[None]:
        from builder.image.storelock import lock_for
        return lock_for(self.dir.parent / "lock")()

    def _reserve(self, name: str) -> bool:
        try:
            (self.dir / name).mkdir()
            return True
        except FileExistsError:
            return False

    def unsaved(self, older_than: float = 60.0) -> list[str]:
        """Names reserved but never saved (their process died in between), older than ``older_than`` s."""
        out = []
        for d in self.dir.iterdir():
            try:
                if d.is_dir() and not (d / "state.json").exists() and time.time() - d.stat().st_mtime > older_than:
                    out.append(d.name)
            except OSError:
                continue
        return sorted(out)

    def save(self, state: ContainerState) -> None:
        write_atomic(self._path(state.name), json.dumps(state.to_json(), indent=1).encode(), prefix=".state-",
                     mode=0o600)

    def remove(self, state: ContainerState) -> None:
        shutil.rmtree(self.dir / state.name, ignore_errors=True)

    @contextlib.contextmanager
    def locked(self, name: str) -> Iterator[None]:
        """Serialise verbs on one container (flock on its directory's lock file)."""
        import fcntl
        d = self.dir / name
        d.mkdir(parents=True, exist_ok=True)
        with open(d / "lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield


def new_container_id() -> str:
    return secrets.token_hex(32)
