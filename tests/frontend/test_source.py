"""The Dockerfile line parser against BuildKit's (moby/buildkit frontend/dockerfile/parser).

Expected values are BuildKit's: the heredoc vectors are those of
parser/parser_heredoc_test.go (TestParseExtractsHeredoc, TestParseHeredocHelpers,
TestHeredocsFromLine), line numbers those of parser_test.go TestParseIncludesLineNumbers
on testfile-line/Dockerfile, the other rules cite parser.go lines.
"""
import pytest

from frontend.errors import FrontendError
from frontend.graph import build_graph
from frontend.heredoc import LexError, heredocs_in_line, parse_heredoc
from frontend.source import NOT_STRING_ARRAY, parse_json_array, parse_source
from frontend.steps import BaseInfo

HEREDOC_FILE = """
FROM alpine:3.6

ENV NAME=me

RUN ls

USER <<INVALID
INVALID

RUN <<EMPTY
EMPTY

RUN 3<<EMPTY2
EMPTY2

RUN "<<NOHEREDOC"

RUN <<INDENT
\tfoo
\tbar
INDENT

RUN <<-UNINDENT
\tbaz
\tquux
UNINDENT

RUN <<-UNINDENT2
\tbaz
\tquux
\tUNINDENT2

RUN <<-EXPAND
\texpand $NAME
EXPAND

RUN <<-'NOEXPAND'
\tdon't expand $NAME
NOEXPAND

RUN <<COPY
echo hello world
echo foo bar
COPY

RUN <<COMMENT
# internal comment
echo hello world
echo foo bar # trailing comment
COMMENT

RUN --mount=type=cache,target=/foo <<MOUNT
echo hello
MOUNT

COPY <<FILE1 <<FILE2 /dest
content 1
FILE1
content 2
FILE2

COPY <<EOF /quotes
"foo"
'bar'
EOF

COPY <<X <<Y /dest
Y
X
X
Y

RUN <<COMPLEX python3
print('hello world')
COMPLEX

COPY <<file.txt /dest
hello world
file.txt

RUN <<eo'f'
echo foo
eof

RUN <<eo\\'f
echo foo
eo'f

RUN <<'e'o\\'f
echo foo
eo'f

RUN <<'one two'
echo bar
one two

RUN <<$EOF
$EOF

RUN <<  EOF
EOF

RUN <<  EOF  > foo
EOF
\t"""

# (name, content as read, expand, chomp) per instruction after FROM; parser_heredoc_test.go:110-300
HEREDOCS = [
    [], [], [], [],  # ENV, RUN ls, USER <<INVALID (USER takes none), INVALID
    [("EMPTY", "", True, False)],
    [("EMPTY2", "", True, False)],
    [],
    [("INDENT", "\tfoo\n\tbar\n", True, False)],
    [("UNINDENT", "\tbaz\n\tquux\n", True, True)],
    [("UNINDENT2", "\tbaz\n\tquux\n", True, True)],
    [("EXPAND", "\texpand $NAME\n", True, True)],
    [("NOEXPAND", "\tdon't expand $NAME\n", False, True)],
    [("COPY", "echo hello world\necho foo bar\n", True, False)],
    [("COMMENT", "# internal comment\necho hello world\necho foo bar # trailing comment\n", True, False)],
    [("MOUNT", "echo hello\n", True, False)],
    [("FILE1", "content 1\n", True, False), ("FILE2", "content 2\n", True, False)],
    [("EOF", "\"foo\"\n'bar'\n", True, False)],
    [("X", "Y\n", True, False), ("Y", "X\n", True, False)],
    [("COMPLEX", "print('hello world')\n", True, False)],
    [("file.txt", "hello world\n", True, False)],
    [("eof", "echo foo\n", False, False)],
    [("eo'f", "echo foo\n", True, False)],
    [("eo'f", "echo foo\n", False, False)],
    [("one two", "echo bar\n", False, False)],
    [("$EOF", "", True, False)],
    [("EOF", "", True, False)],
    [("EOF", "", True, False)],
]


def test_heredocs_as_buildkit_extracts_them():
    insts = parse_source(HEREDOC_FILE).instructions
    assert insts[0].keyword == "FROM"
    got = [[(h.name, h.raw_body, h.expand, h.strip_tabs) for h in i.heredocs] for i in insts[1:]]
    assert got == HEREDOCS
    unindent = insts[9].heredocs[0]
    assert unindent.body == "baz\nquux\n"  # parser.go:502 ChompHeredocContent


@pytest.mark.parametrize("word", ["<<EOF", "<<'EOF'", '<<"EOF"', "<<-EOF", "<<-'EOF'", '<<-"EOF"', '<<EO"F"',
                                  "<< EOF", "<<- EOF"])
def test_heredoc_word_valid(word):  # parser_heredoc_test.go TestParseHeredocHelpers
    assert parse_heredoc(word).name == "EOF"


@pytest.mark.parametrize("word", ["<<'EOF", '<<"EOF', "<<EOF'", '<<EOF"'])
def test_heredoc_word_invalid(word):
    with pytest.raises(LexError):
        parse_heredoc(word)


@pytest.mark.parametrize("word", ["", "EOF", "<<", "<<-", "<EOF", "<<<EOF", "<<EOF sh"])
def test_not_a_heredoc_word(word):
    assert parse_heredoc(word) is None


@pytest.mark.parametrize("line,names", [  # parser_heredoc_test.go TestHeredocsFromLine
    ("RUN <<EOF", ["EOF"]), ("RUN <<-EOF", ["EOF"]),
    # "<<-" and "EOF" are two words to lex.go (only blanks right after << join); BuildKit's own table
    # lists ["EOF"] here but its loop checks nothing when none is found
    ("RUN <<- EOF", []), ("RUN << -EOF", ["-EOF"]),
    ("RUN <<'EOF'", ["EOF"]), ("RUN 4<<EOF", ["EOF"]), ("RUN <<EOF <<EOF2", ["EOF", "EOF2"]),
    ("RUN '<<EOF'", []), ('RUN "<<EOF"', []),
    ("COPY <<one.txt <<two.txt /pair/", ["one.txt", "two.txt"]),
])
def test_heredocs_in_line(line, names):
    assert [h.name for h in heredocs_in_line(line)] == names


def test_json_form_has_no_heredocs():  # parser.go:93, parser_heredoc_test.go TestParseJSONHeredoc
    insts = parse_source('FROM a\nRUN ["whoami"]\nRUN ["<<EOF"]\nRUN ["<<\'EOF\'"]\n').instructions
    assert all(not i.heredocs for i in insts)


LINE_FILE = ("# ESCAPE=\\\n\n\n\nFROM brimstone/ubuntu:14.04\n\n\n# TORUN -v /var/run/docker.sock:/var/run/docker.sock\n"
             "\n\nENV GOPATH \\\n/go\n\n\n\n# Install the packages we need, clean up after them and us\n"
             "RUN apt-get update \\\n\t&& dpkg -l | awk '/^ii/ {print $2}' > /tmp/dpkg.clean \\\n\n\n"
             "    && apt-get --no-install-recommends install -y git golang ca-certificates \\\n"
             "    && apt-get clean \\\n    && rm -rf /var/lib/apt/lists \\\n\n"
             "\t&& go get -v github.com/brimstone/consuldock \\\n"
             "    && mv $GOPATH/bin/consuldock /usr/local/bin/consuldock \\\n\n"
             "\t&& dpkg -l | awk '/^ii/ {print $2}' > /tmp/dpkg.dirty \\\n"
             "\t&& apt-get remove --purge -y $(diff /tmp/dpkg.clean /tmp/dpkg.dirty | awk '/^>/ {print $2}') \\\n"
             "\t&& rm /tmp/dpkg.* \\\n\t&& rm -rf $GOPATH\n\n\n\n\n")


def test_line_numbers():  # parser_test.go TestParseIncludesLineNumbers on testfile-line/Dockerfile
    insts = parse_source(LINE_FILE).instructions
    assert [(i.line, i.end_line) for i in insts] == [(5, 5), (11, 12), (17, 31)]
    assert insts[1].args == "GOPATH /go"


def test_continuation_joins_without_separator_and_skips_comments_and_blank_lines():
    # parser.go:329-347: comment lines and empty continuation lines are skipped; lines are
    # concatenated as they are after the escape and blanks before the line end are dropped
    insts = parse_source("FROM a\nRUN something \\\n\n    following \\\n# c\n    more\n").instructions
    assert insts[1].args == "something     following     more"


def test_bom_and_crlf():  # parser.go:296 discardBOM, parser.go:519 trimNewline
    text = "\ufeff# escape=`\r\nFROM busybox\r\nRUN echo a `\r\n  b\r\nCOPY <<EOF /x\r\nhi\r\nEOF\r\n"
    src = parse_source(text)
    assert src.escape == "`" and [i.keyword for i in src.instructions] == ["FROM", "RUN", "COPY"]
    assert src.instructions[1].args == "echo a   b"
    assert src.instructions[2].heredocs[0].body == "hi\r\n"  # parser.go:388 content keeps the line end as read
    g = build_graph(text, resolve_base=lambda r, p: BaseInfo())
    assert list(g.stages[0].steps[0].args) == ["/bin/sh", "-c", "echo a   b"]


def test_not_utf8_in_a_comment_is_fine_elsewhere_one_line():
    raw = b"FROM a\n# caf\xe9 \xff\nRUN echo caf\xe9\n"
    text = raw.decode("utf-8", "surrogateescape")
    with pytest.raises(FrontendError) as exc:
        parse_source(text)
    assert str(exc.value) == "Dockerfile:3: RUN: invalid UTF-8: byte 0xe9 (the Dockerfile must be UTF-8)"
    ok = parse_source(b"FROM a\n# caf\xe9 \xff\nRUN true\n".decode("utf-8", "surrogateescape"))
    assert [i.keyword for i in ok.instructions] == ["FROM", "RUN"]


@pytest.mark.parametrize("text,message", [
    ("", "Dockerfile:1: file with no instructions"),  # parser.go:404
    ("# only a comment\n", "Dockerfile:1: file with no instructions"),
    ("# escape=x\nFROM a\n", "Dockerfile:1: invalid escape token 'x' does not match ` or \\"),  # parser.go:155
    ("# escape=`\n# escape=\\\nFROM a\n", "Dockerfile:2: only one escape parser directive can be used"),
    ("FROM a\nLABEL x=" + "a" * 65536 + "\n", "Dockerfile:2: dockerfile line greater than max allowed size of 65535"),
    ("FROM a\nRUN [\"a\", 1]\n", f"Dockerfile:2: RUN: {NOT_STRING_ARRAY}"),  # line_parsers.go:293
    ("FROM a\nCOPY <<EOF /x\n", "Dockerfile:2: COPY: unterminated heredoc <<EOF"),  # parser.go:391
    ("FROM a\nRUN echo a\x00b\n", "Dockerfile:2: RUN: NUL byte in the instruction"),
    ("FROM a\nRUN <<EOF\n\x00\nEOF\n", "Dockerfile:2: RUN: heredoc <<EOF: NUL byte in a RUN script"),
])
def test_parse_errors_are_one_line(text, message):
    with pytest.raises(FrontendError) as exc:
        parse_source(text)
    assert str(exc.value) == message


def test_longest_line_allowed():  # parser_test.go TestParseReturnsScannerErrors: 65536 fails, 65535 passes
    insts = parse_source("FROM a\nLABEL x=" + "a" * (65535 - 8) + "\n").instructions
    assert len(insts[1].args) == 65535 - 6


@pytest.mark.parametrize("text,expected", [
    ('["a", "b"]', ["a", "b"]),
    ("  [\"a\"]", ["a"]),
    ("[a]", None),  # invalid JSON: shell form
    ("echo [1]", None),
    ("[" * 20000, None),
    ("[" * 20000 + "]" * 20000, None),  # deeper than Go's 10000: not JSON
    ('[{"a": [1, 2.5e3, true, null]}, "x"' + "]", NOT_STRING_ARRAY),
    ("[" * 5000 + "]" * 5000, NOT_STRING_ARRAY),  # nested: encoding/json decodes it, not all strings
    ("[" * 5000 + "]" * 4999, None),
    ("[[1], ]", None),
    ("[1]", NOT_STRING_ARRAY),
])
def test_json_arrays_as_go_reads_them(text, expected):
    if expected == NOT_STRING_ARRAY:
        with pytest.raises(ValueError, match="comprised of strings only"):
            parse_json_array(text)
    else:
        assert parse_json_array(text) == expected


def test_several_heredocs_in_one_copy():  # parse.go:277 parseSourcesAndDest: each <<word is an inline source
    g = build_graph("FROM a\nCOPY <<one.txt <<two.txt /pair/\nfirst\none.txt\nsecond\ntwo.txt\n",
                    resolve_base=lambda r, p: BaseInfo())
    step = g.stages[0].steps[0]
    assert [(f.name, f.content) for f in step.inline] == [("one.txt", b"first\n"), ("two.txt", b"second\n")]
    assert step.dest == "/pair/" and not step.sources


def test_run_with_several_heredocs_is_one_shell_script():
    # convert.go:1392-1402: args[0], then per file "\n" + data + name, handed to the shell
    g = build_graph("FROM a\nRUN cat <<A <<-B\nx\nA\n\ty\n\tB\n", resolve_base=lambda r, p: BaseInfo())
    assert list(g.stages[0].steps[0].args) == ["/bin/sh", "-c", "cat <<A <<-B\nx\nA\n\ty\nB"]


def test_copy_heredoc_expansion_keeps_quotes():
    # convert.go:1049-1056 ExpandRaw: a Lex('\\') with SkipProcessQuotes: variables expanded,
    # quotes kept, backslash escapes applied; a quoted delimiter expands nothing
    g = build_graph('FROM a\nARG V=v\nCOPY <<EOF <<"RAW" /d/\n"$V" \'$V\' \\$V\nEOF\n"$V"\nRAW\n',
                    resolve_base=lambda r, p: BaseInfo())
    files = {f.name: f.content for f in g.stages[0].steps[0].inline}
    assert files == {"EOF": b"\"v\" 'v' $V\n", "RAW": b'"$V"\n'}


def test_onbuild_trigger_keeps_its_heredoc():  # instructions/parse.go:452-462
    g = build_graph("FROM a\nONBUILD RUN <<EOF\necho hi\nEOF\n", resolve_base=lambda r, p: BaseInfo())
    assert g.stages[0].steps[0].text == "ONBUILD RUN <<EOF\necho hi\nEOF"
    child = build_graph("FROM parent\nRUN true\n",
                        resolve_base=lambda r, p: BaseInfo(onbuild=["RUN <<EOF\necho hi\nEOF"]))
    assert list(child.stages[0].steps[0].args) == ["/bin/sh", "-c", "echo hi\n"]


@pytest.mark.parametrize("line,message", [
    # commands_runmount.go:241-253: strconv.ParseUint(v, 10|8, 32)
    ("RUN --mount=type=cache,target=/c,uid=99999999999999999999 true", "invalid uid"),
    ("RUN --mount=type=cache,target=/c,gid=-1 true", "invalid gid"),
    ("RUN --mount=type=cache,target=/c,mode=0o7 true", "invalid mode"),
    # moby/sys/signal v0.7.1 signal.go ParseSignal: strconv.Atoi (int64), 0 refused, else a SignalMap name
    ("STOPSIGNAL 99999999999999999999", "invalid signal"),
    ("STOPSIGNAL 0", "invalid signal"),
    ("HEALTHCHECK --retries=2147483648 CMD x", "invalid --retries"),  # parse.go:663 ParseInt(v, 10, 32)
    ("HEALTHCHECK --interval=" + "9" * 400 + "s CMD x", "invalid duration"),  # time.ParseDuration: int64 ns
])
def test_numbers_as_go_parses_them(line, message):
    with pytest.raises(FrontendError, match=message):
        build_graph(f"FROM a\n{line}\n", resolve_base=lambda r, p: BaseInfo())
    ok = build_graph("FROM a\nRUN --mount=type=cache,target=/c,uid=4294967295,mode=0750 true\nSTOPSIGNAL 9\n"
                     "HEALTHCHECK --retries=3 CMD x\n", resolve_base=lambda r, p: BaseInfo())
    assert ok.stages[0].steps[0].mounts[0].uid == 4294967295


# moby/buildkit dockerfile2llb/convert.go dispatchStopSignal: signal.ParseSignal(c.Signal), then
# d.image.Config.StopSignal = c.Signal (as written); vendor/github.com/moby/sys/signal/signal.go
# ParseSignal: strconv.Atoi, not 0; else SignalMap[TrimPrefix(ToUpper(s), "SIG")] (signal_linux.go)
@pytest.mark.parametrize("sig", ["SIGTERM", "TERM", "term", "sigkill", "9", "256", "-1", "+5", "RTMIN+3",
                                 "SIGRTMAX-14", "sigrtmin", "SIGCLD", "SIGIOT"])
def test_stopsignal_accepts_what_buildkit_accepts(sig):
    g = build_graph(f"FROM a\nSTOPSIGNAL {sig}\n", resolve_base=lambda r, p: BaseInfo())
    step = g.stages[0].steps[0]
    assert step.op.signal == sig and step.text == f"STOPSIGNAL {sig}"  # kept as written


@pytest.mark.parametrize("sig", ["SIGFOO", "SIGSIGTERM", "0", "-0", "RTMIN+16", "RTMAX-15", "SIG", "1_0",
                                 "99999999999999999999", "SIG TERM", "٣"])
def test_stopsignal_refuses_what_buildkit_refuses(sig):
    with pytest.raises(FrontendError) as got:
        build_graph(f"FROM a\nRUN true\nSTOPSIGNAL {sig}\n", resolve_base=lambda r, p: BaseInfo())
    assert str(got.value) == f"Dockerfile:3: STOPSIGNAL: invalid signal: {sig}"
    assert got.value.exit_code == 1  # a dispatch error, the build fails: not a usage error


# dockerfile2llb/convert.go:428-450: FROM --platform expanded, then containerd platforms.Parse
# (vendor/github.com/containerd/platforms/platforms.go Parse, database.go normalizeArch/isKnownOS)
@pytest.mark.parametrize("value,platform", [
    ("linux/amd64", "linux/amd64"), ("linux/arm64/v8", "linux/arm64/v8"), ("linux/aarch64", "linux/arm64"),
    ("Linux/X86_64", "linux/amd64"), ("linux/arm/7", "linux/arm/v7"), ("linux/armhf", "linux/arm"),
    ("linux/arm", "linux/arm"), ("linux", "linux/s390x"), ("arm64", "linux/arm64"), ("i386", "linux/386"),
    ("linux/riscv64", "linux/riscv64"), ("linux/bogus", "linux/bogus"), ("windows(10.0.17763)/amd64", "windows/amd64"),
    ("$BUILDPLATFORM", "linux/s390x"), ("${TARGETOS}/${TARGETARCH}", "linux/ppc64le"),
])
def test_from_platform_accepts_what_containerd_parses(value, platform):
    g = build_graph(f"FROM --platform={value} scratch\n", platform="linux/ppc64le", build_platform="linux/s390x")
    assert g.stages[0].platform == platform


@pytest.mark.parametrize("value,cause", [
    ("bogus", '"bogus": unknown operating system or architecture: invalid argument'),
    ("linux/amd64/v2/x", '"linux/amd64/v2/x": cannot parse platform specifier: invalid argument'),
    ("linux/", '"" is an invalid component of "linux/": platform specifier component must match '
               '"^[A-Za-z0-9_.-]+$": invalid argument'),
    ("l%x/amd64", '"l%x" is an invalid OS component of "l%x/amd64": OSAndVersion specifier component '
                     'must match "^([A-Za-z0-9_-]+)(?:\\\\(([A-Za-z0-9_.%-]*)((?:\\\\+[A-Za-z0-9_.%-]+)*)\\\\))?$": '
                     'invalid argument'),
    ("linux/*", '"linux/*": wildcards not yet supported: invalid argument'),
])
def test_from_platform_refuses_what_containerd_refuses(value, cause):
    with pytest.raises(FrontendError) as got:
        build_graph(f"FROM busybox\nFROM --platform={value} scratch\n")
    assert str(got.value) == f"Dockerfile:2: FROM: failed to parse platform {value}: {cause}"
    assert got.value.exit_code == 1


def test_from_platform_empty_after_expansion():  # convert.go:438-442
    with pytest.raises(FrontendError) as got:
        build_graph("ARG P\nFROM --platform=$P scratch\n")
    assert str(got.value) == "Dockerfile:2: FROM: empty platform value from expression $P"
