"""`bale list-tags` (skopeo list-tags) and `bale catalog` (reg ls): what a registry holds,
asked with the same credentials, TLS and retry options as pull."""
from __future__ import annotations

import json
from typing import Any

import click

from builder.cli.options import registry_options, registry_options_from


@click.command("list-tags")
@click.option("--format", "fmt", type=click.Choice(["json", "lines"]), default="json", show_default=True,
              help="skopeo's JSON ({Repository, Tags}) or one tag a line.")
@click.option("--page-size", type=click.IntRange(min=1), default=None, help="Ask for N tags a request.")
@registry_options
@click.argument("repository")
def list_tags(repository: str, fmt: str, page_size: int | None, **kw: Any) -> None:
    """Tags of REPOSITORY (docker://HOST/NAME, as skopeo list-tags takes it)."""
    from builder.errors import UsageError
    from builder.image.reference import parse_reference
    from builder.image.registry.client import RegistryClient
    text = repository.removeprefix("docker://")
    if text.startswith(("oci:", "oci-archive:", "docker-archive:", "containers-storage:", "docker-daemon:")):
        raise UsageError(f"list-tags {repository}: only docker:// repositories can be listed")
    ref = parse_reference(text)
    if "@" in text or ":" in text.rsplit("/", 1)[-1]:
        raise UsageError(f"list-tags {repository}: name a repository, without a tag or digest")
    client = RegistryClient(ref.registry, registry_options_from(kw))
    try:
        tags = client.list_tags(ref.repository, page_size)
    finally:
        client.close()
    if fmt == "lines":
        for t in tags:
            click.echo(t)
    else:
        click.echo(json.dumps({"Repository": ref.repo_name, "Tags": tags}, indent=4))


@click.command("catalog")
@click.option("--format", "fmt", type=click.Choice(["lines", "json"]), default="lines", show_default=True,
              help="One repository a line, or a JSON list.")
@click.option("--page-size", type=click.IntRange(min=1), default=None, help="Ask for N repositories a request.")
@registry_options
@click.argument("registry")
def catalog(registry: str, fmt: str, page_size: int | None, **kw: Any) -> None:
    """Repositories REGISTRY (HOST[:PORT]) lists in its catalog (GET /v2/_catalog)."""
    from builder.errors import UsageError
    from builder.image.registry.client import RegistryClient
    host = registry.removeprefix("docker://").removeprefix("https://").removeprefix("http://").rstrip("/")
    if not host or "/" in host:
        raise UsageError(f"catalog {registry}: name a registry (HOST[:PORT]), not a repository")
    client = RegistryClient(host, registry_options_from(kw))
    try:
        repos = client.catalog(page_size)
    finally:
        client.close()
    if fmt == "json":
        click.echo(json.dumps(repos, indent=4))
    else:
        for r in repos:
            click.echo(r)
