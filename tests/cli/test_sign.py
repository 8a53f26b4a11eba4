"""Signing at push (issue 11 item 7): --sign-by-sigstore-private-key writes cosign's
simple-signing signature (sigstore/cosign pkg/cosign/payload: the payload's
critical.identity.docker-reference and critical.image.docker-manifest-digest; the signature
in the layer annotation dev.cosignproject.cosign/signature; the tag sha256-HEX.sig).
Checked here independently: skopeo reads the manifests, urllib the blobs, and `cryptography`
alone verifies the ECDSA signature. cosign itself is not packaged in Debian."""
import base64
import hashlib
import json
import shutil
import subprocess
import urllib.request

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

pytestmark = pytest.mark.skipif(not shutil.which("skopeo"), reason="skopeo not installed: it is the independent "
                                "reader for these tests")


@pytest.fixture
def keypair(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    priv, pub = tmp_path / "cosign.key", tmp_path / "cosign.pub"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return key, priv, pub


def _raw(ref):
    return subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"], check=True,
                          capture_output=True).stdout


def _check_signature(registry, repo, digest, public_key):
    """Verify the cosign signature of HOST/REPO@digest with only skopeo, urllib and cryptography."""
    sig_manifest = json.loads(_raw(f"{registry.host}/{repo}:sha256-{digest[7:]}.sig"))
    layer = sig_manifest["layers"][-1]
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    payload = urllib.request.urlopen(f"http://{registry.host}/v2/{repo}/blobs/{layer['digest']}").read()  # noqa: S310
    assert "sha256:" + hashlib.sha256(payload).hexdigest() == layer["digest"]
    sig = base64.b64decode(layer["annotations"]["dev.cosignproject.cosign/signature"])
    public_key.verify(sig, payload, ec.ECDSA(hashes.SHA256()))  # raises InvalidSignature
    body = json.loads(payload)
    assert body == {"critical": {"identity": {"docker-reference": f"{registry.host}/{repo}"},
                                 "image": {"docker-manifest-digest": digest},
                                 "type": "cosign container image signature"}, "optional": None}
    return sig_manifest


def test_push_signs_and_verify_checks(registry, busybox_layout, bale, keypair, tmp_path):
    key, priv, pub = keypair
    iid = bale("pull", "-q", f"oci:{busybox_layout}:latest").stdout.strip()
    ref = f"{registry.host}/bale/signed:1"
    bale("push", "--tls-verify=false", "--sign-by-sigstore-private-key", str(priv), "--digestfile",
         str(tmp_path / "d"), iid, f"docker://{ref}")
    digest = (tmp_path / "d").read_text()
    assert digest == "sha256:" + hashlib.sha256(_raw(ref)).hexdigest()
    _check_signature(registry, "bale/signed", digest, key.public_key())
    r = bale("verify", "--tls-verify=false", "--key", str(pub), f"docker://{ref}")
    assert json.loads(r.stdout)[0]["critical"]["image"]["docker-manifest-digest"] == digest
    # a second key appends a second signature; both verify independently
    key2 = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "k2").write_bytes(key2.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.BestAvailableEncryption(b"pass phrase")))
    (tmp_path / "pw").write_text("pass phrase\n")
    bale("push", "--tls-verify=false", "--sign-by-sigstore-private-key", str(tmp_path / "k2"),
         "--sign-passphrase-file", str(tmp_path / "pw"), iid, f"docker://{ref}")
    man = json.loads(_raw(f"{registry.host}/bale/signed:sha256-{digest[7:]}.sig"))
    assert len(man["layers"]) == 2
    sig2 = base64.b64decode(man["layers"][1]["annotations"]["dev.cosignproject.cosign/signature"])
    with pytest.raises(InvalidSignature):
        key.public_key().verify(sig2, b"other", ec.ECDSA(hashes.SHA256()))


def test_tampered_manifest_or_payload_fails(registry, busybox_layout, bale, keypair, tmp_path):
    key, priv, pub = keypair
    iid = bale("pull", "-q", f"oci:{busybox_layout}:latest").stdout.strip()
    ref = f"{registry.host}/bale/tamper:1"
    bale("push", "--tls-verify=false", "--sign-by-sigstore-private-key", str(priv), iid, f"docker://{ref}")
    digest = "sha256:" + hashlib.sha256(_raw(ref)).hexdigest()
    bale("verify", "--tls-verify=false", "--key", str(pub), ref)
    # the tag now names another manifest (same image, Docker media types): no signature for it
    bale("push", "--tls-verify=false", "--format", "docker", iid, f"docker://{ref}")
    assert "sha256:" + hashlib.sha256(_raw(ref)).hexdigest() != digest
    r = bale("verify", "--tls-verify=false", "--key", str(pub), ref, check=False)
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        f"bale: {ref}: no signatures (no tag sha256-{hashlib.sha256(_raw(ref)).hexdigest()}.sig)"]
    # a signature of the first digest moved onto the second: the payload names the wrong digest
    from builder.image.registry.client import RegistryClient
    from builder.image.registry.options import RegistryOptions
    c = RegistryClient(registry.host, RegistryOptions(tls_verify=False))
    new = "sha256:" + hashlib.sha256(_raw(ref)).hexdigest()
    old_sig = _raw(f"{registry.host}/bale/tamper:sha256-{digest[7:]}.sig")
    c.put_manifest("bale/tamper", f"sha256-{new[7:]}.sig", old_sig, "application/vnd.oci.image.manifest.v1+json")
    r = bale("verify", "--tls-verify=false", "--key", str(pub), ref, check=False)
    assert r.returncode == 1 and f"signature is for {digest}" in r.stderr
    # the wrong key
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    (tmp_path / "other.pub").write_bytes(other.public_bytes(serialization.Encoding.PEM,
                                                            serialization.PublicFormat.SubjectPublicKeyInfo))
    r = bale("verify", "--tls-verify=false", "--key", str(tmp_path / "other.pub"), f"{registry.host}/bale/tamper@{digest}",
             check=False)
    assert r.returncode == 1 and "does not verify with the key" in r.stderr


def test_bud_signs_what_it_pushes(registry, store_with_busybox, bale, keypair, tmp_path):
    key, priv, pub = keypair
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nLABEL signed=yes\n")
    ref = f"{registry.host}/bale/budsigned:1"
    bale("bud", "--tls-verify=false", "--sign-by-sigstore-private-key", str(priv), "--digestfile",
         str(tmp_path / "d"), "-t", f"docker://{ref}", str(ctx), root=store_with_busybox)
    digest = (tmp_path / "d").read_text()
    _check_signature(registry, "bale/budsigned", digest, key.public_key())


def test_bad_keys_are_usage_errors(bale, tmp_path, busybox_layout):
    (tmp_path / "junk.key").write_text("not a key\n")
    iid = bale("pull", "-q", f"oci:{busybox_layout}:latest").stdout.strip()
    r = bale("push", "--sign-by-sigstore-private-key", str(tmp_path / "junk.key"), iid, "docker://127.0.0.1:1/x:1",
             check=False)
    assert r.returncode == 2 and r.stderr.startswith(f"bale: signing key {tmp_path / 'junk.key'}: not a usable PEM")


def test_cosign_encrypted_key_signs(registry, busybox_layout, bale, tmp_path):
    from builder.image.cosignkey import encrypt_cosign_key
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    (tmp_path / "cosign.key").write_bytes(encrypt_cosign_key(der, "pw", n=1 << 14))
    iid = bale("pull", "-q", f"oci:{busybox_layout}:latest").stdout.strip()
    ref = f"{registry.host}/bale/cosignkey:1"
    bale("push", "--tls-verify=false", "--sign-by-sigstore-private-key", str(tmp_path / "cosign.key"), iid,
         f"docker://{ref}", env={"COSIGN_PASSWORD": "pw"})
    digest = "sha256:" + hashlib.sha256(_raw(ref)).hexdigest()
    _check_signature(registry, "bale/cosignkey", digest, key.public_key())
