"""The layer cache of ``bale bud --layers``, and what its keys are made of.

A key is the SHA-256 of a canonical JSON document naming the step kind, the
parent filesystem (``chain``: platform and the parent's layer diff_ids, so it
is content-addressed) and the step's own inputs as its executor lists them:
expanded fields, the ARG/ENV values it sees and digests of the files it reads.
Nothing else enters a key: a LABEL does not invalidate a later RUN, an
unrelated build-arg does not invalidate anything.

Entries live in ``<root>/cache/<key>`` (JSON: the layer descriptor and diff_id,
or null for a step that changed nothing). ``FileDigests`` keeps, in
``<root>/digests.db`` (SQLite, outside ``cache/`` whose entries the GC reads),
the SHA-256 of context files keyed by path, size, mtime_ns, inode and
ctime_ns, so an unchanged file is not read again by the next build (the files
of a stage or image that ``COPY --from`` reads too, keyed by their path in the
rootfs: ``treedigest``), and the digests of stage subtrees keyed by their
content-addressed chain. Deleting it
only costs re-reading.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from builder.image.commit import Layer
from builder.image.oci import Descriptor
from builder.image.store import Store
from snapshotter import safepath

if TYPE_CHECKING:
    from builder.image.remotecache import RemoteCache

#: the file in <root> that holds the stat-keyed content digests and subtree digests
DIGESTS_DB = "digests.db"


def step_key(kind: str, chain: str, fields: Mapping[str, Any]) -> str:
    """sha256 hex of the step's kind, parent chain and inputs (JSON-serialisable values)."""
    doc = json.dumps({"kind": kind, "chain": chain, "fields": fields}, sort_keys=True, separators=(",", ":"),
                     default=_jsonable)
    return hashlib.sha256(doc.encode()).hexdigest()


def _jsonable(value: object) -> object:
    if isinstance(value, (tuple, set, frozenset)):
        return sorted(value) if isinstance(value, (set, frozenset)) else list(value)
    if isinstance(value, bytes):
        return hashlib.sha256(value).hexdigest()
    raise TypeError(f"not part of a cache key: {type(value).__name__}")


def chain_of(platform: str, diff_ids: list[str]) -> str:
    """The identity of a filesystem state: its platform and layer diff_ids, bottom first."""
    return hashlib.sha256((platform + "\n" + "\n".join(diff_ids)).encode()).hexdigest()


class LayerCache:
    """Lookups and records of step results; ``enabled`` is False without --layers or with
    --no-cache, and then executors compute no key (no file is hashed)."""

    def __init__(self, store: Store, root: Path, *, layers: bool, no_cache: bool,
                 remote: "RemoteCache | None" = None) -> None:
        self.store, self.dir = store, Path(root) / "cache"
        self.enabled = layers and not no_cache
        #: --cache-from/--cache-to (builder.image.remotecache): asked after a local miss, told every put
        self.remote = remote

    def get(self, key: str) -> tuple[Layer | None] | None:
        """``(layer,)`` (``(None,)`` for a step that changed nothing) on a hit, None on a miss."""
        if not self.enabled:
            return None
        try:
            entry = json.loads((self.dir / key).read_text())
        except (OSError, ValueError):
            entry = None
        if entry is None or (entry.get("layer") and not self.store.has_blob(entry["layer"]["digest"])):
            hit = self.remote.lookup(key) if self.remote is not None else None
            if hit is not None:
                self._write(key, hit[0])
            return hit
        if not entry.get("layer"):
            return (None,)
        desc = Descriptor.from_json(entry["layer"])
        if not self.store.has_blob(desc.digest):
            return None
        return (Layer(desc, entry["diff_id"]),)

    def put(self, key: str, layer: Layer | None) -> None:
        if not self.enabled:
            return
        self._write(key, layer)
        if self.remote is not None:
            self.remote.record(key, layer)

    def _write(self, key: str, layer: Layer | None) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        data = {"layer": layer.descriptor.to_json() if layer else None, "diff_id": layer.diff_id if layer else None}
        tmp = self.dir / f".{key}.{os.getpid()}.{threading.get_ident()}.tmp"
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.dir / key)


class FileDigests:
    """SHA-256 of file contents, remembered by (path, size, mtime_ns, ino, ctime_ns).

    Thread-safe; the database is opened lazily, so a build with caching off never creates it.
    A file whose stat changed (content rewritten, touched, replaced) is read again.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self.reads = 0  # files actually read (for tests and the debug log)
        self._pending: dict[str, str] = {}  # read, not yet written

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=OFF")  # a cache: a lost write only costs a re-read
            db.execute("CREATE TABLE IF NOT EXISTS digests (k TEXT PRIMARY KEY, sha256 TEXT NOT NULL)")
            db.execute("CREATE TABLE IF NOT EXISTS trees (k TEXT PRIMARY KEY, sha256 TEXT NOT NULL)")
            self._db = db
        return self._db

    def digest(self, path: Path | str, st: os.stat_result, *, name: str | None = None,
               opener: Callable[[str], int] | None = None) -> str:
        """The content digest (sha256 hex) of the regular file ``path`` whose lstat is ``st``.
        ``name`` replaces the absolute path in the key where that path is not stable (a file of a
        snapshot, mounted at a new place by every build: its name in the rootfs, and the store's
        device); ``opener`` (an ``os.open``-like function returning an fd) opens it to read."""
        where = name if name is not None else os.path.abspath(path)
        k = f"{where}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\0{st.st_ctime_ns}"
        with self._lock:
            if k in self._pending:
                return self._pending[k]
            try:
                row = self._conn().execute("SELECT sha256 FROM digests WHERE k = ?", (k,)).fetchone()
            except sqlite3.Error:
                row = None
        if row is not None:
            return str(row[0])
        h = hashlib.sha256()
        with safepath.reach(path) as reached, \
                (os.fdopen(opener(reached), "rb") if opener else open(reached, "rb")) as fh:  # any length
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        value = h.hexdigest()
        with self._lock:
            self.reads += 1
            self._pending[k] = value
            if len(self._pending) >= 4096:
                self._flush()
        return value

    def _flush(self) -> None:
        """Write the pending digests in one transaction (caller holds the lock)."""
        if not self._pending:
            return
        rows, self._pending = list(self._pending.items()), {}
        try:
            db = self._conn()
            with db:
                db.execute("BEGIN")
                db.executemany("INSERT OR REPLACE INTO digests (k, sha256) VALUES (?, ?)", rows)
        except sqlite3.Error:
            pass  # a cache: a locked or read-only database only costs a re-read next time

    def tree_get(self, key: str) -> str | None:
        """A remembered subtree digest (``key``: the source chain and the patterns, hashed)."""
        with self._lock:
            try:
                row = self._conn().execute("SELECT sha256 FROM trees WHERE k = ?", (key,)).fetchone()
            except sqlite3.Error:
                return None
        return str(row[0]) if row is not None else None

    def tree_put(self, key: str, value: str) -> None:
        with self._lock:
            try:
                self._conn().execute("INSERT OR REPLACE INTO trees (k, sha256) VALUES (?, ?)", (key, value))
            except sqlite3.Error:
                pass

    def close(self) -> None:
        """Write what is pending and close the database."""
        with self._lock:
            self._flush()
            if self._db is not None:
                self._db.close()
                self._db = None
