"""cosign's encrypted key format: the XSalsa20-Poly1305 secretbox checked against NaCl's
published vector (the crypto_box / crypto_secretbox test of "Cryptography in NaCl",
D. J. Bernstein, section 10: firstkey, nonce, the 131-byte message and its box, as
libsodium's test/default/secretbox.c carries them), and a key file round trip."""
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from builder.errors import UsageError
from builder.image import cosignkey
from builder.image.sign import load_private_key

KEY = bytes.fromhex("1b27556473e985d462cd51197a9a46c76009549eac6474f206c4ee0844f68389")
NONCE = bytes.fromhex("69696ee955b62b73cd62bda875fc73d68219e0036b7a0b37")
MESSAGE = bytes.fromhex(
    "be075fc53c81f2d5cf141316ebeb0c7b5228c52a4c62cbd44b66849b64244ffce5ecbaaf33bd751a1ac728d45e6c6129"
    "6cdc3c01233561f41db66cce314adb310e3be8250c46f06dceea3a7fa1348057e2f6556ad6b1318a024a838f21af1fde"
    "048977eb48f59ffd4924ca1c60902e52f0a089bc76897040e082f937763848645e0705")
BOX = bytes.fromhex(  # 16-byte Poly1305 tag, then the ciphertext
    "f3ffc7703f9400e52a7dfb4b3d3305d98e993b9f48681273c29650ba32fc76ce48332ea7164d96a4476fb8c531a1186a"
    "c0dfc17c98dce87b4da7f011ec48c97271d2c20f9b928fe2270d6fb863d51738b48eeee314a7cc8ab932164548e526ae"
    "90224368517acfeabd6bb3732bc0e9da99832b61ca01b6de56244a9e88d5f9b37973f622a43d14a6599b1f654cb45a74e355a5")


def test_secretbox_matches_nacl_vector():
    assert len(MESSAGE) == 131 and len(BOX) == 147
    assert cosignkey.secretbox_seal(MESSAGE, NONCE, KEY) == BOX
    assert cosignkey.secretbox_open(BOX, NONCE, KEY) == MESSAGE
    forged = BOX[:20] + bytes([BOX[20] ^ 1]) + BOX[21:]
    assert cosignkey.secretbox_open(forged, NONCE, KEY) is None


def test_cosign_key_file_round_trip(tmp_path, monkeypatch):
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path = tmp_path / "cosign.key"
    path.write_bytes(cosignkey.encrypt_cosign_key(der, "s3cret", n=1 << 14))
    got = load_private_key(str(path), "s3cret")
    sig = got.sign(b"payload", ec.ECDSA(hashes.SHA256()))
    key.public_key().verify(sig, b"payload", ec.ECDSA(hashes.SHA256()))
    monkeypatch.setenv("COSIGN_PASSWORD", "s3cret")
    assert load_private_key(str(path)).private_numbers() == key.private_numbers()
    with pytest.raises(UsageError, match="wrong passphrase"):
        load_private_key(str(path), "nope")
