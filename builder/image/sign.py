"""Sigstore (cosign) signatures without cosign: sign a pushed manifest with a private key and
check such signatures with the public key.

The format is cosign's "simple signing" one, as ``cosign sign --key`` writes it and
``cosign verify --key`` reads it (sigstore/cosign pkg/oci/static, pkg/cosign/payload):

- payload (JSON, layer blob, media type ``application/vnd.dev.cosign.simplesigning.v1+json``)::

    {"critical":{"identity":{"docker-reference":"HOST/REPO"},
                 "image":{"docker-manifest-digest":"sha256:HEX"},
                 "type":"cosign container image signature"},"optional":null}

- signature: ECDSA P-256/SHA-256 (ASN.1 DER; RSA PKCS#1 v1.5 and Ed25519 keys too) over the
  payload bytes, base64, in the layer annotation ``dev.cosignproject.cosign/signature``;
- an OCI image manifest holding those layers, pushed to the same repository under the tag
  ``sha256-HEX.sig``; a second signature of the same digest is appended as another layer.

Keys are PEM (PKCS#8, SEC1 or PKCS#1), optionally encrypted with a passphrase (standard PEM
encryption), or cosign's own encrypted keys (builder/image/cosignkey.py). Errors are UsageError (unreadable key) or SignatureError (nothing verifies).
"""
from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from builder.errors import BaleError, NotFoundError, UsageError
from builder.image.cosignkey import decrypt_cosign_key
from builder.image.oci import OCI_CONFIG, OCI_MANIFEST, Descriptor, sha256_digest
from builder.lazyimport import lazy

if TYPE_CHECKING:
    from cryptography import exceptions as crypto_exceptions
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

    from builder.image.registry.client import RegistryClient
else:  # imported at the first signature made or checked (start-up: builder/lazyimport.py)
    crypto_exceptions = lazy("cryptography.exceptions")
    hashes = lazy("cryptography.hazmat.primitives.hashes")
    serialization = lazy("cryptography.hazmat.primitives.serialization")
    ec = lazy("cryptography.hazmat.primitives.asymmetric.ec")
    ed25519 = lazy("cryptography.hazmat.primitives.asymmetric.ed25519")
    padding = lazy("cryptography.hazmat.primitives.asymmetric.padding")
    rsa = lazy("cryptography.hazmat.primitives.asymmetric.rsa")

SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
PAYLOAD_TYPE = "cosign container image signature"


class SignatureError(BaleError):
    """No signature of an image verifies with the given key, or a signature is malformed."""


@dataclass(frozen=True)
class Verified:
    """One signature that verified: the payload's docker-reference and manifest digest."""
    docker_reference: str
    manifest_digest: str
    payload: bytes


def signature_tag(manifest_digest: str) -> str:
    """``sha256:HEX`` → ``sha256-HEX.sig`` (cosign's tag for the signatures of that manifest)."""
    algo, _, hexd = manifest_digest.partition(":")
    return f"{algo}-{hexd}.sig"


def payload(docker_reference: str, manifest_digest: str) -> bytes:
    """The simple-signing payload, bytes as cosign's Go json.Marshal writes them (field order, no spaces)."""
    return json.dumps({"critical": {"identity": {"docker-reference": docker_reference},
                                    "image": {"docker-manifest-digest": manifest_digest},
                                    "type": PAYLOAD_TYPE},
                       "optional": None}, separators=(",", ":")).encode()


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"{what} {path}: {exc.strerror}") from None


def load_private_key(path: str, passphrase: str | None = None) -> Any:
    """A private key from a PEM file. UsageError naming the file when it cannot be used."""
    data = _read(path, "signing key")
    if b"ENCRYPTED SIGSTORE PRIVATE KEY" in data or b"ENCRYPTED COSIGN PRIVATE KEY" in data:
        return decrypt_cosign_key(data, passphrase, path)
    try:
        return serialization.load_pem_private_key(data, passphrase.encode() if passphrase else None)
    except TypeError:
        raise UsageError(f"signing key {path}: encrypted: give its passphrase (--sign-passphrase-file)") from None
    except ValueError as exc:
        raise UsageError(f"signing key {path}: not a usable PEM private key ({str(exc).splitlines()[0]})") from None


def load_public_key(path: str) -> Any:
    data = _read(path, "public key")
    try:
        return serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise UsageError(f"public key {path}: not a PEM public key ({str(exc).splitlines()[0]})") from None


def sign_bytes(key: Any, data: bytes) -> bytes:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    raise UsageError(f"signing key: {type(key).__name__} keys are not supported (ECDSA, RSA or Ed25519)")


def verify_bytes(key: Any, data: bytes, signature: bytes) -> bool:
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        else:
            raise UsageError(f"public key: {type(key).__name__} keys are not supported")
    except crypto_exceptions.InvalidSignature:
        return False
    return True


def _config(layer_digests: list[str]) -> bytes:
    return json.dumps({"architecture": "", "created": "0001-01-01T00:00:00Z",
                       "history": [{"created": "0001-01-01T00:00:00Z"} for _ in layer_digests],
                       "os": "", "rootfs": {"type": "layers", "diff_ids": layer_digests}, "config": {}},
                      separators=(",", ":")).encode()


def sign_image(client: "RegistryClient", repository: str, docker_reference: str, manifest_digest: str,
               key: Any) -> str:
    """Sign ``manifest_digest`` (pushed to ``repository`` on ``client``'s registry) and push the
    signature as ``sha256-HEX.sig``, keeping signatures already there. Returns the tag."""
    body = payload(docker_reference, manifest_digest)
    sig = base64.b64encode(sign_bytes(key, body)).decode()
    tag = signature_tag(manifest_digest)
    layers: list[dict[str, Any]] = []
    try:
        old, _, _ = client.get_manifest(repository, tag)
        layers = [dict(d) for d in json.loads(old).get("layers") or [] if d.get("mediaType") == SIMPLESIGNING]
    except NotFoundError:
        pass
    layers = [d for d in layers if (d.get("annotations") or {}).get(SIGNATURE_ANNOTATION) != sig]
    layers.append({"mediaType": SIMPLESIGNING, "size": len(body), "digest": sha256_digest(body),
                   "annotations": {SIGNATURE_ANNOTATION: sig}})
    config = _config([d["digest"] for d in layers])
    blobs = {sha256_digest(body): body, sha256_digest(config): config}
    for digest, data in blobs.items():
        client.push_blob(repository, Descriptor(SIMPLESIGNING, digest, len(data)),
                         lambda off, data=data: io.BytesIO(data[off:]))  # type: ignore[misc]
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": OCI_CONFIG, "size": len(config),
                                      "digest": sha256_digest(config)},
                           "layers": layers}, separators=(",", ":")).encode()
    client.put_manifest(repository, tag, manifest, OCI_MANIFEST)
    return tag


def verify_image(client: "RegistryClient", repository: str, manifest_digest: str, key: Any,
                 what: str) -> list[Verified]:
    """Every signature of ``manifest_digest`` in ``repository`` that verifies with ``key`` and
    names that digest. SignatureError (one line naming ``what``) when there is none."""
    tag = signature_tag(manifest_digest)
    try:
        raw, _, _ = client.get_manifest(repository, tag)
    except NotFoundError:
        raise SignatureError(f"{what}: no signatures (no tag {tag})") from None
    try:
        layers = json.loads(raw).get("layers") or []
    except (ValueError, AttributeError):
        raise SignatureError(f"{what}: signature manifest {tag} is malformed") from None
    good: list[Verified] = []
    reasons: list[str] = []
    for d in layers:
        if not isinstance(d, dict) or d.get("mediaType") != SIMPLESIGNING:
            continue
        sig_b64 = (d.get("annotations") or {}).get(SIGNATURE_ANNOTATION, "")
        try:
            sig = base64.b64decode(sig_b64, validate=True)
        except ValueError:
            reasons.append("a signature is not base64")
            continue
        sink = io.BytesIO()
        client.fetch_blob(repository, Descriptor(SIMPLESIGNING, str(d.get("digest")), int(d.get("size") or 0)), sink)
        body = sink.getvalue()
        if not verify_bytes(key, body, sig):
            reasons.append("signature does not verify with the key")
            continue
        try:
            crit = json.loads(body)["critical"]
            signed_digest = crit["image"]["docker-manifest-digest"]
            ref = crit["identity"]["docker-reference"]
            kind = crit["type"]
        except (ValueError, KeyError, TypeError):
            reasons.append("payload is not a simple-signing payload")
            continue
        if kind != PAYLOAD_TYPE:
            reasons.append(f"payload type {kind!r}")
        elif signed_digest != manifest_digest:
            reasons.append(f"signature is for {signed_digest}")
        else:
            good.append(Verified(ref, signed_digest, body))
    if not good:
        why = "; ".join(sorted(set(reasons))) or "no simple-signing layers"
        raise SignatureError(f"{what}: no signature verifies with the key ({why})")
    return good
