"""cosign's encrypted private keys (``cosign generate-key-pair``), read with `cryptography`
and a small XSalsa20 here (NaCl's secretbox is not in `cryptography`).

PEM type ``ENCRYPTED SIGSTORE PRIVATE KEY`` (or the older ``ENCRYPTED COSIGN PRIVATE KEY``);
its body is JSON as go-securesystemslib's ``encrypted`` package writes it::

    {"kdf": {"name": "scrypt", "params": {"N": 32768, "r": 8, "p": 1}, "salt": B64},
     "cipher": {"name": "nacl/secretbox", "nonce": B64}, "ciphertext": B64}

key = scrypt(passphrase, salt, N, r, p, 32 bytes); the plaintext, opened with
crypto_secretbox_xsalsa20poly1305 (Go's box layout: 16-byte Poly1305 tag, then the
ciphertext), is the PKCS#8 DER private key. The passphrase is --sign-passphrase-file's,
else $COSIGN_PASSWORD (cosign's variable), else empty.
"""
from __future__ import annotations

import base64
import json
import os
import struct
from typing import TYPE_CHECKING, Any

from builder.errors import UsageError
from builder.lazyimport import lazy

if TYPE_CHECKING:
    from cryptography import exceptions as crypto_exceptions
    from cryptography.hazmat.primitives import poly1305, serialization
    from cryptography.hazmat.primitives.kdf import scrypt
else:  # imported at the first key decrypted (start-up: builder/lazyimport.py)
    crypto_exceptions = lazy("cryptography.exceptions")
    poly1305 = lazy("cryptography.hazmat.primitives.poly1305")
    serialization = lazy("cryptography.hazmat.primitives.serialization")
    scrypt = lazy("cryptography.hazmat.primitives.kdf.scrypt")

_SIGMA = struct.unpack("<4I", b"expand 32-byte k")
_MASK = 0xFFFFFFFF


def _rotl(v: int, c: int) -> int:
    return ((v << c) & _MASK) | (v >> (32 - c))


def _rounds(x: list[int]) -> list[int]:
    """Salsa20/20's ten double rounds (column round, then row round) on 16 words."""
    x = list(x)
    for _ in range(10):
        for a, b, c, d in ((0, 4, 8, 12), (5, 9, 13, 1), (10, 14, 2, 6), (15, 3, 7, 11),
                           (0, 1, 2, 3), (5, 6, 7, 4), (10, 11, 8, 9), (15, 12, 13, 14)):
            x[b] ^= _rotl((x[a] + x[d]) & _MASK, 7)
            x[c] ^= _rotl((x[b] + x[a]) & _MASK, 9)
            x[d] ^= _rotl((x[c] + x[b]) & _MASK, 13)
            x[a] ^= _rotl((x[d] + x[c]) & _MASK, 18)
    return x


def _state(key: bytes, inp16: bytes) -> list[int]:
    k = struct.unpack("<8I", key)
    i = struct.unpack("<4I", inp16)
    return [_SIGMA[0], k[0], k[1], k[2], k[3], _SIGMA[1], i[0], i[1], i[2], i[3], _SIGMA[2],
            k[4], k[5], k[6], k[7], _SIGMA[3]]


def hsalsa20(key: bytes, nonce16: bytes) -> bytes:
    """HSalsa20: a 32-byte subkey from a 32-byte key and a 16-byte input."""
    x = _rounds(_state(key, nonce16))
    return struct.pack("<8I", x[0], x[5], x[10], x[15], x[6], x[7], x[8], x[9])


def salsa20_stream(key: bytes, nonce8: bytes, length: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < length:
        s = _state(key, nonce8 + struct.pack("<Q", counter))
        x = _rounds(s)
        out += struct.pack("<16I", *(((a + b) & _MASK) for a, b in zip(x, s)))
        counter += 1
    return bytes(out[:length])


def _xsalsa20_stream(key: bytes, nonce24: bytes, length: int) -> bytes:
    return salsa20_stream(hsalsa20(key, nonce24[:16]), nonce24[16:], length)


def secretbox_open(box: bytes, nonce: bytes, key: bytes) -> bytes | None:
    """NaCl crypto_secretbox_open (tag || ciphertext, as Go's secretbox.Seal writes); None if forged."""
    if len(box) < 16 or len(nonce) != 24 or len(key) != 32:
        return None
    tag, ct = box[:16], box[16:]
    stream = _xsalsa20_stream(key, nonce, 32 + len(ct))
    try:
        poly1305.Poly1305.verify_tag(stream[:32], ct, tag)
    except crypto_exceptions.InvalidSignature:
        return None
    return bytes(a ^ b for a, b in zip(ct, stream[32:]))


def secretbox_seal(message: bytes, nonce: bytes, key: bytes) -> bytes:
    """NaCl crypto_secretbox: tag || ciphertext."""
    stream = _xsalsa20_stream(key, nonce, 32 + len(message))
    ct = bytes(a ^ b for a, b in zip(message, stream[32:]))
    return poly1305.Poly1305.generate_tag(stream[:32], ct) + ct


def _pem_body(data: bytes) -> bytes:
    lines = [ln.strip() for ln in data.decode("ascii", "replace").splitlines()]
    body = [ln for ln in lines if ln and not ln.startswith("-----")]
    return base64.b64decode("".join(body))


def decrypt_cosign_key(data: bytes, passphrase: str | None, path: str) -> Any:
    """The private key of a cosign-encrypted PEM file; UsageError naming ``path`` otherwise."""
    if passphrase is None:
        passphrase = os.environ.get("COSIGN_PASSWORD", "")
    try:
        doc = json.loads(_pem_body(data))
        kdf, cipher = doc["kdf"], doc["cipher"]
        if kdf.get("name") != "scrypt" or cipher.get("name") != "nacl/secretbox":
            raise UsageError(f"signing key {path}: unsupported encryption {kdf.get('name')}/{cipher.get('name')}")
        params = kdf["params"]
        salt, nonce = base64.b64decode(kdf["salt"]), base64.b64decode(cipher["nonce"])
        box = base64.b64decode(doc["ciphertext"])
        n, r, p = int(params["N"]), int(params["r"]), int(params["p"])
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UsageError(f"signing key {path}: not a cosign encrypted key") from None
    if n > 1 << 20 or r > 32 or p > 16:
        raise UsageError(f"signing key {path}: scrypt parameters too large (N={n}, r={r}, p={p})")
    key = scrypt.Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode())
    der = secretbox_open(box, nonce, key)
    if der is None:
        raise UsageError(f"signing key {path}: wrong passphrase (--sign-passphrase-file or $COSIGN_PASSWORD)")
    try:
        return serialization.load_der_private_key(der, None)
    except ValueError:
        raise UsageError(f"signing key {path}: decrypted, but not a PKCS#8 private key") from None


def encrypt_cosign_key(der_pkcs8: bytes, passphrase: str, *, n: int = 32768) -> bytes:
    """The PEM cosign writes for ``der_pkcs8`` (for tests and key conversion)."""
    salt, nonce = os.urandom(32), os.urandom(24)
    key = scrypt.Scrypt(salt=salt, length=32, n=n, r=8, p=1).derive(passphrase.encode())
    doc = {"kdf": {"name": "scrypt", "params": {"N": n, "r": 8, "p": 1}, "salt": base64.b64encode(salt).decode()},
           "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
           "ciphertext": base64.b64encode(secretbox_seal(der_pkcs8, nonce, key)).decode()}
    body = base64.b64encode(json.dumps(doc).encode()).decode()
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return ("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n" + "\n".join(lines) +
            "\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n").encode()
