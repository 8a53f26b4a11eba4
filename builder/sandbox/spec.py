"""What to run in the sandbox: plain picklable data shared by every isolation."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class BindSpec:
    """A mount for one command: a host path bound in (``type="bind"``) or a tmpfs."""

    source: str
    dest: str
    readonly: bool = False
    type: str = "bind"  # bind | tmpfs
    options: tuple[str, ...] = ()
    #: when set, ``source`` is a path inside this root, resolved with chroot semantics at mount time
    #: (another stage's rootfs: its symlinks must not reach the host)
    within: str = ""

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


@dataclass
class RunResult:
    status: int  # exit status, 128+N when killed by signal N
    #: container paths the sandbox created as mountpoints; the diff drops them if still empty
    created_paths: list[str] = field(default_factory=list)
