"""USER resolution against the image's own /etc/passwd and /etc/group, read
confined to the rootfs (a symlinked /etc/passwd must not read the host's)."""
from __future__ import annotations

import re
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


#: moby/sys/user user.go maxID: "we require the UID to be <= MaxInt32" (GetExecUser's range)
MAX_ID = (1 << 31) - 1
#: the largest id the kernel takes: (uid_t)-1 means "leave unchanged" to setresuid(2)
KERNEL_MAX_ID = (1 << 32) - 2
_ATOI = re.compile(r"[+-]?[0-9]+", re.ASCII)  # Go's strconv.Atoi syntax
_UINT = re.compile(r"[0-9]+", re.ASCII)  # strconv.ParseUint syntax


def _atoi(text: str) -> int | None:
    return int(text) if _ATOI.fullmatch(text) else None


def _field(text: str) -> int:
    """A number field of /etc/passwd or /etc/group as moby/sys/user parseParts reads it:
    strconv.Atoi with the error ignored, so a non-numeric id is 0."""
    value = _atoi(text)
    return value if value is not None and -(1 << 63) <= value < 1 << 63 else 0


def _fast_ids(user: str) -> tuple[int, int] | None:
    """BuildKit's fast path (executor/oci/user.go ParseUIDGID): ``UID:GID`` both as
    strconv.ParseUint(s, 10, 32) (or ``root``) is taken as it is, no lookup."""
    name, sep, group = user.partition(":")
    if not sep:
        return None
    ids = []
    for part in (name, group):
        if part == "root":
            ids.append(0)
        elif _UINT.fullmatch(part) and int(part) < 1 << 32:
            ids.append(int(part))
        else:
            return None
    return ids[0], ids[1]


def resolve_user(rootfs: Path, user: str) -> tuple[int, int, list[int], str]:
    """(uid, gid, supplementary gids, home) for ``name``, ``uid``, ``uid:gid`` or ``name:group``,
    as BuildKit resolves a RUN's user (executor/oci/user.go GetUser, then moby/sys/user
    GetExecUser): ``UID:GID`` of two 32-bit numbers is taken as it is; otherwise a number is an
    id (Go's Atoi), in 0-2147483647 ("uids and gids must be in range 0-2147483647" otherwise),
    and a name is looked up in the image's /etc/passwd and /etc/group, where a field that is not
    a number reads as 0. The id 4294967295 ((uid_t)-1) is refused: setresuid would ignore it.
    Raises ContainerError (a missing name, an id out of range)."""
    user = (user or "").strip() or "0"
    passwd = _read_db(rootfs, "passwd")
    groups = _read_db(rootfs, "group")
    fast = _fast_ids(user)
    if fast is not None:
        if max(fast) > KERNEL_MAX_ID:
            raise ContainerError(f"user {user}: uids and gids must be in range 0-{KERNEL_MAX_ID}")
        entry = next((p for p in passwd if len(p) > 5 and _atoi(p[2]) == fast[0]), None)
        return fast[0], fast[1], [], entry[5] if entry else "/"
    name, _, group = user.partition(":")
    uid_arg, gid_arg = _atoi(name), _atoi(group)
    for arg in (uid_arg, gid_arg):
        if arg is not None and not 0 <= arg <= MAX_ID:  # user.go parseNumeric: ErrRange
            raise ContainerError(f"user {user}: uids and gids must be in range 0-{MAX_ID}")
    home = "/"
    if uid_arg is not None:
        uid = uid_arg
        entry = next((p for p in passwd if len(p) > 3 and _field(p[2]) == uid), None)
        gid = _field(entry[3]) if entry else 0
        if entry and len(entry) > 5:
            home = entry[5]
        uname = entry[0] if entry else None
    else:
        entry = next((p for p in passwd if p[0] == name and len(p) > 3), None)
        if entry is None:
            raise ContainerError(f"user {name} not found in /etc/passwd of the image")
        uid, gid, uname = _field(entry[2]), _field(entry[3]), name
        home = entry[5] if len(entry) > 5 else "/"
    if group:
        if gid_arg is not None:
            gid = gid_arg
        else:
            g = next((g for g in groups if g[0] == group and len(g) > 2), None)
            if g is None:
                raise ContainerError(f"group {group} not found in /etc/group of the image")
            gid = _field(g[2])
    for value in (uid, gid):
        if not 0 <= value <= KERNEL_MAX_ID:  # a negative or huge id in the image's files
            raise ContainerError(f"user {user}: uids and gids must be in range 0-{KERNEL_MAX_ID}")
    extra = []
    if uname and not group:
        for g in groups:
            if len(g) > 3 and uname in g[3].split(",") and _field(g[2]) != gid \
                    and 0 <= _field(g[2]) <= KERNEL_MAX_ID:
                extra.append(_field(g[2]))
    return uid, gid, extra, home
