"""Word expansion against the table in testdata/expand.txt (Docker's semantics)."""
from pathlib import Path

import pytest

from frontend.expand import ExpandError, expand_word, expand_words, split_raw

TABLE = Path(__file__).resolve().parents[2] / "testdata" / "expand.txt"


def _rows():
    for n, line in enumerate(TABLE.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        text, env, want = (p.strip() for p in line.split(" | "))
        envd = dict(kv.split("=", 1) for kv in env.split(";") if kv)
        yield pytest.param(text, envd, "" if want == "<empty>" else want, id=f"{n}:{text}")


def test_table_is_large_enough():
    assert len(list(_rows())) >= 60


@pytest.mark.parametrize("text,env,want", list(_rows()))
def test_expand_word(text, env, want):
    assert expand_word(text, env) == want


def test_backtick_escape():
    assert expand_word("C:\\path`$A", {"A": "1"}, escape="`") == "C:\\path$A"


def test_required_variable_error():
    with pytest.raises(ExpandError, match="X: must be set"):
        expand_word("${X:?must be set}", {})


def test_words_and_raw_split():
    assert expand_words('a "b c" $X', {"X": "x y"}) == ["a", "b c", "x y"]
    assert split_raw('K="a b" L=c\\ d') == ['K="a b"', "L=c\\ d"]
    with pytest.raises(ExpandError):
        split_raw('K="open')
