"""HTTP to one registry: TLS set-up (system CAs, cert dirs, insecure fallback to
plain http), retries with backoff, and errors mapped to one-line RegistryErrors.
The only module importing requests."""
from __future__ import annotations

import logging
import os
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from builder.errors import RegistryError
from builder.image.registry.options import RegistryOptions
from builder.lazyimport import lazy

if TYPE_CHECKING:
    import requests
    from requests import Response as Response
else:
    requests = lazy("requests")  # imported at the first request (start-up: builder/lazyimport.py)
    Response = "requests.Response"  # annotations only

log = logging.getLogger("bale")
SYSTEM_CA_FILES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")
RETRY_STATUS = {429, 500, 502, 503, 504}


def _base_delay() -> float:
    try:
        return float(os.environ.get("BALE_RETRY_BASE_DELAY", "0.5"))
    except ValueError:
        return 0.5


def cert_dirs(host: str, explicit: str | None) -> list[Path]:
    """containers-certs.d(5) directories for ``host``, explicit one first."""
    dirs = [Path(explicit)] if explicit else []
    home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    for base in (home / "containers" / "certs.d", Path("/etc/containers/certs.d"), Path("/etc/docker/certs.d")):
        dirs.append(base / host.replace(":", ":"))
    return [d for d in dirs if d.is_dir()]


def describe(exc: BaseException) -> str:
    """A short cause for a requests/urllib3 exception."""
    text = str(exc)
    for needle, short in (("Connection refused", "connection refused"), ("Name or service not known", "unknown host"),
                          ("CERTIFICATE_VERIFY_FAILED", "certificate verify failed"),
                          ("timed out", "timed out"), ("Connection reset", "connection reset"),
                          ("RemoteDisconnected", "connection closed by the server"),
                          ("WRONG_VERSION_NUMBER", "server does not speak TLS (try --tls-verify=false)"),
                          ("IncompleteRead", "connection broken mid-transfer"),
                          ("No route to host", "no route to host")):
        if needle in text:
            return short
    return text.splitlines()[0][:200] if text else type(exc).__name__


class Transport:
    """A requests session bound to one registry host."""

    def __init__(self, host: str, options: RegistryOptions) -> None:
        from builder.image.reference import registry_is_insecure
        self.host, self.options = host, options
        self.session = requests.Session()
        self.session.headers["User-Agent"] = options.user_agent
        self.insecure = options.tls_verify is False or (options.tls_verify is None and registry_is_insecure(host))
        self._scheme: str | None = None
        self._scheme_lock = threading.Lock()  # blob threads start together: one probe, not one each
        self._ca_file: str | None = None
        self._setup_tls()

    def _setup_tls(self) -> None:
        dirs = cert_dirs(self.host, self.options.cert_dir)
        cas = [p for d in dirs for p in sorted(d.glob("*.crt"))]
        if cas:
            fd, path = tempfile.mkstemp(prefix="bale-ca-", suffix=".pem")
            with os.fdopen(fd, "wb") as out:
                for sys_ca in SYSTEM_CA_FILES:
                    if os.path.exists(sys_ca):
                        out.write(Path(sys_ca).read_bytes() + b"\n")
                        break
                for ca in cas:
                    out.write(ca.read_bytes() + b"\n")
            self._ca_file = path
            self.session.verify = path
        for d in dirs:
            for cert in sorted(d.glob("*.cert")):
                key = cert.with_suffix(".key")
                if key.exists():
                    self.session.cert = (str(cert), str(key))
                    break
        if self.insecure:
            self.session.verify = False
            import urllib3
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

    def close(self) -> None:
        self.session.close()
        if self._ca_file:
            with _suppress():
                os.unlink(self._ca_file)

    @property
    def scheme(self) -> str:
        with self._scheme_lock:
            if self._scheme is None:
                self._scheme = self._probe_scheme()
            return self._scheme

    def _probe_scheme(self) -> str:
        """https, or for an insecure registry plain http when https does not answer (as podman does)."""
        if not self.insecure:
            return "https"
        try:
            self.session.get(f"https://{self.host}/v2/", timeout=min(10.0, self.options.timeout), verify=False)
            return "https"
        except requests.RequestException:
            return "http"

    def url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.scheme}://{self.host}{path}"

    def request(self, method: str, path: str, *, what: str, retry: bool = True, stream: bool = False,
                headers: dict[str, str] | None = None, data: Any = None, params: dict[str, str] | None = None,
                auth_header: Callable[[], dict[str, str]] | None = None, timeout: float | None = None,
                allow_redirects: bool = True) -> requests.Response:
        """One request, retried on connection errors, 5xx and 429 (honouring Retry-After) when ``retry``.

        ``timeout`` (seconds, default ``options.timeout``) bounds the connect and every read. A request
        that times out is not tried again: a registry that accepts connections and never answers fails
        after one timeout with a RegistryError naming the host."""
        tries = 1 + max(0, self.options.retries) if retry else 1
        limit = timeout if timeout is not None else self.options.timeout
        backoff = Backoff(self.options.retry_delay)
        for attempt in range(1, tries + 1):
            h = dict(headers or {})
            if auth_header:
                h.update(auth_header())
            try:
                resp = self.session.request(method, self.url(path), headers=h, data=data, params=params,
                                            stream=stream, timeout=(limit, limit), allow_redirects=allow_redirects,
                                            verify=self.session.verify)  # explicit: env CA bundles must not win
            except requests.exceptions.SSLError as exc:
                raise RegistryError(f"{what}: TLS error talking to {self.host}: {describe(exc)}") from None
            except requests.Timeout:
                raise RegistryError(f"{what}: {self.host} did not answer within {limit:g} s "
                                    "(--registry-timeout)") from None
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
                if attempt == tries:
                    raise RegistryError(f"{what}: cannot reach {self.host}: {describe(exc)}") from None
                log.info("%s: %s, retrying", what, describe(exc))
                backoff.sleep()
                continue
            if resp.status_code in RETRY_STATUS and attempt < tries:
                wait = retry_after(resp)
                resp.close()
                log.info("%s: %s answered %d, retrying", what, self.host, resp.status_code)
                backoff.sleep(wait)
                continue
            return resp
        raise AssertionError("unreachable")  # pragma: no cover


class Backoff:
    """Waits between tries: a fixed ``delay`` (--retry-delay) or exponential from
    $BALE_RETRY_BASE_DELAY with 25 % jitter; a registry's Retry-After wins (capped at 60 s)."""

    def __init__(self, delay: float | None) -> None:
        self.fixed = delay
        self.next = _base_delay() if delay is None else delay

    def sleep(self, retry_after_s: float | None = None) -> float:
        """Sleep and return the seconds slept."""
        if retry_after_s is not None:
            wait = retry_after_s
        elif self.fixed is not None:
            wait = self.fixed
        else:
            wait = self.next * (1 + random.random() / 4)
            self.next *= 2
        time.sleep(wait)
        return wait


def retry_after(resp: requests.Response) -> float | None:
    """Seconds a 429/503 answer asks the client to wait (Retry-After, seconds or HTTP date), capped at 60."""
    if resp.status_code not in (429, 503):
        return None
    return _retry_after(resp)


def _retry_after(resp: requests.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    if not value:
        return None
    try:
        return min(float(value), 60.0)
    except ValueError:
        import email.utils
        try:
            when = email.utils.parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError):
            return None
        return max(0.0, min(when - time.time(), 60.0))


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


def error_message(resp: requests.Response) -> str:
    """The registry's own message from an error body ({"errors":[{"code","message"}]})."""
    try:
        errs = resp.json().get("errors") or []
        if errs:
            e = errs[0]
            return f"{e.get('code', '')}: {e.get('message', '')}".strip(": ")
    except (ValueError, AttributeError):
        pass
    return resp.reason or f"HTTP {resp.status_code}"
