""".dockerignore as BuildKit applies it (moby/patternmatcher, tonistiigi/fsutil filter.go).

The pattern tables are the vectors of patternmatcher_test.go (TestMatches, TestMatch
with Go's filepath.Match vectors, TestCompile); the walk rule is fsutil filter.go:268-288.
"""
import time

import pytest

from frontend.dockerignore import Matcher, ignore_file_for, load_ignore, read_patterns
from frontend.errors import FrontendError
from frontend.goregexp import PatternError
from frontend.patterns import compile_pattern, go_regex

CASES = [
    # patterns, path, excluded (bale's earlier table, re-checked against patternmatcher)
    ("*.log", "a.log", True),
    ("*.log", "dir/a.log", False),
    ("*/*.log", "dir/a.log", True),
    ("**/*.log", "dir/sub/a.log", True),
    ("**/*.log", "a.log", True),
    ("build", "build", True),
    ("build", "build/out/x", True),
    ("build", "src/build", False),
    ("**/build", "src/build", True),
    ("**/build", "src/build/x", True),
    ("/build", "build/x", True),
    ("./build", "build/x", True),
    ("build/", "build/x", True),
    ("a?c", "abc", True),
    ("a?c", "abbc", False),
    ("[ab]x", "ax", True),
    ("[ab]x", "cx", False),
    # "[" and "]" go to Go's regexp as they are (patternmatcher.go:420): "!" is a member, not a negation
    ("[!ab]x", "cx", False),
    ("[!ab]x", "!x", True),
    ("[^ab]x", "ax", False),
    ("[^ab]x", "cx", True),
    ("*.md\n!README.md", "README.md", False),
    ("*.md\n!README.md", "CHANGES.md", True),
    ("!README.md\n*.md", "README.md", True),
    ("docs\n!docs/keep", "docs/keep", False),
    ("docs\n!docs/keep", "docs/drop", True),
    ("docs/*\n!docs/keep/**", "docs/keep/a/b", False),
    ("# comment\nfoo", "foo", True),
    ("# comment", "# comment", False),
    (" # not a comment", "# not a comment", True),  # ignorefile.go:43: only a # in column 1
    ("", "anything", False),
    ("   spaced.txt   ", "spaced.txt", True),
    ("dir/**", "dir/a/b", True),
    ("dir/**", "dir", False),
    ("**", "x/y", True),
    ("*", "x", True),
    ("*", "x/y", True),
    ("a/*/c", "a/b/c", True),
    ("a/*/c", "a/b/d/c", False),
    ("a/**/c", "a/b/d/c", True),
    ("a/**/c", "a/c", True),
    ("\\*literal", "*literal", True),
    ("\\*literal", "xliteral", False),
    (".git", ".git/HEAD", True),
    ("node_modules\n!node_modules/keep.js", "node_modules/keep.js", False),
    ("*.tmp\n!important.tmp\nimportant.tmp", "important.tmp", True),
    ("*\n!test*\ntest1.txt", "test1.txt", True),  # issue 8 class 2
    ("*\n!test*\ntest1.txt", "test2.txt", False),
    ("\ufeffbom.txt", "bom.txt", True),  # ignorefile.go:37 BOM on the first line
    ("a/../b", "b", True),  # ignorefile.go:57 filepath.Clean
]


@pytest.mark.parametrize("patterns,path,excluded", CASES)
def test_matching(patterns, path, excluded):
    assert Matcher.from_text(patterns).excluded(path) is excluded


PATTERNMATCHER = [  # patternmatcher_test.go TestMatches
    ("**", "file", True), ("**", "file/", True), ("**/", "file", True), ("**/", "file/", True),
    ("**", "/", True), ("**/", "/", True), ("**", "dir/file", True), ("**/", "dir/file", True),
    ("**", "dir/file/", True), ("**/", "dir/file/", True), ("**/**", "dir/file", True),
    ("**/**", "dir/file/", True), ("dir/**", "dir/file", True), ("dir/**", "dir/file/", True),
    ("dir/**", "dir/dir2/file", True), ("dir/**", "dir/dir2/file/", True), ("**/dir", "dir", True),
    ("**/dir", "dir/file", True), ("**/dir2/*", "dir/dir2/file", True), ("**/dir2/*", "dir/dir2/file/", True),
    ("**/dir2/**", "dir/dir2/dir3/file", True), ("**/dir2/**", "dir/dir2/dir3/file/", True),
    ("**file", "file", True), ("**file", "dir/file", True), ("**/file", "dir/file", True),
    ("**file", "dir/dir/file", True), ("**/file", "dir/dir/file", True), ("**/file*", "dir/dir/file", True),
    ("**/file*", "dir/dir/file.txt", True), ("**/file*txt", "dir/dir/file.txt", True),
    ("**/file*.txt", "dir/dir/file.txt", True), ("**/file*.txt*", "dir/dir/file.txt", True),
    ("**/**/*.txt", "dir/dir/file.txt", True), ("**/**/*.txt2", "dir/dir/file.txt", False),
    ("**/*.txt", "file.txt", True), ("**/**/*.txt", "file.txt", True), ("a**/*.txt", "a/file.txt", True),
    ("a**/*.txt", "a/dir/file.txt", True), ("a**/*.txt", "a/dir/dir/file.txt", True),
    ("a/*.txt", "a/dir/file.txt", False), ("a/*.txt", "a/file.txt", True), ("a/*.txt**", "a/file.txt", True),
    ("a[b-d]e", "ae", False), ("a[b-d]e", "ace", True), ("a[b-d]e", "aae", False), ("a[^b-d]e", "aze", True),
    (".*", ".foo", True), (".*", "foo", False), ("abc.def", "abcdef", False), ("abc.def", "abc.def", True),
    ("abc.def", "abcZdef", False), ("abc?def", "abcZdef", True), ("abc?def", "abcdef", False),
    ("a\\\\", "a\\", True), ("**/foo/bar", "foo/bar", True), ("**/foo/bar", "dir/foo/bar", True),
    ("**/foo/bar", "dir/dir2/foo/bar", True), ("abc/**", "abc", False), ("abc/**", "abc/def", True),
    ("abc/**", "abc/def/ghi", True), ("**/.foo", ".foo", True), ("**/.foo", "bar.foo", False),
    ("a(b)c/def", "a(b)c/def", True), ("a(b)c/def", "a(b)c/xyz", False), ("a.|)$(}+{bc", "a.|)$(}+{bc", True),
    ("dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
     "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", True),
    ("dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", True),
    ("a\\*b", "a*b", True),
    # Go's filepath.Match vectors (patternmatcher_test.go matchTests)
    ("abc", "abc", True), ("*", "abc", True), ("*c", "abc", True), ("a*", "a", True), ("a*", "abc", True),
    ("a*", "ab/c", True), ("a*/b", "abc/b", True), ("a*/b", "a/c/b", False),
    ("a*b*c*d*e*/f", "axbxcxdxe/f", True), ("a*b*c*d*e*/f", "axbxcxdxexxx/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", False), ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", False),
    ("a*b?c*x", "abxbbxdbxebxczzx", True), ("a*b?c*x", "abxbbxdbxebxczzy", False), ("ab[c]", "abc", True),
    ("ab[b-d]", "abc", True), ("ab[e-g]", "abc", False), ("ab[^c]", "abc", False), ("ab[^b-d]", "abc", False),
    ("ab[^e-g]", "abc", True), ("a\\*b", "ab", False), ("a?b", "a☺b", True), ("a[^a]b", "a☺b", True),
    ("a???b", "a☺b", False), ("a[^a][^a][^a]b", "a☺b", False), ("[a-ζ]*", "α", True), ("*[a-ζ]", "A", False),
    ("a?b", "a/b", False), ("a*b", "a/b", False), ("[\\]a]", "]", True), ("[\\-]", "-", True),
    ("[x\\-]", "x", True), ("[x\\-]", "-", True), ("[x\\-]", "z", False), ("[\\-x]", "x", True),
    ("[\\-x]", "-", True), ("[\\-x]", "a", False), ("*x", "xxx", True),
]


@pytest.mark.parametrize("pattern,path,matched", PATTERNMATCHER)
def test_patternmatcher_vectors(pattern, path, matched):
    assert Matcher([pattern]).matches(path) is matched


@pytest.mark.parametrize("patterns,path,matched", [  # patternmatcher_test.go multiPatternTests
    (["**", "!util/docker/web"], "util/docker/web/foo", False),
    (["**", "!util/docker/web", "util/docker/web/foo"], "util/docker/web/foo", True),
    (["**", "!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl"],
     "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", False),
    (["**", "!dist/*.whl"], "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", False),
    (["docs", "!docs/README.md"], "docs/README.md", False),
    (["docs/", "!docs/README.md"], "docs/README.md", False),
    (["docs/*", "!docs/README.md"], "docs/README.md", False),
    (["!fileutils.go", "*.go"], "fileutils.go", True),
    (["*.go", "!fileutils.go"], "fileutils.go", False),
])
def test_several_patterns(patterns, path, matched):
    assert Matcher(patterns).matches(path) is matched


@pytest.mark.parametrize("pattern", [  # Go's ErrBadPattern (patternmatcher_test.go matchTests)
    "[]a]", "[-]", "[x-]", "[-x]", "\\", "[a-b-c]", "[", "[^", "[^bc", "a[",
    "[Local-Only]/",  # passes filepath.Match, Go's regexp refuses the range l-O (moby/moby#52203)
    "a\\q",  # regexp: invalid escape sequence
])
def test_bad_patterns(pattern):
    with pytest.raises(PatternError):
        compile_pattern(pattern)


def test_bad_pattern_is_one_line_naming_the_file(tmp_path):
    (tmp_path / ".dockerignore").write_text("ok\n# c\n[a\n")
    with pytest.raises(FrontendError) as exc:
        load_ignore(None, tmp_path)
    assert str(exc.value) == f"{tmp_path}/.dockerignore:3: invalid pattern '[a': syntax error in pattern"
    assert exc.value.exit_code == 2
    with pytest.raises(FrontendError, match=r'illegal exclusion pattern: "!"'):
        Matcher.from_text("a\n!\n")


@pytest.mark.parametrize("pattern,kind,regex", [  # patternmatcher_test.go compileTests
    ("*", "regexp", "^[^/]*$"), ("file*", "regexp", "^file[^/]*$"), ("*file", "regexp", "^[^/]*file$"),
    ("a*/b", "regexp", "^a[^/]*/b$"), ("**", "suffix", None), ("**/**", "regexp", "^(.*/)?.*$"),
    ("dir/**", "prefix", None), ("**/dir", "suffix", None), ("**/dir2/*", "regexp", "^(.*/)?dir2/[^/]*$"),
    ("**/dir2/**", "regexp", "^(.*/)?dir2/.*$"), ("**file", "suffix", None),
    ("**/file*txt", "regexp", "^(.*/)?file[^/]*txt$"), ("**/**/*.txt", "regexp", "^(.*/)?(.*/)?[^/]*\\.txt$"),
    ("a[b-d]e", "regexp", "^a[b-d]e$"), (".*", "regexp", "^\\.[^/]*$"), ("abc.def", "exact", None),
    ("abc?def", "regexp", "^abc[^/]def$"), ("**/foo/bar", "suffix", None), ("a(b)c/def", "exact", None),
    ("a.|)$(}+{bc", "exact", None),
])
def test_compiled_like_patternmatcher(pattern, kind, regex):
    got_kind, got_regex = go_regex(pattern)
    assert got_kind == kind
    if regex:
        assert got_regex == regex


@pytest.mark.parametrize("pattern,path,matched", [
    # what Go's regexp makes of what patternmatcher hands it
    ("a[*]b", "a]b", True), ("a[*]b", "a*b", False),  # [*] becomes [[^/]*]: the class {[,^,/} starred, then ]
    ("a^b", "a^b", True),  # exact: no regexp
    ("x\\d", "x5", True), ("x\\d", "xd", False),  # \d reaches the regexp as a digit class
    ("[[:alpha:]]x", "ax", True), ("[[:alpha:]]x", ":x", False),
])
def test_go_regexp_semantics(pattern, path, matched):
    assert Matcher([pattern]).matches(path) is matched


def test_no_backtracking():
    """issue 12 item 4: repeated ** and stars are matched in linear time (a lazily built DFA)."""
    cases = [("/".join(["**"] * 60) + "/b", "a/" + "x/" * 3000 + "c", False),
             ("*a*a*a*a*a*a*a*a*a*a*a*a*b", "a" * 5000, False),
             ("**/" * 200 + "*x*x*x*x*x*y", "x" * 5000, False),
             ("*a*a*a*a*a*a*a*a*a*a*a*a*b", "a" * 3000 + "b", True)]
    t0 = time.monotonic()
    for pattern, path, matched in cases:
        assert compile_pattern(pattern).match(path) is matched
    m = Matcher([c[0] for c in cases])
    assert m.excluded("a/" + "x/" * 200 + "b") and not m.excluded("x/" * 200 + "c")
    assert time.monotonic() - t0 < 5


def test_read_patterns_as_ignorefile_reads_them():  # ignorefile.go:24-73
    text = "\ufeff# comment\n  spaced  \n! keep\n/abs/../path\n\n#x\n  #not-comment\n"
    assert read_patterns(text) == [(2, "spaced"), (3, "!keep"), (4, "path"), (7, "#not-comment")]


def _tree(root, files):
    for f in files:
        p = root / f
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f)


def test_walk_rule_wildcard_exception_walks_everything(tmp_path):
    """fsutil filter.go:132-136, 268-288: "subdir" then "!*/sub1*": an exception with a wildcard
    makes every directory walked, so subdir/sub1.txt stays (the classic builder and buildah drop it)."""
    _tree(tmp_path, ["subdir/sub1.txt", "subdir/sub2.txt", "other.txt"])
    m = Matcher.from_text("subdir\n!*/sub1*\n")
    assert not m.only_prefix_exceptions and m.may_contain_exceptions("subdir")
    assert not m.hides(tmp_path, "subdir/sub1.txt") and m.hides(tmp_path, "subdir/sub2.txt")
    assert not m.hides(tmp_path, "subdir")  # present: a kept file brings its directory


def test_walk_rule_literal_exceptions_skip_unrelated_dirs(tmp_path):
    _tree(tmp_path, ["subdir/sub1.txt", "keep/x"])
    m = Matcher.from_text("subdir\nkeep\n!keep/x\n")
    assert m.only_prefix_exceptions
    assert not m.may_contain_exceptions("subdir") and m.may_contain_exceptions("keep")
    assert m.hides(tmp_path, "subdir") and m.hides(tmp_path, "subdir/sub1.txt")
    assert not m.hides(tmp_path, "keep") and not m.hides(tmp_path, "keep/x")
    assert Matcher.from_text("subdir\n").hides(tmp_path, "subdir/sub1.txt")  # no exceptions: skipped


def test_excluded_named_file_is_absent(tmp_path):
    """issue 8 class 2: "*", "!test*", "test1.txt": COPY test1.txt finds nothing."""
    _tree(tmp_path, ["test1.txt", "test2.txt", ".env"])
    m = Matcher.from_text("*\n!test*\ntest1.txt\n")
    assert m.hides(tmp_path, "test1.txt") and not m.hides(tmp_path, "test2.txt") and m.hides(tmp_path, ".env")
    assert not m.hides(tmp_path, ".")


def test_ignore_file_choice(tmp_path):
    df = tmp_path / "app.Dockerfile"
    assert ignore_file_for(df, tmp_path) is None
    (tmp_path / ".dockerignore").write_text("a")
    assert ignore_file_for(df, tmp_path) == tmp_path / ".dockerignore"
    (tmp_path / ".containerignore").write_text("b")  # buildah and podman read it first
    assert ignore_file_for(df, tmp_path) == tmp_path / ".containerignore"
    (tmp_path / "app.Dockerfile.dockerignore").write_text("c")  # BuildKit's NAME.dockerignore
    assert ignore_file_for(df, tmp_path) == tmp_path / "app.Dockerfile.dockerignore"
    other = tmp_path / "elsewhere.ignore"
    other.write_text("d")
    assert ignore_file_for(df, tmp_path, str(other)) == other  # --ignorefile wins
    with pytest.raises(FrontendError, match="no such file"):
        ignore_file_for(df, tmp_path, str(tmp_path / "missing"))


def test_ignore_file_not_utf8(tmp_path):
    (tmp_path / ".dockerignore").write_bytes(b"\xef\xbb\xbfcaf\xe9\r\nok\n")
    m = load_ignore(None, tmp_path)
    assert m.excluded(b"caf\xe9".decode("utf-8", "surrogateescape")) and m.excluded("ok")
    assert not m.excluded("cafe")
    (tmp_path / ".dockerignore").write_bytes(b"[\xff]\n")  # Go's filepath.Match: not UTF-8 is ErrBadPattern
    with pytest.raises(FrontendError, match=r"\.dockerignore:1: invalid pattern"):
        load_ignore(None, tmp_path)
