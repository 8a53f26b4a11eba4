"""The OCI/Docker model: parsing, verification, platform choice, conversion."""
import json

import pytest

from builder.image import oci
from builder.errors import DigestMismatch, FormatError


def _desc(data: bytes, mt: str) -> dict:
    return {"mediaType": mt, "digest": oci.sha256_digest(data), "size": len(data)}


def test_manifest_round_trip_keeps_annotations():
    m = {"schemaVersion": 2, "mediaType": oci.OCI_MANIFEST,
         "config": _desc(b"{}", oci.OCI_CONFIG), "layers": [_desc(b"x", oci.OCI_LAYER_GZIP)],
         "annotations": {"a": "b"}}
    parsed = oci.parse_manifest(json.dumps(m).encode())
    assert parsed.layers[0].media_type == oci.OCI_LAYER_GZIP
    assert json.loads(parsed.to_bytes()) == m


def test_docker_manifest_converts_to_oci_and_back():
    m = {"schemaVersion": 2, "mediaType": oci.DOCKER_MANIFEST,
         "config": _desc(b"{}", oci.DOCKER_CONFIG), "layers": [_desc(b"x", oci.DOCKER_LAYER_GZIP)]}
    parsed = oci.parse_manifest(json.dumps(m).encode())
    as_oci = oci.convert_manifest(parsed, docker=False)
    assert as_oci.media_type == oci.OCI_MANIFEST
    assert as_oci.config.media_type == oci.OCI_CONFIG
    assert as_oci.layers[0].media_type == oci.OCI_LAYER_GZIP
    assert oci.convert_manifest(as_oci, docker=True).to_json() == m


@pytest.mark.parametrize("data,cause", [
    (b"{not json", "malformed JSON"),
    (b'{"schemaVersion": 2, "mediaType": "application/x-weird", "config": {}, "layers": []}', "unknown media type"),
    (b'{"schemaVersion": 1, "name": "x"}', "schema1"),
])
def test_bad_manifests_give_one_line_errors(data, cause):
    with pytest.raises(FormatError) as exc:
        oci.detect_media_type(data, None, "manifest of example")
        oci.parse_manifest(data, "manifest of example")
    assert cause in str(exc.value) and "\n" not in str(exc.value)
    assert "manifest of example" in str(exc.value)


def test_unknown_layer_media_type_rejected():
    m = {"schemaVersion": 2, "config": _desc(b"{}", oci.OCI_CONFIG),
         "layers": [_desc(b"x", "application/x-zip")]}
    with pytest.raises(FormatError, match="layer 0: unknown media type"):
        oci.parse_manifest(json.dumps(m).encode())


def test_verify_bytes_detects_mismatch():
    good = oci.sha256_digest(b"abc")
    assert oci.verify_bytes(b"abc", good, "blob") == b"abc"
    with pytest.raises(DigestMismatch):
        oci.verify_bytes(b"abd", good, "blob")


def test_index_selects_platform_and_names_choices():
    amd = {**_desc(b"a", oci.OCI_MANIFEST), "platform": {"os": "linux", "architecture": "amd64"}}
    arm = {**_desc(b"b", oci.OCI_MANIFEST), "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}}
    idx = oci.parse_index(json.dumps({"schemaVersion": 2, "manifests": [amd, arm]}).encode())
    assert idx.select(oci.Platform.parse("linux/arm64")).digest == arm["digest"]
    assert idx.select(oci.Platform.parse("linux/amd64")).digest == amd["digest"]
    with pytest.raises(FormatError, match="linux/s390x.*has: linux/amd64"):
        idx.select(oci.Platform.parse("linux/s390x"))


def test_config_keeps_unknown_fields_and_docker_extensions():
    raw = {"architecture": "amd64", "os": "linux", "config": {"Healthcheck": {"Test": ["NONE"]},
           "Shell": ["/bin/bash", "-c"], "OnBuild": ["RUN x"]},
           "rootfs": {"type": "layers", "diff_ids": [oci.sha256_digest(b"")]}, "history": [], "custom": 1}
    cfg = oci.parse_config(json.dumps(raw).encode())
    out = json.loads(cfg.to_bytes())
    assert out["custom"] == 1 and out["config"]["Shell"] == ["/bin/bash", "-c"]
    assert out["config"]["OnBuild"] == ["RUN x"]


def test_canonical_json_is_stable():
    assert oci.canonical_json({"b": 1, "a": [1, 2]}) == oci.canonical_json({"a": [1, 2], "b": 1})


def test_layer_media_types():
    assert oci.layer_media_type("zstd", docker=False) == oci.OCI_LAYER_ZSTD
    assert oci.layer_media_type("gzip", docker=True) == oci.DOCKER_LAYER_GZIP
    assert oci.layer_compression(oci.DOCKER_LAYER_GZIP) == "gzip"
    with pytest.raises(FormatError):
        oci.layer_media_type("lz4", docker=False)
