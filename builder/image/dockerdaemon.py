"""The Docker Engine API as an image transport (``docker-daemon:NAME:TAG``, as containers/image
names it): push = ``POST /images/load`` with a docker-archive body, pull = ``GET
/images/NAME/get`` answering one. The engine is $DOCKER_HOST (``unix:///PATH`` or
``tcp://HOST:PORT``, plain HTTP) or /var/run/docker.sock; podman's Docker-compatible
service (``podman system service``) answers the same calls.

Paths are unversioned (the engine's default API version), as the docker CLI falls back to.
Errors are RegistryError-free BaleErrors naming the engine and the image, one line each."""
from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import urllib.parse
from typing import BinaryIO, Iterator

from builder.errors import BaleError, ImageNotFound, UsageError

DEFAULT_SOCKET = "/var/run/docker.sock"
TIMEOUT = 300.0


class DaemonError(BaleError):
    """The Docker engine refused or failed an image load/save, or cannot be reached."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.socket_path)
        self.sock = s


def engine_address(env: dict[str, str] | None = None) -> str:
    """``unix:///PATH`` or ``tcp://HOST:PORT`` from $DOCKER_HOST, else the default socket."""
    env = os.environ if env is None else env  # type: ignore[assignment]
    host = (env or {}).get("DOCKER_HOST") or f"unix://{DEFAULT_SOCKET}"
    if host.startswith("/"):
        host = "unix://" + host
    if not host.startswith(("unix://", "tcp://", "http://")):
        raise UsageError(f"DOCKER_HOST={host}: only unix:// and tcp:// engines are supported")
    return host


class Engine:
    """One Docker Engine API endpoint."""

    def __init__(self, address: str | None = None, timeout: float = TIMEOUT) -> None:
        self.address = address or engine_address()
        self.timeout = timeout

    def _connection(self) -> http.client.HTTPConnection:
        if self.address.startswith("unix://"):
            return _UnixConnection(self.address[len("unix://"):], self.timeout)
        hostport = self.address.split("://", 1)[1].rstrip("/")
        return http.client.HTTPConnection(hostport, timeout=self.timeout)

    def _request(self, method: str, path: str, body: BinaryIO | None = None, length: int | None = None,
                 what: str = "") -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        conn = self._connection()
        headers = {"Host": "docker"}
        if body is not None:
            headers["Content-Type"] = "application/x-tar"
            headers["Content-Length"] = str(length)
        try:
            conn.request(method, path, body=body, headers=headers)
            return conn, conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            cause = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
            raise DaemonError(f"{what}: cannot talk to the Docker engine at {self.address}: {cause}") from None

    @staticmethod
    def _message(resp: http.client.HTTPResponse) -> str:
        raw = resp.read(1 << 16).decode(errors="replace")
        try:
            return str(json.loads(raw).get("message") or raw).strip()
        except (ValueError, AttributeError):
            return raw.strip().splitlines()[0] if raw.strip() else resp.reason

    def load(self, archive: str, what: str) -> list[str]:
        """POST /images/load with the docker-archive at ``archive``; returns the engine's
        "Loaded image" lines. DaemonError with the engine's message on failure."""
        size = os.path.getsize(archive)
        with open(archive, "rb") as fh:
            conn, resp = self._request("POST", "/images/load?quiet=1", fh, size, what)
        try:
            if resp.status != 200:
                raise DaemonError(f"{what}: the Docker engine refused the image ({resp.status}: "
                                  f"{self._message(resp)})")
            loaded = []
            for line in _json_lines(resp):
                if line.get("error") or line.get("errorDetail"):
                    detail = line.get("errorDetail")
                    msg = line.get("error") or (detail.get("message") if isinstance(detail, dict) else detail)
                    raise DaemonError(f"{what}: the Docker engine could not load the image: {msg}")
                text = str(line.get("stream") or "").strip()
                if text:
                    loaded.append(text)
            return loaded
        finally:
            conn.close()

    def save(self, name: str, into: BinaryIO, what: str) -> None:
        """GET /images/NAME/get into ``into`` (a docker-archive). ImageNotFound on 404."""
        conn, resp = self._request("GET", f"/images/{urllib.parse.quote(name, safe='/:@')}/get", what=what)
        try:
            if resp.status == 404:
                raise ImageNotFound(f"{what}: not known to the Docker engine at {self.address}")
            if resp.status != 200:
                raise DaemonError(f"{what}: the Docker engine answered {resp.status} ({self._message(resp)})")
            shutil.copyfileobj(resp, into, 1 << 20)
        except (OSError, http.client.HTTPException) as exc:
            raise DaemonError(f"{what}: the Docker engine broke off the image: {exc}") from None
        finally:
            conn.close()


def _json_lines(resp: http.client.HTTPResponse) -> Iterator[dict[str, object]]:
    """The engine's progress stream: JSON objects, one a line (or concatenated)."""
    dec = json.JSONDecoder()
    buf = resp.read().decode(errors="replace")
    pos = 0
    while pos < len(buf):
        while pos < len(buf) and buf[pos].isspace():
            pos += 1
        if pos >= len(buf):
            break
        try:
            obj, pos = dec.raw_decode(buf, pos)
        except ValueError:
            break
        if isinstance(obj, dict):
            yield obj
