""".dockerignore matching (Docker's rules), as a table."""
import pytest

from frontend.dockerignore import Matcher, ignore_file_for

CASES = [
    # patterns, path, excluded
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
    ("[!ab]x", "cx", True),
    ("[^ab]x", "ax", False),
    ("*.md\n!README.md", "README.md", False),
    ("*.md\n!README.md", "CHANGES.md", True),
    ("!README.md\n*.md", "README.md", True),
    ("docs\n!docs/keep", "docs/keep", False),
    ("docs\n!docs/keep", "docs/drop", True),
    ("docs/*\n!docs/keep/**", "docs/keep/a/b", False),
    ("# comment\nfoo", "foo", True),
    ("# comment", "# comment", False),
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
]


@pytest.mark.parametrize("patterns,path,excluded", CASES)
def test_matching(patterns, path, excluded):
    assert Matcher.from_text(patterns).excluded(path) is excluded


def test_table_size():
    assert len(CASES) >= 40


def test_exceptions_inside_excluded_dirs_are_walked():
    m = Matcher.from_text("docs\n!docs/keep")
    assert m.may_contain_exceptions("docs")
    assert not Matcher.from_text("docs").may_contain_exceptions("docs")


def test_named_ignore_file_wins(tmp_path):
    (tmp_path / ".dockerignore").write_text("a")
    df = tmp_path / "app.Dockerfile"
    assert ignore_file_for(df, tmp_path) == tmp_path / ".dockerignore"
    (tmp_path / "app.Dockerfile.dockerignore").write_text("b")
    assert ignore_file_for(df, tmp_path) == tmp_path / "app.Dockerfile.dockerignore"
