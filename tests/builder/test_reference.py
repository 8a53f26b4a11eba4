"""Reference parsing (Docker normalisation) and registries.conf lookups."""
import pytest

from builder.errors import UsageError
from builder.image.reference import parse_reference, registry_is_insecure, resolve_short_name


@pytest.mark.parametrize("text,name", [
    ("busybox", "docker.io/library/busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36"),
    ("user/app", "docker.io/user/app:latest"),
    ("quay.io/a/b:v1", "quay.io/a/b:v1"),
    ("localhost/x", "localhost/x:latest"),
    ("127.0.0.1:5000/ns/img:tag", "127.0.0.1:5000/ns/img:tag"),
    ("docker://index.docker.io/library/alpine", "docker.io/library/alpine:latest"),
    ("reg.example:443/x@sha256:" + "a" * 64, "reg.example:443/x@sha256:" + "a" * 64),
])
def test_normalisation(text, name):
    assert parse_reference(text).name == name


@pytest.mark.parametrize("bad", ["", "Upper", "ns/Upper", "a:b:c", "x@sha256:short", "bad..name", "x:" + "t" * 200])
def test_bad_references_name_the_text(bad):
    with pytest.raises(UsageError, match="invalid image reference|empty"):
        parse_reference(bad)


def test_reference_parts():
    r = parse_reference("127.0.0.1:5000/ns/img@sha256:" + "b" * 64)
    assert (r.registry, r.repository, r.reference) == ("127.0.0.1:5000", "ns/img", "sha256:" + "b" * 64)
    assert r.with_tag("v2").name == "127.0.0.1:5000/ns/img:v2"


def test_short_names_follow_registries_conf(tmp_path, monkeypatch):
    conf = tmp_path / "registries.conf"
    conf.write_text('unqualified-search-registries = ["reg.one:5000", "docker.io"]\n'
                    '[[registry]]\nlocation = "reg.one:5000"\ninsecure = true\n')
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF", str(conf))
    monkeypatch.setenv("BALE_REGISTRIES_CONF_DIR", str(tmp_path / "no-drop-ins"))
    names = [r.name for r in resolve_short_name("busybox")]
    assert names == ["reg.one:5000/busybox:latest", "docker.io/library/busybox:latest"]
    assert registry_is_insecure("reg.one:5000") and not registry_is_insecure("docker.io")
    assert [r.name for r in resolve_short_name("quay.io/x/y")] == ["quay.io/x/y:latest"]


def test_default_search_registry_is_docker_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF", str(tmp_path / "absent.conf"))
    assert [r.name for r in resolve_short_name("alpine")] == ["docker.io/library/alpine:latest"]
