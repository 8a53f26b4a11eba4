"""What to run in the sandbox: plain data shared by every isolation (specs go to the child by
fork; results come back as JSON, see wire.py)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class BindSpec:
    """A mount for one command: a host path bound in (``type="bind"``), a tmpfs, or a secret.

    The sandbox never binds live data writable unless ``shared`` says so: a writable bind
    (``readonly=False``) that is not shared gets a copy-on-write view whose writes are thrown
    away after the command (BuildKit's rw bind). Only cache mounts (and ``bale run -v``) are
    shared. A secret carries its bytes in ``data``; the sandbox puts them on a tmpfs of its own
    mount namespace (memory) with ``mode`` and ``uid``/``gid``, never in a file on disk.
    """

    source: str
    dest: str
    readonly: bool = False
    type: str = "bind"  # bind | tmpfs | secret
    options: tuple[str, ...] = ()
    #: when set, ``source`` is a path inside this root, resolved with chroot semantics at mount time
    #: (another stage's rootfs: its symlinks must not reach the host)
    within: str = ""
    #: writes reach the source (cache mounts); otherwise a writable bind is copy-on-write
    shared: bool = False
    #: type="secret": the secret's bytes, file mode and owner inside the container
    data: bytes = field(default=b"", repr=False)
    mode: int = 0o400
    uid: int = 0
    gid: int = 0

    def host_source(self) -> str:
        if not self.within:
            return self.source
        from snapshotter.safepath import secure_join
        return str(secure_join(self.within, self.source))


@dataclass
class ProcessSpec:
    args: list[str]
    env: list[str]
    cwd: str = "/"
    user: str = ""  # USER[:GROUP] resolved against the image's /etc/passwd and /etc/group
    hostname: str = "bale"
    network: str = "host"  # host | none
    mounts: list[BindSpec] = field(default_factory=list)
    #: None inherits bale's stdin, b"" gives /dev/null, other bytes are fed through a pipe
    stdin_data: bytes | None = b""
    extra_hosts: list[str] = field(default_factory=list)
    #: files of /dev/pipes, NAME -> content: each 0755 on a read-only mount of its own that never
    #: reaches the rootfs (a RUN heredoc script with a ``#!`` line, run by its path as BuildKit does)
    pipes: dict[str, bytes] = field(default_factory=dict, repr=False)


@dataclass
class RunResult:
    status: int  # exit status, 128+N when killed by signal N
    #: container paths the sandbox created as mountpoints; the diff drops them if still empty
    created_paths: list[str] = field(default_factory=list)

    def to_plain(self) -> dict[str, object]:
        return {"status": self.status, "created_paths": list(self.created_paths)}

    @classmethod
    def from_plain(cls, doc: object) -> "RunResult":
        """From ``to_plain``'s shape; SandboxError for anything else."""
        from builder.errors import SandboxError
        if (not isinstance(doc, dict) or not isinstance(doc.get("status"), int)
                or not isinstance(doc.get("created_paths"), list)
                or not all(isinstance(p, str) for p in doc["created_paths"])):
            raise SandboxError("run: malformed result from the namespace child")
        return cls(int(doc["status"]), list(doc["created_paths"]))
