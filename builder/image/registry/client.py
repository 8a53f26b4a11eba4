"""A client for one registry (OCI distribution spec, Docker registry v2).

Pulls verify every digest and resume broken downloads with Range; pushes skip
blobs the registry has (HEAD), mount across repositories, upload large blobs in
chunks and, when a chunk fails, ask the registry how far it got and continue
from there instead of from byte 0.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
import urllib.parse
from typing import Any, BinaryIO, Callable, Iterator, Sequence

from builder.errors import AuthError, BaleError, DigestMismatch, NotFoundError, RegistryError
from builder.image.compress import DigestingSink
from builder.image.oci import MANIFEST_ACCEPT, Descriptor, detect_media_type, new_hasher, sha256_digest
from builder.image.reference import check_not_blocked
from builder.image.registry import auth
from builder.image.registry.http import Backoff, Response, Transport, describe, error_message, retry_after
from builder.image.registry.options import RegistryOptions
from builder.progress import NullProgress, Progress

log = logging.getLogger("bale")
MONOLITHIC_LIMIT = int(os.environ.get("BALE_MONOLITHIC_LIMIT", 32 << 20))
#: bytes per PATCH of a chunked upload. Every PATCH costs a round trip and, in distribution's
#: filesystem driver, fsyncs of the data and of a hash state (a 166 MB blob: 91 fsyncs in 16 MiB
#: chunks, 51 in 128 MiB ones, 46 in one PATCH, counted with strace -c on Debian's docker-registry);
#: containers/image sends a blob in one PATCH. A chunk that breaks resumes where the registry stands.
CHUNK_SIZE = int(os.environ.get("BALE_CHUNK_SIZE", 128 << 20))
#: bytes asked of the connection per read of a blob's body (a broken connection loses the piece in
#: flight: the resume starts after the last whole one)
READ_CHUNK = 1 << 18
#: blobs from this size on are written to their sink by a second thread while the next piece is
#: received (the store's writer hashes and writes, both without the GIL)
WRITE_BEHIND_MIN = 1 << 20
#: bytes of a blob handed to the connection per send
SEND_CHUNK = 1 << 20
MAX_RESUMES = 8


class _Body:
    """A sized request body, streamed: requests sends Content-Length (``len``) and then the
    pieces iteration gives, each up to SEND_CHUNK bytes. Iterable and without ``read``, so
    urllib3 sends whole pieces rather than reading it 16 KiB at a time."""

    def __init__(self, reader: BinaryIO, length: int, on_read: Callable[[int], None] | None = None) -> None:
        self.reader, self.remaining, self.on_read = reader, length, on_read

    def __len__(self) -> int:
        return self.remaining

    def __iter__(self) -> Iterator[bytes]:
        while self.remaining > 0:
            data = self.reader.read(min(SEND_CHUNK, self.remaining))
            if not data:
                return
            self.remaining -= len(data)
            if self.on_read:
                self.on_read(len(data))
            yield data


class RegistryClient:
    def __init__(self, registry: str, options: RegistryOptions | None = None,
                 progress: Progress | None = None) -> None:
        check_not_blocked(registry)  # registries.conf blocked = true: no request at all
        self.registry = registry
        self.options = options or RegistryOptions()
        self.progress = progress or NullProgress()
        self.http = Transport(self._api_host(registry), self.options)
        self.tokens = auth.TokenCache()
        self._challenge: tuple[str, dict[str, str]] | None = None
        self._creds: dict[str, auth.Credentials | None] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _api_host(registry: str) -> str:
        return "registry-1.docker.io" if registry == "docker.io" else registry

    def close(self) -> None:
        self.http.close()

    # --- auth -------------------------------------------------------------------------
    def _credentials(self, repo: str | None) -> auth.Credentials | None:
        key = repo or ""
        with self._lock:
            if key not in self._creds:
                self._creds[key] = auth.lookup(self.registry, repo, self.options.creds, self.options.authfile)
            return self._creds[key]

    def _scope(self, repo: str | None, push: bool, extra_pull: Sequence[str] = ()) -> str:
        if not repo:
            return ""
        scopes = [f"repository:{repo}:{'pull,push' if push else 'pull'}"]
        scopes += [f"repository:{r}:pull" for r in extra_pull if r != repo]
        return " ".join(scopes)

    def _auth_header(self, repo: str | None, scope: str) -> dict[str, str]:
        if self._challenge is None:
            return {}
        scheme, params = self._challenge
        creds = self._credentials(repo)
        if scheme == "basic":
            return {"Authorization": creds.basic()} if creds else {}
        if scheme == "bearer":
            tok = self.tokens.get(self.registry, scope)
            if tok is None:
                tok = self._fetch_token(params, scope, creds, repo)
            return {"Authorization": f"Bearer {tok}"}
        return {}

    def _fetch_token(self, params: dict[str, str], scope: str, creds: auth.Credentials | None, repo: str | None) -> str:
        realm = params.get("realm")
        if not realm:
            raise AuthError(f"{self._what(repo)}: bearer challenge without a realm")
        q = {"service": params["service"]} if params.get("service") else {}
        if scope:
            q["scope"] = scope
        headers = {"Authorization": creds.basic()} if creds else {}
        if creds:
            q["account"] = creds.username
        resp = self.http.request("GET", realm, what=f"token for {self._what(repo)}", params=q, headers=headers)
        if resp.status_code in (401, 403):
            raise AuthError(f"{self._what(repo)}: wrong username or password" if creds
                            else f"{self._what(repo)}: authentication required")
        if resp.status_code != 200:
            raise AuthError(f"{self._what(repo)}: token server answered {resp.status_code}")
        try:
            body = resp.json()
        except ValueError:
            raise AuthError(f"{self._what(repo)}: token server sent malformed JSON") from None
        tok = body.get("token") or body.get("access_token")
        if not tok:
            raise AuthError(f"{self._what(repo)}: token server sent no token")
        self.tokens.put(self.registry, scope, tok, float(body.get("expires_in") or 60))
        return str(tok)

    def _what(self, repo: str | None, ref: str | None = None) -> str:
        if not repo:
            return self.registry
        return f"{self.registry}/{repo}" + (f"@{ref}" if ref and ref.startswith("sha256:") else f":{ref}" if ref else "")

    def _call(self, method: str, path: str, *, repo: str | None, push: bool = False, what: str,
              extra_pull: Sequence[str] = (), scope: str | None = None, **kw: Any) -> Response:
        """A request with the auth handshake: on 401, answer the challenge once and retry.
        ``scope`` overrides the token scope derived from ``repo`` (e.g. ``registry:catalog:*``)."""
        scope = self._scope(repo, push, extra_pull) if scope is None else scope
        resp = self.http.request(method, path, what=what, auth_header=lambda: self._auth_header(repo, scope), **kw)
        if resp.status_code == 401:
            header = resp.headers.get("WWW-Authenticate", "")
            resp.close()
            if not header:
                raise AuthError(f"{what}: authentication required")
            self._challenge = auth.parse_challenge(header)
            self.tokens.drop(self.registry, scope)
            if self._challenge[0] == "basic" and self._credentials(repo) is None:
                raise AuthError(f"{what}: authentication required")
            if kw.get("data") is not None and hasattr(kw["data"], "read"):
                raise _Reauth()  # a streamed body cannot be replayed here; the caller reopens it
            resp = self.http.request(method, path, what=what, auth_header=lambda: self._auth_header(repo, scope),
                                     **kw)
            if resp.status_code == 401:
                creds = self._credentials(repo)
                resp.close()
                raise AuthError(f"{what}: wrong username or password" if creds
                                else f"{what}: authentication required")
        if resp.status_code == 403:
            resp.close()
            raise AuthError(f"{what}: access denied ({error_message(resp)})")
        return resp

    def _fail(self, resp: Response, what: str) -> BaleError:
        msg = error_message(resp)
        resp.close()
        if resp.status_code == 404:
            return NotFoundError(f"{what}: not found ({msg})")
        return RegistryError(f"{what}: registry answered {resp.status_code} ({msg})")

    def check_auth(self) -> None:
        """GET /v2/ through the challenge (for login); AuthError on bad credentials."""
        resp = self.http.request("GET", "/v2/", what=f"login to {self.registry}")
        if resp.status_code == 401:
            self._challenge = auth.parse_challenge(resp.headers.get("WWW-Authenticate", ""))
            creds = self._credentials(None)
            if creds is None:
                raise AuthError(f"login to {self.registry}: credentials required")
            if self._challenge[0] == "bearer":
                self._fetch_token(self._challenge[1], "", creds, None)
                return
            resp = self.http.request("GET", "/v2/", what=f"login to {self.registry}",
                                     headers={"Authorization": creds.basic()})
            if resp.status_code == 401:
                raise AuthError(f"login to {self.registry}: wrong username or password")
        if resp.status_code >= 400:
            raise self._fail(resp, f"login to {self.registry}")

    # --- manifests ----------------------------------------------------------------
    def get_manifest(self, repo: str, reference: str) -> tuple[bytes, str, str]:
        what = self._what(repo, reference)
        resp = self._call("GET", f"/v2/{repo}/manifests/{reference}", repo=repo, what=what,
                          headers={"Accept": MANIFEST_ACCEPT})
        if resp.status_code != 200:
            raise self._fail(resp, what)
        data = resp.content
        if len(data) > 4 << 20:
            raise RegistryError(f"{what}: manifest larger than 4 MiB")
        digest = sha256_digest(data)
        if reference.startswith("sha256:") and digest != reference:
            raise DigestMismatch(f"{what}: manifest content has digest {digest}")
        header = resp.headers.get("Docker-Content-Digest")
        if header and header.startswith("sha256:") and header != digest:
            raise DigestMismatch(f"{what}: manifest content has digest {digest}, registry says {header}")
        mt = detect_media_type(data, resp.headers.get("Content-Type", "").split(";")[0], f"manifest of {what}")
        return data, mt, digest

    def head_manifest(self, repo: str, reference: str) -> tuple[str, str, int] | None:
        what = self._what(repo, reference)
        resp = self._call("HEAD", f"/v2/{repo}/manifests/{reference}", repo=repo, what=what,
                          headers={"Accept": MANIFEST_ACCEPT})
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise self._fail(resp, what)
        digest = resp.headers.get("Docker-Content-Digest", "")
        if not digest:  # some registries omit it on HEAD
            data, mt, digest = self.get_manifest(repo, reference)
            return digest, mt, len(data)
        return digest, resp.headers.get("Content-Type", "").split(";")[0], int(resp.headers.get("Content-Length", 0))

    def put_manifest(self, repo: str, reference: str, data: bytes, media_type: str) -> str:
        what = self._what(repo, reference)
        resp = self._call("PUT", f"/v2/{repo}/manifests/{reference}", repo=repo, push=True, what=what,
                          data=data, headers={"Content-Type": media_type})
        if resp.status_code not in (200, 201, 202):
            raise self._fail(resp, f"push manifest {what}")
        resp.close()
        return sha256_digest(data)

    def list_tags(self, repo: str, page_size: int | None = None) -> list[str]:
        """Every tag of ``repo`` (GET /v2/<name>/tags/list, following ``Link: <...>; rel="next"``
        pages as the distribution spec's content discovery has them)."""
        return self._paged(f"/v2/{repo}/tags/list", "tags", self._what(repo), repo=repo, page_size=page_size)

    def catalog(self, page_size: int | None = None) -> list[str]:
        """Every repository the registry lists (GET /v2/_catalog, paged by ``n``/``last`` and Link;
        token scope ``registry:catalog:*`` as docker/distribution's token auth asks)."""
        return self._paged("/v2/_catalog", "repositories", f"catalog of {self.registry}", repo=None,
                           page_size=page_size, scope="registry:catalog:*")

    def _paged(self, path: str, key: str, what: str, *, repo: str | None, page_size: int | None,
               scope: str | None = None) -> list[str]:
        out: list[str] = []
        params = {"n": str(page_size)} if page_size else None
        url: str | None = path
        seen: set[str] = set()
        while url is not None and url not in seen:
            seen.add(url)
            resp = self._call("GET", url, repo=repo, what=what, params=params, scope=scope)
            if resp.status_code != 200:
                raise self._fail(resp, what)
            try:
                body = resp.json()
                items = body.get(key) or []
            except (ValueError, AttributeError):
                raise RegistryError(f"{what}: the registry sent malformed JSON") from None
            if not isinstance(items, list):
                raise RegistryError(f"{what}: the registry sent malformed JSON ({key!r} is not a list)")
            out += [str(i) for i in items]
            nxt = resp.links.get("next", {}).get("url")
            url, params = (urllib.parse.urljoin(path, nxt) if nxt else None), None
        return out

    # --- blobs --------------------------------------------------------------------
    def blob_exists(self, repo: str, digest: str) -> bool:
        what = f"blob {digest[:19]} in {self._what(repo)}"
        resp = self._call("HEAD", f"/v2/{repo}/blobs/{digest}", repo=repo, what=what)
        resp.close()
        if resp.status_code == 200:
            return True
        if resp.status_code == 404:
            return False
        raise self._fail(resp, what)

    def fetch_blob(self, repo: str, desc: Descriptor, sink: Any, reset: Callable[[], None] | None = None) -> None:
        """Stream the blob into ``sink``, verified against ``desc`` (DigestMismatch otherwise).
        Each byte is hashed once: by ``sink`` when it is a DigestingSink (its ``written()`` is
        checked), else here.

        A broken connection resumes with ``Range: bytes=N-``. A registry that ignores Range (200
        instead of 206) sends the blob again from byte 0: with ``reset`` the sink is emptied and
        filled again, without it the first N bytes of the new answer are read and dropped (the
        final digest check covers both halves). Fails after MAX_RESUMES breaks, or after two
        breaks in a row that brought no new byte."""
        what = f"blob {desc.digest[:19]} of {self._what(repo)}"
        # a sink that hashes what it is given (the store's BlobWriter) is not hashed again here; one
        # that already held bytes, or that ``reset`` refills, is
        own_hash = reset is not None or not isinstance(sink, DigestingSink) or sink.written()[1] != 0
        hasher = new_hasher(desc.digest) if own_hash else None
        got = 0
        stalled = 0
        self.progress.start(desc.digest, desc.digest[7:19], desc.size or None)
        use_range = True
        for attempt in range(MAX_RESUMES + 1):
            headers = {"Range": f"bytes={got}-"} if got and use_range else {}
            resp = self._call("GET", f"/v2/{repo}/blobs/{desc.digest}", repo=repo, what=what, stream=True,
                              headers=headers)
            if resp.status_code == 416 and headers:  # Range refused outright: ask for the whole blob
                resp.close()
                use_range = False
                resp = self._call("GET", f"/v2/{repo}/blobs/{desc.digest}", repo=repo, what=what, stream=True)
            skip = 0
            if resp.status_code == 200 and got:
                log.info("%s: the registry ignored Range; reading the blob again from byte 0", what)
                if reset is not None:
                    reset()
                    self.progress.advance(desc.digest, -got)
                    hasher, got = new_hasher(desc.digest), 0  # reset is given: this side hashes
                else:
                    skip = got
            elif resp.status_code == 206 and got and not _range_starts_at(resp.headers.get("Content-Range"), got):
                resp.close()
                raise RegistryError(f"{what}: the registry answered a different range than asked "
                                    f"({resp.headers.get('Content-Range')!r} for bytes={got}-)")
            elif resp.status_code not in (200, 206):
                raise self._fail(resp, what)
            before = got
            out: Any = _WriteBehind(sink) if desc.size >= WRITE_BEHIND_MIN else sink
            try:
                for chunk in resp.iter_content(READ_CHUNK):
                    if skip:
                        drop = min(skip, len(chunk))
                        chunk, skip = chunk[drop:], skip - drop
                        if not chunk:
                            continue
                    if hasher is not None:
                        hasher.update(chunk)
                    out.write(chunk)
                    got += len(chunk)
                    self.progress.advance(desc.digest, len(chunk))
                    if desc.size and got > desc.size:
                        raise DigestMismatch(f"{what}: more bytes than the {desc.size} the descriptor says")
                if skip:
                    raise RegistryError(f"{what}: the registry sent fewer bytes than before")
                if out is not sink:
                    out.finish()
                break
            except BaleError:
                raise
            except Exception as exc:  # connection broke mid-body: resume from `got`
                resp.close()
                if out is not sink:
                    out.stop()  # what arrived is written before the resume
                    if out.error is not None:  # the sink failed, not the connection: no resume
                        raise RegistryError(f"{what}: download failed: {describe(out.error)}") from None
                stalled = stalled + 1 if got == before else 0
                if attempt == MAX_RESUMES or stalled >= 2:
                    raise RegistryError(f"{what}: download failed: {describe(exc)}") from None
                log.info("%s: %s after %d bytes, resuming", what, describe(exc), got)
            finally:
                if out is not sink:
                    out.stop()  # idempotent; never leaves the thread writing into a sink being aborted
        if hasher is not None:
            digest, written = f"{desc.digest.split(':', 1)[0]}:{hasher.hexdigest()}", got
        else:
            digest, written = sink.written()
        if (desc.size and got != desc.size) or written != got or digest != desc.digest:
            raise DigestMismatch(f"{what}: content does not match its digest")
        self.progress.done(desc.digest)

    def push_blob(self, repo: str, desc: Descriptor, open_at: Callable[[int], BinaryIO],
                  mount_from: Sequence[str] = ()) -> str:
        """"exists", "mounted" or "uploaded"."""
        what = f"push blob {desc.digest[:19]} to {self._what(repo)}"
        if self.blob_exists(repo, desc.digest):
            self.progress.done(desc.digest, "exists")
            return "exists"
        location = None
        for src in mount_from:
            if src == repo:
                continue
            resp = self._call("POST", f"/v2/{repo}/blobs/uploads/", repo=repo, push=True, what=what,
                              extra_pull=[src], params={"mount": desc.digest, "from": src}, data=b"")
            if resp.status_code == 201:
                resp.close()
                self.progress.done(desc.digest, "mounted")
                return "mounted"
            if resp.status_code == 202:
                location = resp.headers.get("Location")
                resp.close()
                break
            resp.close()
        self.progress.start(desc.digest, desc.digest[7:19], desc.size)
        for _session in range(3):
            if location is None:
                location = self._start_upload(repo, what)
            try:
                self._upload(repo, desc, open_at, location, what)
                self.progress.done(desc.digest, "uploaded")
                return "uploaded"
            except _SessionGone:
                location = None
        raise RegistryError(f"{what}: the registry kept dropping the upload session")

    def _start_upload(self, repo: str, what: str) -> str:
        resp = self._call("POST", f"/v2/{repo}/blobs/uploads/", repo=repo, push=True, what=what, data=b"")
        if resp.status_code != 202 or not resp.headers.get("Location"):
            raise self._fail(resp, what)
        resp.close()
        return resp.headers["Location"]

    def _put_final(self, repo: str, location: str, desc: Descriptor, what: str, body: Any = b"",
                   length: int = 0) -> None:
        sep = "&" if "?" in location else "?"
        headers = {"Content-Type": "application/octet-stream"}
        if not length:
            headers["Content-Length"] = "0"
        resp = self._call("PUT", f"{location}{sep}digest={desc.digest}", repo=repo, push=True, what=what,
                          data=body, headers=headers, retry=not length)
        if resp.status_code == 404:
            resp.close()
            raise _SessionGone()
        if resp.status_code not in (201, 204):
            raise self._fail(resp, what)
        resp.close()

    def _upload(self, repo: str, desc: Descriptor, open_at: Callable[[int], BinaryIO], location: str,
                what: str) -> None:
        size = desc.size
        if size <= MONOLITHIC_LIMIT:
            for attempt in range(4):
                with open_at(0) as fh:
                    try:
                        self._put_final(repo, location, desc, what,
                                        _Body(fh, size, lambda n: self.progress.advance(desc.digest, n)), size)
                        return
                    except (RegistryError, _Reauth) as exc:
                        if isinstance(exc, AuthError) or attempt == 3:
                            raise
                        self.progress.advance(desc.digest, -size)
                        Backoff(self.options.retry_delay).sleep()
                        raise _SessionGone() from None
        offset = 0
        failures = 0
        backoff = Backoff(self.options.retry_delay)
        zero_clamped = False  # the last status said "0-0": nothing, or (never from us) one byte
        while offset < size:
            end = min(offset + CHUNK_SIZE, size)
            shown = [offset]  # where the progress bar stands

            def advance(n: int) -> None:
                shown[0] += n
                self.progress.advance(desc.digest, n)
            try:
                with open_at(offset) as fh:
                    resp = self._call("PATCH", location, repo=repo, push=True, what=what, retry=False,
                                      data=_Body(fh, end - offset, advance),
                                      headers={"Content-Type": "application/octet-stream",
                                               "Content-Range": f"{offset}-{end - 1}"})
                if resp.status_code == 404:
                    resp.close()
                    raise _SessionGone()
                if resp.status_code == 416 and zero_clamped and offset == 0:
                    # "0-0" meant one byte after all: the registry wants the chunk from byte 1
                    resp.close()
                    self.progress.advance(desc.digest, 1 - shown[0])
                    offset, zero_clamped = 1, False
                    continue
                if resp.status_code != 202:
                    if resp.status_code < 500 and resp.status_code not in (408, 416, 429):
                        raise self._fail(resp, what)
                    wait = retry_after(resp)
                    resp.close()
                    raise _ChunkFailed(f"registry answered {resp.status_code}", wait)
                location = resp.headers.get("Location") or location
                resp.close()
                offset = upload_offset(resp.headers.get("Range"), end)
                failures, zero_clamped = 0, False
            except (RegistryError, _Reauth, _ChunkFailed) as exc:
                if isinstance(exc, (AuthError, NotFoundError)):
                    raise
                failures += 1
                if failures > max(MAX_RESUMES, self.options.retries):
                    raise RegistryError(f"{what}: chunk upload failed {failures} times: {exc}") from None
                waited = backoff.sleep(exc.wait if isinstance(exc, _ChunkFailed) else None)
                offset, location, zero_clamped = self._upload_status(repo, location, what)
                log.info("%s: chunk failed (%s); waited %.1f s; the registry has %d bytes, resuming there",
                         what, exc, waited, offset)
                self.progress.advance(desc.digest, offset - shown[0])
        self._put_final(repo, location, desc, what)

    def _upload_status(self, repo: str, location: str, what: str) -> tuple[int, str, bool]:
        """(bytes the registry holds for an upload session, its location, whether the answer was
        the ambiguous ``0-0``), from GET on the upload URL (204 with ``Range: 0-N``)."""
        resp = self._call("GET", location, repo=repo, push=True, what=what)
        resp.close()
        if resp.status_code in (400, 404):  # BLOB_UPLOAD_UNKNOWN, or BLOB_UPLOAD_INVALID and cancelled
            raise _SessionGone()
        if resp.status_code not in (202, 204):
            raise self._fail(resp, what)
        header = resp.headers.get("Range")
        return upload_offset(header, 0), resp.headers.get("Location") or location, _is_zero_clamped(header)


def _range_starts_at(header: str | None, offset: int) -> bool:
    """Whether a ``Content-Range: bytes START-END/TOTAL`` answer starts at ``offset`` (no header: trust it)."""
    if not header:
        return True
    first = header.removeprefix("bytes").strip().partition("-")[0]
    return first.strip() == str(offset)


def upload_offset(header: str | None, default: int) -> int:
    """Bytes held by an upload session, from its ``Range: 0-N`` header (N inclusive).

    distribution clamps an empty upload's range to ``0-0`` (registry/handlers/blobupload.go:
    ``endRange := size; if endRange > 0 { endRange = endRange - 1 }``), so ``0-0`` is read as
    nothing stored: bale never sends one-byte chunks, and a 416 on the resent chunk corrects it."""
    if not header:
        return default
    start, _, end = header.removeprefix("bytes=").partition("-")
    try:
        first, last = int(start), int(end)
    except ValueError:
        return default
    if first == 0 and last == 0:
        return 0
    return last + 1


def _is_zero_clamped(header: str | None) -> bool:
    return bool(header) and header.removeprefix("bytes=").strip() == "0-0"  # type: ignore[union-attr]


class _WriteBehind:
    """``sink.write`` in a second thread, in order, at most 4 pieces behind the caller, so the
    next piece is received while the last is hashed and written. ``finish()`` waits for every
    piece and raises what the sink raised; ``stop()`` waits without raising (an error is already
    on its way). An error of the sink also surfaces at the next ``write``."""

    def __init__(self, sink: Any) -> None:
        import queue
        self.sink = sink
        self.error: BaseException | None = None
        self.queue: "queue.Queue[bytes | None]" = queue.Queue(4)
        self.thread = threading.Thread(target=self._run, name="blob-write", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (piece := self.queue.get()) is not None:
            if self.error is None:
                try:
                    self.sink.write(piece)
                except BaseException as exc:  # handed to the caller's thread
                    self.error = exc

    def write(self, data: bytes) -> None:
        if self.error is not None:
            self.stop()
            raise self.error
        self.queue.put(data)

    def stop(self) -> None:
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()

    def finish(self) -> None:
        self.stop()
        if self.error is not None:
            raise self.error


class _ChunkFailed(Exception):
    """A PATCH answered 5xx/429/408: ask the registry where the upload stands, then go on."""

    def __init__(self, message: str, wait: float | None) -> None:
        super().__init__(message)
        self.wait = wait


class _SessionGone(Exception):
    """The upload session vanished (404): start a new one."""


class _Reauth(Exception):
    """A streamed body met an auth challenge: reopen and resend."""


def digest_of_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()
