"""USER resolution against the image's own /etc/passwd and /etc/group, read
confined to the rootfs (a symlinked /etc/passwd must not read the host's)."""
from __future__ import annotations

from pathlib import Path

from builder.errors import ContainerError


def _read_db(rootfs: Path, name: str) -> list[list[str]]:
    from snapshotter.safepath import PathEscape, secure_join
    try:
        text = secure_join(rootfs, f"/etc/{name}").read_text(errors="replace")
    except OSError:
        return []
    except PathEscape as exc:
        raise ContainerError(f"cannot read /etc/{name} of the image: {exc}") from None
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def resolve_user(rootfs: Path, user: str) -> tuple[int, int, list[int], str]:
    """(uid, gid, supplementary gids, home) for ``name``, ``uid``, ``uid:gid`` or ``name:group``."""
    user = (user or "").strip() or "0"
    name, _, group = user.partition(":")
    passwd = _read_db(rootfs, "passwd")
    groups = _read_db(rootfs, "group")
    home = "/"
    if name.isdigit():
        uid = int(name)
        entry = next((p for p in passwd if len(p) > 3 and p[2] == name), None)
        gid = int(entry[3]) if entry and entry[3].isdigit() else 0
        if entry and len(entry) > 5:
            home = entry[5]
        uname = entry[0] if entry else None
    else:
        entry = next((p for p in passwd if p[0] == name and len(p) > 3), None)
        if entry is None:
            raise ContainerError(f"user {name} not found in /etc/passwd of the image")
        uid, gid, uname = int(entry[2]), int(entry[3]), name
        home = entry[5] if len(entry) > 5 else "/"
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            g = next((g for g in groups if g[0] == group and len(g) > 2), None)
            if g is None:
                raise ContainerError(f"group {group} not found in /etc/group of the image")
            gid = int(g[2])
    extra = []
    if uname and not group:
        for g in groups:
            if len(g) > 3 and uname in g[3].split(",") and g[2].isdigit() and int(g[2]) != gid:
                extra.append(int(g[2]))
    return uid, gid, extra, home
