"""`bale verify --key PUB IMAGE`: check the cosign (simple-signing) signatures of a registry
image with a public key, as `cosign verify --key` does (without a transparency log)."""
from __future__ import annotations

import json
from typing import Any

import click

from builder.cli.options import registry_options, registry_options_from


@click.command("verify")
@click.option("--key", "key_path", required=True, type=click.Path(dir_okay=False),
              help="PEM public key the signatures must verify with.")
@registry_options
@click.argument("image")
def verify(image: str, key_path: str, **kw: Any) -> None:
    """Verify IMAGE (docker://HOST/REPO[:TAG|@DIGEST]); prints the verified payloads as JSON."""
    from builder.errors import UsageError
    from builder.image import sign
    from builder.image.reference import parse_reference
    from builder.image.registry.client import RegistryClient
    key = sign.load_public_key(key_path)
    text = image.removeprefix("docker://")
    if text.startswith(("oci:", "oci-archive:", "docker-archive:", "docker-daemon:", "containers-storage:")):
        raise UsageError(f"verify {image}: only registry images (docker://) carry sigstore signatures")
    ref = parse_reference(text)
    client = RegistryClient(ref.registry, registry_options_from(kw))
    try:
        head = client.head_manifest(ref.repository, ref.reference)
        if head is None:
            from builder.errors import NotFoundError
            raise NotFoundError(f"{ref.name}: not found")
        good = sign.verify_image(client, ref.repository, head[0], key, ref.name)
    finally:
        client.close()
    click.echo(f"Verification for {ref.name} -- the signatures were verified against the specified public key",
               err=True)
    click.echo(json.dumps([json.loads(v.payload) for v in good]))
