"""Id mappings for the user namespace: 0 → the user, 1..N → the subordinate
range from /etc/subuid and /etc/subgid (as podman maps them)."""
from __future__ import annotations

import os
import pwd
import shutil
from dataclasses import dataclass


@dataclass(frozen=True)
class IDMapping:
    container_id: int
    host_id: int
    size: int


@dataclass(frozen=True)
class IDMap:
    uids: tuple[IDMapping, ...]
    gids: tuple[IDMapping, ...]

    @property
    def full(self) -> bool:
        return sum(m.size for m in self.uids) > 1

    def to_host(self, uid: int) -> int:
        for m in self.uids:
            if m.container_id <= uid < m.container_id + m.size:
                return m.host_id + uid - m.container_id
        raise ValueError(f"uid {uid} is not mapped")

    def to_container(self, host_uid: int) -> int:
        """The container uid a host uid appears as; ValueError when it is outside the mapping."""
        for m in self.uids:
            if m.host_id <= host_uid < m.host_id + m.size:
                return m.container_id + host_uid - m.host_id
        raise ValueError(f"host uid {host_uid} is not mapped")

    def gid_to_host(self, gid: int) -> int:
        return IDMap(self.gids, self.gids).to_host(gid)

    def gid_to_container(self, host_gid: int) -> int:
        return IDMap(self.gids, self.gids).to_container(host_gid)


def subid_ranges(user: str, file: str = "/etc/subuid", uid: int | None = None) -> list[tuple[int, int]]:
    """(start, count) entries for ``user`` in a subid file; entries may name the user or its numeric
    uid (``uid``, looked up from the name when not given)."""
    if uid is None:
        try:
            uid = int(user) if user.isdigit() else pwd.getpwnam(user).pw_uid
        except KeyError:
            uid = -1
    path = file
    out = []
    try:
        with open(path) as fh:
            for line in fh:
                parts = line.strip().split(":")
                if len(parts) == 3 and parts[0] in (user, str(uid)):
                    try:
                        out.append((int(parts[1]), int(parts[2])))
                    except ValueError:
                        continue
    except OSError:
        pass
    return out


def default_idmap() -> IDMap:
    """0 -> this user, 1..N -> its subordinate ranges when it has them and newuidmap/newgidmap exist,
    else the single mapping 0 -> this user. (Real root uses no user namespace at all, like podman
    rootful: UserNamespace does not call this then.)"""
    uid, gid = os.getuid(), os.getgid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    subu = subid_ranges(name, "/etc/subuid", uid)
    subg = subid_ranges(name, "/etc/subgid", uid)
    if subu and subg and shutil.which("newuidmap") and shutil.which("newgidmap"):
        def build(self_id: int, ranges: list[tuple[int, int]]) -> tuple[IDMapping, ...]:
            maps, next_id = [IDMapping(0, self_id, 1)], 1
            for start, count in ranges:
                maps.append(IDMapping(next_id, start, count))
                next_id += count
            return tuple(maps)
        return IDMap(build(uid, subu), build(gid, subg))
    return IDMap((IDMapping(0, uid, 1),), (IDMapping(0, gid, 1),))


def identity_idmap(size: int = 65536) -> IDMap:
    """0..size-1 onto themselves: a user namespace for a container's root (ids and files as they are,
    without the capabilities of the outer namespace)."""
    return IDMap((IDMapping(0, 0, size),), (IDMapping(0, 0, size),))


def helper_args(pid: int, maps: tuple[IDMapping, ...]) -> list[str]:
    args = [str(pid)]
    for m in maps:
        args += [str(m.container_id), str(m.host_id), str(m.size)]
    return args
