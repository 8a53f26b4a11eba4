""".dockerignore as BuildKit applies it to the build context.

- Reading (moby/patternmatcher ignorefile/ignorefile.go:24-73 ``ReadAll``): a
  UTF-8 BOM is dropped, a line whose first character is ``#`` is a comment,
  blanks around a pattern (and after ``!``) are trimmed, the pattern is
  cleaned (filepath.Clean) and a leading ``/`` removed.
- Matching (patternmatcher.go ``MatchesUsingParentResults`` :216-272, as
  fsutil's walker calls it, tonistiigi/fsutil filter.go:254-292): patterns are
  applied in order, the last one that matches decides; a directory's result is
  carried to what is under it.
- Walking (fsutil filter.go:98-138, 268-288): an excluded directory is skipped
  (with everything under it) unless some ``!`` exception could keep something
  inside: when no exception holds a pattern character (``*[]?^\\``, a
  trailing ``/*`` or ``/**`` aside) only exceptions starting with the
  directory's path count; when one does, every directory is walked.

An excluded path is not in the context: a COPY naming it fails as if it did
not exist (``Matcher.hides``). Pattern errors are FrontendError naming the
file and line.
"""
from __future__ import annotations

import os
import posixpath
from pathlib import Path

from frontend.errors import FrontendError
from frontend.goregexp import PatternError
from frontend.patterns import Pattern, compile_pattern, go_clean

_PATTERN_CHARS = "*[]?^\\"  # fsutil filter.go:98-101
_SPACE = " \t\n\r\v\f\x85\xa0"


def read_patterns(text: str) -> list[tuple[int, str]]:
    """ignorefile.ReadAll: (line number, pattern) pairs, ``!`` kept in front of exceptions."""
    out = []
    for n, line in enumerate(text.split("\n"), 1):
        if n == 1 and line.startswith("\ufeff"):
            line = line[1:]
        if line.startswith("#"):
            continue
        pattern = line.strip(_SPACE)
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip(_SPACE)
        if pattern:
            pattern = go_clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        out.append((n, "!" + pattern if invert else pattern))
    return out


def _without_trailing_glob(text: str) -> str:
    """fsutil filter.go:417 patternWithoutTrailingGlob."""
    for suffix in ("/**", "/*"):
        if text.endswith(suffix):
            text = text[:-len(suffix)]
    return text


class Matcher:
    """The exclusion rules of one ignore file (or of COPY --exclude patterns).

    Paths are relative to the context, ``/``-separated; ``excluded`` and the callable
    form answer whether the walk leaves the path out."""

    def __init__(self, lines: list[str], filename: str = ".dockerignore",
                 numbered: list[tuple[int, str]] | None = None) -> None:
        self.filename = filename
        self.patterns: list[Pattern] = []
        for n, text in numbered if numbered is not None else list(enumerate(lines, 1)):
            try:
                p = compile_pattern(text)
            except PatternError as exc:
                shown = text if len(text) <= 80 else text[:77] + "..."
                raise FrontendError(f"invalid pattern {shown!r}: {exc}", filename=filename, line=n) from None
            if p is not None:
                self.patterns.append(p)
        self.exceptions = [p for p in self.patterns if p.exclusion]
        self.only_prefix_exceptions = not any(any(c in _without_trailing_glob(p.text) for c in _PATTERN_CHARS)
                                              for p in self.exceptions)
        self._dirs: dict[str, tuple[bool, tuple[bool, ...], bool]] = {}

    @classmethod
    def from_text(cls, text: str, filename: str = ".dockerignore") -> "Matcher":
        """An ignore file's text (surrogate-escaped bytes that are not UTF-8 are allowed)."""
        return cls([], filename, read_patterns(text))

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def _match(self, path: str, parent: tuple[bool, ...] | None) -> tuple[bool, tuple[bool, ...]]:
        """patternmatcher.go:216 MatchesUsingParentResults."""
        matched = False
        info = []
        parent_dirs: list[str] | None = None
        for i, p in enumerate(self.patterns):
            m = parent[i] if parent else False
            if not m:
                if p.exclusion != matched:
                    info.append(False)
                    continue
                m = p.match(path)
                if not m and not parent and "/" in path:  # no parent results: check every parent dir
                    if parent_dirs is None:
                        parts = path.split("/")[:-1]
                        parent_dirs = ["/".join(parts[:j + 1]) for j in range(len(parts))]
                    m = any(p.match(d) for d in parent_dirs)
            info.append(m)
            if m:
                matched = not p.exclusion
        return matched, tuple(info)

    def matches(self, path: str) -> bool:
        """patternmatcher's answer for ``path`` as given, its parent directories (filepath.Dir)
        matched first and their results carried: MatchesUsingParentResults as fsutil calls it."""
        slash = path.rfind("/")
        parent = go_clean(path[:slash + 1]) if slash >= 0 else "."
        info: tuple[bool, ...] | None = None
        if parent != ".":
            dirs = parent.split("/")
            for i in range(len(dirs)):
                info = self._match("/".join(dirs[:i + 1]), info)[1]
        return self._match(path, info)[0]

    def _dir(self, rel: str) -> tuple[bool, tuple[bool, ...], bool]:
        """(excluded, match info, skipped with all under it) of a directory on the walk."""
        got = self._dirs.get(rel)
        if got is not None:
            return got
        parent = posixpath.dirname(rel)
        pinfo: tuple[bool, ...] | None = None
        if parent:
            pexcl, pinfo, pskip = self._dir(parent)
            if pskip:
                got = (True, pinfo, True)
                self._dirs[rel] = got
                return got
        m, info = self._match(rel, pinfo)
        got = (m, info, m and not self.may_contain_exceptions(rel))
        if len(self._dirs) < 100_000:
            self._dirs[rel] = got
        return got

    def excluded(self, rel: str, is_dir: bool = False) -> bool:
        """Whether the walk leaves ``rel`` out: it matches, or a directory above it was skipped."""
        rel = _clean(rel)
        if not rel or not self.patterns:
            return False
        parent = posixpath.dirname(rel)
        pinfo = None
        if parent:
            _, pinfo, pskip = self._dir(parent)
            if pskip:
                return True
        return self._match(rel, pinfo)[0]

    def __call__(self, rel: str, is_dir: bool = False) -> bool:
        return self.excluded(rel, is_dir)

    def may_contain_exceptions(self, dir_rel: str) -> bool:
        """Whether an excluded directory is still walked (fsutil filter.go:268-288)."""
        if not self.only_prefix_exceptions:
            return True
        prefix = _clean(dir_rel) + "/"
        return any((_without_trailing_glob(p.text) + "/").startswith(prefix) for p in self.exceptions)

    def hides(self, context: Path, rel: str) -> bool:
        """Whether ``rel`` is absent from the context BuildKit sends: it is excluded and, for a
        directory, nothing under it is kept (a kept file brings its parent directories along,
        fsutil filter.go:336-374)."""
        rel = _clean(rel)
        if not self.excluded(rel):
            return False
        top = _scan(os.path.join(context, rel), rel)
        if top is None or not self.may_contain_exceptions(rel) or self._dir(rel)[2]:
            return True
        # an explicit stack, each directory listed through directory fds: a context may be
        # deeper than the recursion limit and than PATH_MAX
        stack = [(rel, top)]
        while stack:
            base, entries = stack.pop()
            for name, is_dir in sorted(entries):
                sub = f"{base}/{name}"
                if not self.excluded(sub):
                    return False
                if is_dir and not self._dir(sub)[2]:
                    listed = _scan(os.path.join(context, sub), sub)
                    if listed is not None:
                        stack.append((sub, listed))
        return True


#: paths at least this long (bytes) are opened in hops through directory fds (PATH_MAX is 4096)
_LONG_PATH = 3584


def _scan(path: str, rel: str) -> list[tuple[str, bool]] | None:
    """(name, is a directory (a symlink is not)) for each entry of the directory ``path`` (of any
    length), None when ``path`` is a symlink, not a directory or cannot be listed (os.walk
    skips those too)."""
    raw = os.fsencode(path)
    fds: list[int] = []
    try:
        while len(raw) >= _LONG_PATH:
            cut = raw.rfind(b"/", 0, _LONG_PATH)
            if cut <= 0:
                return None
            fds.append(os.open(raw[:cut], os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC,
                               dir_fd=fds[-1] if fds else None))
            raw = raw[cut + 1:]
        fd = os.open(raw, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                     dir_fd=fds[-1] if fds else None)
        fds.append(fd)
        with os.scandir(fd) as it:
            return [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
    except OSError:
        return None
    finally:
        for fd in fds:
            os.close(fd)


def _clean(rel: str) -> str:
    rel = go_clean(rel.replace(os.sep, "/"))
    while rel.startswith("/"):
        rel = rel[1:]
    return "" if rel == "." else rel


def ignore_file_for(dockerfile: Path | None, context: Path, ignorefile: str | None = None, *,
                    unpacked: bool = False) -> Path | None:
    """The ignore file of a build, first found of: ``--ignorefile`` (must exist), NAME.containerignore
    or NAME.dockerignore beside a Dockerfile called NAME (BuildKit's dockerui), CONTEXT/.containerignore
    (buildah and podman read it first), CONTEXT/.dockerignore. In a context ``unpacked`` from an
    archive or cloned, a candidate whose symlinks lead out of the context is not read (BuildKit
    reads it inside the context: an archive's .dockerignore linked to a host file must not read
    that file). Raises FrontendError when ``ignorefile`` is not a readable file."""
    if ignorefile:
        path = Path(ignorefile)
        if not path.is_file():
            err = FrontendError("no such file (--ignorefile)", filename=ignorefile)
            raise err
        return path
    candidates = []
    if dockerfile is not None:
        candidates += [dockerfile.parent / (dockerfile.name + ext) for ext in (".containerignore", ".dockerignore")]
    candidates += [context / ".containerignore", context / ".dockerignore"]
    return next((c for c in candidates if c.is_file() and (not unpacked or _inside(c, context))), None)


def _inside(path: Path, context: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(context))


def load_ignore(dockerfile: Path | None, context: Path, ignorefile: str | None = None, *,
                unpacked: bool = False) -> Matcher:
    """The build's exclusion rules (an empty Matcher when there is no ignore file). Bytes that are
    not UTF-8 are kept as they are (surrogateescape); errors name the file and line, by its path
    in the context when the context was ``unpacked`` into a scratch directory (see ignore_file_for)."""
    path = ignore_file_for(dockerfile, context, ignorefile, unpacked=unpacked)
    if path is None:
        return Matcher([])
    shown = str(path.relative_to(context)) if unpacked and path.is_relative_to(context) else str(path)
    try:
        text = path.read_bytes().decode("utf-8", "surrogateescape")
    except OSError as exc:
        raise FrontendError(f"cannot read: {exc.strerror}", filename=shown) from None
    return Matcher.from_text(text, filename=shown)
