"""How to reach registries, as given on the command line (skopeo's and buildah's flag names)."""
from __future__ import annotations

import re
from dataclasses import dataclass

from builder.errors import UsageError

#: seconds to wait for a connection and for each read of an answer (--registry-timeout)
DEFAULT_TIMEOUT = 30.0
#: how often a failed request is tried again (buildah's --retry default)
DEFAULT_RETRIES = 3

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(text: str, what: str) -> float:
    """Seconds from a Go duration ("2s", "1m30s", "500ms") or a plain number of seconds.

    Raises UsageError naming ``what`` for anything else or a negative value."""
    s = text.strip()
    try:
        value = float(s)
    except ValueError:
        pos, value = 0, 0.0
        for m in _PART.finditer(s):
            if m.start() != pos:
                break
            value += float(m.group(1)) * _UNITS[m.group(2)]
            pos = m.end()
        if pos != len(s) or not s:
            raise UsageError(f"{what}: invalid duration {text!r} (e.g. 30s, 1m, 500ms)") from None
    if value < 0 or value != value:
        raise UsageError(f"{what}: invalid duration {text!r}")
    return value


@dataclass(frozen=True)
class RegistryOptions:
    #: None = decide per registry (registries.conf insecure, localhost), False = --tls-verify=false
    tls_verify: bool | None = None
    #: directory with *.crt (CA), *.cert/*.key (client) files, as containers-certs.d
    cert_dir: str | None = None
    #: "USER[:PASSWORD]" from --creds
    creds: str | None = None
    #: path from --authfile (else $REGISTRY_AUTH_FILE and the default locations)
    authfile: str | None = None
    #: "image" for config/manifest-only operations; purely informational
    user_agent: str = "bale/0.1"
    #: --retry: further tries of a request after a transient failure (connection error, 5xx, 429)
    retries: int = DEFAULT_RETRIES
    #: --retry-delay in seconds between tries; None = exponential backoff from $BALE_RETRY_BASE_DELAY (0.5 s)
    retry_delay: float | None = None
    #: --registry-timeout in seconds: connect timeout and read timeout of every request
    timeout: float = DEFAULT_TIMEOUT
    #: --sign-by-sigstore-private-key: PEM key that signs every manifest pushed (builder/image/sign.py)
    sign_by_sigstore_key: str | None = None
    #: --sign-passphrase-file contents for an encrypted signing key
    sign_passphrase: str | None = None
