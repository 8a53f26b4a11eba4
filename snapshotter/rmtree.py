"""``rm -rf`` for trees of any depth: iterative, through directory file descriptors.

``shutil.rmtree`` recurses once per level (RecursionError past about a thousand levels, which
a hostile context or RUN can create) and joins ever longer paths (ENAMETOOLONG past PATH_MAX).
This walks with an explicit stack of directory fds opened with O_NOFOLLOW relative to their
parent, so no path is longer than one name. At most ``KEEP_OPEN`` levels (fewer under a low
open-file limit) keep their fd; a higher
level's fd is closed and reopened through ``..`` of its child when the walk climbs back, so
any depth works within the open-file limit. Symlinks are
removed, never followed. A directory that denies its owner write or search access is made
0700 first (we run as the tree's owner, or as root in the namespace that owns it).
"""
from __future__ import annotations

import errno
import os
import resource
import stat

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
KEEP_OPEN = 128


def _open_dir(name: str, parent: int | None) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except PermissionError:
        os.chmod(name, 0o700, dir_fd=parent, follow_symlinks=False) if parent is None else \
            os.chmod(name, 0o700, dir_fd=parent)
        return os.open(name, _DIR_FLAGS, dir_fd=parent)


def remove_tree(path: str | os.PathLike[str], *, dir_fd: int | None = None) -> int:
    """Remove ``path`` (a file, symlink or directory tree); a missing path is no error. With
    ``dir_fd``, ``path`` is one name in that directory (nothing on the way is followed).
    Returns the bytes freed (sizes of what was removed, directories excluded).
    Raises OSError for anything else that cannot be removed."""
    path = os.fspath(path)
    try:
        st = os.lstat(path, dir_fd=dir_fd)
    except FileNotFoundError:
        return 0
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path, dir_fd=dir_fd)
        return st.st_size
    freed = 0
    keep_open = max(4, min(KEEP_OPEN, resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 4))
    if dir_fd is not None:
        top, base = path, os.dup(dir_fd)
    else:
        parent_dir, top = os.path.split(os.path.abspath(path))
        base = os.open(parent_dir, _DIR_FLAGS)
    # stack of (fd of a directory being emptied, its name in the parent below it)
    stack: list[tuple[int | None, str]] = []
    try:
        stack.append((_open_dir(top, base), top))
        while stack:
            top_fd, top_name = stack[-1]
            assert top_fd is not None
            fd = top_fd
            descended = False
            with os.scandir(fd) as it:
                for entry in it:
                    try:
                        is_dir = entry.is_dir(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if is_dir:
                        try:
                            child = _open_dir(entry.name, fd)
                        except FileNotFoundError:
                            continue
                        try:
                            os.fchmod(child, 0o700)
                        except OSError:
                            pass
                        stack.append((child, entry.name))
                        if len(stack) > keep_open:
                            old_fd, old_name = stack[-keep_open - 1]
                            if old_fd is not None:
                                os.close(old_fd)
                                stack[-keep_open - 1] = (None, old_name)
                        descended = True
                        break
                    try:
                        freed += entry.stat(follow_symlinks=False).st_size
                        os.unlink(entry.name, dir_fd=fd)
                    except FileNotFoundError:
                        pass
                    except PermissionError:
                        os.fchmod(fd, 0o700)
                        os.unlink(entry.name, dir_fd=fd)
            if descended:
                continue
            _, name = stack.pop()
            if stack and stack[-1][0] is None:
                stack[-1] = (os.open("..", _DIR_FLAGS, dir_fd=fd), stack[-1][1])
            os.close(fd)
            parent_fd = stack[-1][0] if stack else base
            assert parent_fd is not None
            parent = parent_fd
            try:
                os.rmdir(name, dir_fd=parent)
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno != errno.ENOTEMPTY:
                    raise
                # something was added meanwhile: empty it again
                stack.append((_open_dir(name, parent), name))
        return freed
    finally:
        for open_fd, _ in stack:
            if open_fd is not None:
                os.close(open_fd)
        os.close(base)
