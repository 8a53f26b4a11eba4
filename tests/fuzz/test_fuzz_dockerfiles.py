"""Fuzzed Dockerfiles and ignore files: every failure is one clean line, never an internal error.

Mutants of the corpus Dockerfiles (testdata/bud) get byte flips, line shuffles, truncations and
inserted unicode, NUL bytes, huge numbers, nested brackets and ``${``, heredoc markers and
continuations. Most are lowered in-process through ``build_graph`` (any exception but
FrontendError, or a message on more than one line, fails); a smaller number go through
``bale bud`` end to end on busybox as the unprivileged user (exit 0, 1 or 2; stderr without
"internal error" or a traceback). Mutated .dockerignore files (Matcher) and --build-arg-file
files (parse_build_args) are checked the same way in-process. Each mutant is bounded in time.

BALE_FUZZ_N sets the number of in-process mutants (default 300; BALE_FUZZ_N=2000 is the long
mode), the end-to-end ones are a twenty-fifth of it (at least 8); BALE_FUZZ_SEED shifts the
seeds. A failure prints the mutant's seed and text; it is also written under the test's tmp dir.
"""
from __future__ import annotations

import os
import random
import shutil
import signal
from pathlib import Path
from typing import Callable, Iterator

import pytest

from frontend.dockerignore import Matcher
from frontend.errors import FrontendError, one_line
from frontend.graph import build_graph
from frontend.steps import BaseInfo

CORPUS = Path(__file__).resolve().parents[2] / "testdata" / "bud"
N = int(os.environ.get("BALE_FUZZ_N", "300"))
SEED = int(os.environ.get("BALE_FUZZ_SEED", "0"))
E2E = max(8, N // 25)
CHUNKS = 10
TIME_LIMIT = 5.0  # seconds for one in-process mutant

SEEDS = sorted((p for p in CORPUS.glob("*/*") if p.is_file() and (p.name == "Dockerfile" or
                                                                    p.name.endswith(".Dockerfile"))),
               key=str)
IGNORES = sorted(p for p in CORPUS.glob("*/*ignore") if p.is_file())

NASTY = ["\x00", "\ufeff", "\u2028", "\x85", "\xa0", "é", "\U0001f600", "\udcff", "\r", "\r\n", "\t", "\\",
         "`", "$", "${", "}", "'", '"', "[", "]", "{", "<<", "<<-", "<<EOF", "EOF", "--", "--mount=", "#",
         "# escape=`", "# syntax=x", "=", ":", ",", "*", "**", "?", "!", "/", "..", " ", "\n"]
NUMBERS = ["9" * 400, "-1", "18446744073709551617", "1e999", "0x", "077777777777", "4294967296", "-0", "NaN"]
KEYWORDS = ["FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER",
            "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL", "MAINTAINER", "FROM scratch AS x"]


def _nested(rng: random.Random) -> str:
    depth = rng.choice([50, 1100, 5000, 12000])
    kind = rng.randrange(5)
    if kind == 0:
        return "[" * depth + '"a"' + "]" * rng.choice([depth, 0, depth // 2])
    if kind == 1:
        return "${A:-" * depth + "x" + "}" * rng.choice([depth, 1])
    if kind == 2:
        return "{" * depth
    if kind == 3:
        return "\\\n" * depth
    return "$" * depth + "{" * 10


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to four mutations of ``data``."""
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(12)
        if op == 0 and data:  # flip a byte
            i = rng.randrange(len(data))
            data = data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1:]
        elif op == 1 and data:  # random bytes
            i = rng.randrange(len(data) + 1)
            data = data[:i] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 8))) + data[i:]
        elif op == 2:  # shuffle lines
            lines = data.split(b"\n")
            rng.shuffle(lines)
            data = b"\n".join(lines)
        elif op == 3 and data:  # truncate
            data = data[:rng.randrange(len(data))]
        elif op == 4:  # insert something nasty
            i = rng.randrange(len(data) + 1)
            data = data[:i] + rng.choice(NASTY).encode("utf-8", "surrogateescape") + data[i:]
        elif op == 5:  # a huge or odd number
            i = rng.randrange(len(data) + 1)
            data = data[:i] + rng.choice(NUMBERS).encode() + data[i:]
        elif op == 6:  # nesting
            i = rng.randrange(len(data) + 1)
            data = data[:i] + _nested(rng).encode() + data[i:]
        elif op == 7:  # duplicate or delete a line
            lines = data.split(b"\n")
            j = rng.randrange(len(lines))
            if rng.random() < 0.5:
                lines.insert(j, lines[rng.randrange(len(lines))])
            else:
                del lines[j]
            data = b"\n".join(lines)
        elif op == 8:  # swap an instruction keyword
            lines = data.split(b"\n")
            j = rng.randrange(len(lines))
            word, _, rest = lines[j].partition(b" ")
            lines[j] = rng.choice(KEYWORDS).encode() + b" " + (rest or word)
            data = b"\n".join(lines)
        elif op == 9:  # CRLF and a BOM
            data = b"\xef\xbb\xbf" + data.replace(b"\n", b"\r\n")
        elif op == 10:  # an instruction with odd flags and arguments
            i = data.rfind(b"\n", 0, rng.randrange(len(data) + 1)) + 1
            line = rng.choice([
                "COPY --from=* /x /y", "COPY --from=nope* a b", "COPY a /d\x00e", "COPY --chmod=99999999999 a /",
                "RUN --mount=type=cache,target=/c,uid=999999999999999999,mode=9 true", "ADD <<EOF <<EOF /\nx\nEOF\n",
                "ENV " + "A=" * 500, "EXPOSE 99999999999999/tcp", "HEALTHCHECK --interval=" + "9" * 300 + "s CMD x",
                "USER " + "9" * 100 + ":" + "9" * 100, "WORKDIR " + "a/" * 3000, "ARG A=${A:?}", "SHELL []",
                "STOPSIGNAL SIG" + "9" * 50, "ONBUILD ONBUILD RUN x", "FROM --platform=" + "/" * 50 + " busybox",
                "COPY --chown=" + "9" * 40 + " a /", "LABEL " + "\"" * 3, "RUN [" + '"a",' * 2000 + '"b"]',
            ])
            data = data[:i] + line.encode("utf-8", "surrogateescape") + b"\n" + data[i:]
        else:  # a long line
            i = rng.randrange(len(data) + 1)
            data = data[:i] + b"x" * rng.choice([70000, 65535, 65536]) + data[i:]
    return data


class _Hang(Exception):
    pass


def _alarm(_sig: int, _frame: object) -> None:
    raise _Hang()


def _bounded(fn: Callable[[], object]) -> None:
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT)
    try:
        fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _base(ref: str, platform: str | None) -> BaseInfo:
    return BaseInfo(env=["PATH=/bin"], onbuild=["RUN echo onbuild", "ENV OB=1"] if "onbuild" in ref else [])


def _mutants(chunk: int) -> Iterator[tuple[int, bytes]]:
    for k in range(chunk, N, CHUNKS):
        rng = random.Random(SEED * 1_000_003 + k)
        seed_file = SEEDS[rng.randrange(len(SEEDS))]
        yield k, mutate(seed_file.read_bytes(), rng)


def _check_frontend(data: bytes) -> None:
    text = data.decode("utf-8", "surrogateescape")
    try:
        build_graph(text, filename="Dockerfile", build_args={"BASE_URL": "http://127.0.0.1:9"},
                    resolve_base=_base)
    except FrontendError as exc:
        msg = str(exc)
        assert msg == one_line(msg) and len(msg.splitlines()) == 1 and msg.startswith("Dockerfile"), msg
        assert exc.exit_code in (1, 2)


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_fuzz_frontend(chunk: int, tmp_path: Path) -> None:
    for k, data in _mutants(chunk):
        try:
            _bounded(lambda: _check_frontend(data))
        except BaseException as exc:  # noqa: BLE001 - any other outcome is the failure we look for
            (tmp_path / f"mutant-{k}").write_bytes(data)
            kind = "hang (over %ss)" % TIME_LIMIT if isinstance(exc, _Hang) else f"{type(exc).__name__}: {exc}"
            pytest.fail(f"mutant {k} (BALE_FUZZ_SEED={SEED}): {kind}\n{data[:2000]!r}", pytrace=False)


@pytest.mark.parametrize("chunk", range(2))
def test_fuzz_ignore_files(chunk: int) -> None:
    paths = ["a", "a/b", ".git/HEAD", "src/deep/tmp/t", "logs/important.log", "x" * 300, "é/\udcff", "[", "**"]
    for k in range(chunk, max(N // 4, 20), 2):
        rng = random.Random(SEED * 7919 + k)
        data = mutate(IGNORES[rng.randrange(len(IGNORES))].read_bytes(), rng)

        def check() -> None:
            try:
                m = Matcher.from_text(data.decode("utf-8", "surrogateescape"), filename=".dockerignore")
            except FrontendError as exc:
                assert str(exc) == one_line(str(exc)) and str(exc).startswith(".dockerignore")
                return
            for p in paths:
                m.excluded(p)
        try:
            _bounded(check)
        except BaseException as exc:  # noqa: BLE001
            pytest.fail(f"ignore mutant {k}: {type(exc).__name__}: {exc}\n{data[:2000]!r}", pytrace=False)


@pytest.fixture(scope="module")
def fuzz_env(unprivileged_user, tmp_path_factory, busybox_layout):  # type: ignore[no-untyped-def]
    from tests.fixtures.users import make_traversable
    u = unprivileged_user
    base = tmp_path_factory.mktemp("fuzz")
    make_traversable(base)
    work = u.tmpdir(base)
    root = u.busybox_store(work, busybox_layout)
    sane = work / "sane"
    sane.mkdir()
    (sane / "Dockerfile").write_text("FROM busybox\nRUN true\n")
    os.chown(sane, u.uid, u.gid)
    os.chown(sane / "Dockerfile", u.uid, u.gid)
    r = u.bale("bud", "--network", "none", str(sane), root=root, check=False)
    assert r.returncode == 0, r.stderr  # the store and sandbox work: failures below are the mutants'
    return u, work, root


@pytest.mark.slow
@pytest.mark.parametrize("k", range(E2E))
def test_fuzz_bud_end_to_end(k: int, fuzz_env) -> None:  # type: ignore[no-untyped-def]
    u, work, root = fuzz_env
    rng = random.Random(SEED * 31337 + k)
    seed_file = SEEDS[rng.randrange(len(SEEDS))]
    data = mutate(seed_file.read_bytes(), rng)
    ctx = work / f"e2e-{k}"
    shutil.rmtree(ctx, ignore_errors=True)
    shutil.copytree(seed_file.parent, ctx, symlinks=True)
    (ctx / "Fuzzfile").write_bytes(data)
    for p in [ctx, *ctx.rglob("*")]:
        os.lchown(p, u.uid, u.gid)
    r = u.bale("bud", "--network", "none", "-f", str(ctx / "Fuzzfile"), "-t", f"fuzz-{k}", str(ctx), root=root,
               check=False, timeout=240)
    assert r.returncode in (0, 1, 2), (r.returncode, r.stderr[-3000:], data[:2000])
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr, (r.stderr[-3000:], data[:2000])
    if r.returncode:
        last = r.stderr.strip().split("\n")[-1]
        assert last.startswith("bale: ") and last == one_line(last), (r.stderr[-3000:], data[:2000])


def test_fuzz_build_arg_files(tmp_path: Path) -> None:
    """--build-arg-file mutants: parsed, or one UsageError line naming the file."""
    from builder.build.options import parse_build_args
    from builder.errors import UsageError
    seeds = sorted(CORPUS.glob("*/args.txt"))
    for k in range(max(N // 10, 20)):
        rng = random.Random(SEED * 104729 + k)
        data = mutate(seeds[rng.randrange(len(seeds))].read_bytes(), rng)
        path = tmp_path / "args.txt"
        path.write_bytes(data)

        def check() -> None:
            try:
                parse_build_args([], [str(path)])
            except UsageError as exc:
                assert str(exc) == one_line(str(exc)) and str(path) in str(exc), str(exc)
        try:
            _bounded(check)
        except BaseException as exc:  # noqa: BLE001
            pytest.fail(f"build-arg-file mutant {k}: {type(exc).__name__}: {exc}\n{data[:2000]!r}", pytrace=False)
