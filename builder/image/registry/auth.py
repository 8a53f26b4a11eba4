"""Registry credentials and the authentication handshake.

Credentials come from --creds, then the auth files podman and docker use
($REGISTRY_AUTH_FILE or --authfile, $XDG_RUNTIME_DIR/containers/auth.json,
~/.config/containers/auth.json, $DOCKER_CONFIG/config.json or
~/.docker/config.json), including ``credHelpers``/``credsStore``
(docker-credential-NAME get|store|erase). The handshake follows the
WWW-Authenticate challenge: Basic, or Bearer with a token per scope, cached.
"""
from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.errors import AuthError, UsageError
from builder.image.atomic import write_atomic

DOCKER_HUB_KEYS = ("docker.io", "https://index.docker.io/v1/", "index.docker.io", "registry-1.docker.io")


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def basic(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


def default_auth_file() -> Path:
    """Where `bale login` writes: $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json, else ~/.config."""
    env = os.environ.get("REGISTRY_AUTH_FILE")
    if env:
        return Path(env)
    run = os.environ.get("XDG_RUNTIME_DIR")
    if run and os.path.isdir(run):
        return Path(run) / "containers" / "auth.json"
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "containers" / "auth.json"


def auth_files(authfile: str | None) -> list[Path]:
    if authfile:
        return [Path(authfile)]
    out = []
    if os.environ.get("REGISTRY_AUTH_FILE"):
        out.append(Path(os.environ["REGISTRY_AUTH_FILE"]))
    if os.environ.get("XDG_RUNTIME_DIR"):
        out.append(Path(os.environ["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    out.append(Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "containers" / "auth.json")
    docker_cfg = os.environ.get("DOCKER_CONFIG")
    out.append(Path(docker_cfg) / "config.json" if docker_cfg else Path.home() / ".docker" / "config.json")
    return out


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: cannot read auth file: {exc}") from None
    return data if isinstance(data, dict) else {}


def _keys_for(registry: str, repo: str | None) -> list[str]:
    """Most specific first: host/repo prefixes, then the host (docker.io's legacy spellings too)."""
    keys = []
    if repo:
        parts = repo.split("/")
        for i in range(len(parts), 0, -1):
            keys.append(f"{registry}/{'/'.join(parts[:i])}")
    keys.append(registry)
    if registry == "docker.io":
        keys.extend(DOCKER_HUB_KEYS[1:])
    return keys


def _normalise_key(key: str) -> str:
    k = re.sub(r"^https?://", "", key).rstrip("/")
    return k.removesuffix("/v1").removesuffix("/v2")


def helper_get(helper: str, server: str) -> Credentials | None:
    try:
        out = subprocess.run([f"docker-credential-{helper}", "get"], input=server.encode(), capture_output=True,
                             timeout=30)
    except FileNotFoundError:
        raise AuthError(f"credential helper docker-credential-{helper} not found on PATH") from None
    if out.returncode != 0:
        if b"credentials not found" in out.stdout.lower() + out.stderr.lower():
            return None
        raise AuthError(f"credential helper {helper} failed for {server}: "
                        f"{(out.stderr or out.stdout).decode(errors='replace').strip()[:200]}")
    try:
        d = json.loads(out.stdout)
    except ValueError:
        raise AuthError(f"credential helper {helper}: malformed answer for {server}") from None
    return Credentials(d.get("Username", ""), d.get("Secret", ""))


def helper_store(helper: str, server: str, creds: Credentials) -> None:
    payload = json.dumps({"ServerURL": server, "Username": creds.username, "Secret": creds.password}).encode()
    out = subprocess.run([f"docker-credential-{helper}", "store"], input=payload, capture_output=True, timeout=30)
    if out.returncode != 0:
        raise AuthError(f"credential helper {helper}: cannot store credentials for {server}")


def helper_erase(helper: str, server: str) -> None:
    subprocess.run([f"docker-credential-{helper}", "erase"], input=server.encode(), capture_output=True, timeout=30)


def lookup(registry: str, repo: str | None, creds: str | None = None, authfile: str | None = None) -> Credentials | None:
    """Credentials for ``registry``/``repo``, or None for anonymous access."""
    if creds:
        user, sep, pw = creds.partition(":")
        if not user:
            raise UsageError("--creds: expected USERNAME[:PASSWORD]")
        if not sep:
            import getpass
            pw = getpass.getpass(f"Password for {user}@{registry}: ")
        return Credentials(user, pw)
    keys = _keys_for(registry, repo)
    for path in auth_files(authfile):
        data = _read_json(path)
        helpers = data.get("credHelpers") or {}
        for k in keys:
            if k in helpers:
                return helper_get(helpers[k], k)
        auths = {_normalise_key(k): v for k, v in (data.get("auths") or {}).items()}
        for k in keys:
            entry = auths.get(_normalise_key(k))
            if entry:
                if entry.get("auth"):
                    try:
                        user, _, pw = base64.b64decode(entry["auth"]).decode().partition(":")
                    except (ValueError, UnicodeDecodeError):
                        raise UsageError(f"{path}: malformed auth entry for {k}") from None
                    return Credentials(user, pw)
                if entry.get("username"):
                    return Credentials(entry["username"], entry.get("password", ""))
        if data.get("credsStore"):
            found = helper_get(data["credsStore"], registry)
            if found:
                return found
    return None


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    """``data`` as the auth file ``path`` (JSON, mode 0600; a new parent directory 0700), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, json.dumps(data, indent=1).encode(), prefix=".auth-", mode=0o600)


def save_login(registry: str, creds: Credentials, authfile: str | None) -> Path:
    path = Path(authfile) if authfile else default_auth_file()
    data = _read_json(path)
    helper = (data.get("credHelpers") or {}).get(registry) or data.get("credsStore")
    if helper:
        helper_store(helper, registry, creds)
        return path
    auths = data.setdefault("auths", {})
    auths[registry] = {"auth": base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()}
    _write_atomic(path, data)
    return path


def remove_login(registry: str | None, authfile: str | None) -> bool:
    """Forget ``registry`` (None: all); True if something was removed."""
    path = Path(authfile) if authfile else default_auth_file()
    data = _read_json(path)
    auths = data.get("auths") or {}
    if registry is None:
        removed = bool(auths)
        data["auths"] = {}
    else:
        keys = [k for k in auths if _normalise_key(k) == _normalise_key(registry)]
        for k in keys:
            del auths[k]
        removed = bool(keys)
        helper = (data.get("credHelpers") or {}).get(registry) or data.get("credsStore")
        if helper:
            helper_erase(helper, registry)
            removed = True
    if removed and path.exists():
        _write_atomic(path, data)
    return removed


# --- challenges --------------------------------------------------------------------
_PARAM = re.compile(r'(\w+)="([^"]*)"|(\w+)=([^,\s]+)')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    params = {}
    for m in _PARAM.finditer(rest):
        if m.group(1):
            params[m.group(1).lower()] = m.group(2)
        else:
            params[m.group(3).lower()] = m.group(4)
    return scheme.lower(), params


class TokenCache:
    """Bearer tokens per (registry, scope), thread-safe, dropped shortly before they expire."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}
        self._lock = threading.Lock()

    def get(self, registry: str, scope: str) -> str | None:
        with self._lock:
            tok = self._tokens.get((registry, scope))
        if tok and tok[1] > time.time() + 5:
            return tok[0]
        return None

    def put(self, registry: str, scope: str, token: str, expires_in: float) -> None:
        with self._lock:
            self._tokens[(registry, scope)] = (token, time.time() + max(expires_in, 60))

    def drop(self, registry: str, scope: str) -> None:
        with self._lock:
            self._tokens.pop((registry, scope), None)
