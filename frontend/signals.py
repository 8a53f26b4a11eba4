"""Stop signals as BuildKit accepts them: moby/sys/signal ParseSignal (signal.go, v0.7.1,
vendored by BuildKit; dockerfile2llb/convert.go dispatchStopSignal calls it), with the
Linux SignalMap of signal_linux.go (not mips)."""
from __future__ import annotations

import re

_NAMES = ("ABRT ALRM BUS CHLD CLD CONT FPE HUP ILL INT IO IOT KILL PIPE POLL PROF PWR QUIT SEGV STKFLT STOP SYS "
          "TERM TRAP TSTP TTIN TTOU URG USR1 USR2 VTALRM WINCH XCPU XFSZ").split()
#: signal_linux.go SignalMap: names without the SIG prefix, RTMIN..RTMIN+15 and RTMAX-14..RTMAX
SIGNAL_NAMES = frozenset(_NAMES + ["RTMIN", "RTMAX"] + [f"RTMIN+{i}" for i in range(1, 16)]
                         + [f"RTMAX-{i}" for i in range(1, 15)])
_ATOI = re.compile(r"[+-]?[0-9]+", re.ASCII)
_INT_MAX = 2**63 - 1


def _go_upper(text: str) -> str:
    """strings.ToUpper: rune by rune; a rune whose upper case is several runes stays as it is."""
    return "".join(u if len(u := c.upper()) == 1 else c for c in text)


def parse_signal(raw: str) -> str | None:
    """The cause for which ParseSignal refuses ``raw`` (``invalid signal: RAW``), None if it is
    accepted: a number as strconv.Atoi reads it (an optional sign, decimal digits, within int64),
    not 0 (negative and large numbers pass: Atoi is all it checks), or a name of SignalMap with
    an optional ``SIG`` prefix, in any case (SIGTERM, term, SIGRTMIN+3)."""
    if _ATOI.fullmatch(raw):
        return None if int(raw) != 0 and -_INT_MAX - 1 <= int(raw) <= _INT_MAX else f"invalid signal: {raw}"
    up = _go_upper(raw)
    return None if up.removeprefix("SIG") in SIGNAL_NAMES else f"invalid signal: {raw}"
