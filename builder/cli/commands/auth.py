"""`bale login` and `bale logout` (podman's flags and auth file locations)."""
from __future__ import annotations

import sys
import click


@click.command("login")
@click.option("--username", "-u", default=None)
@click.option("--password", "-p", default=None)
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@click.option("--tls-verify", "tls_verify", default=None, metavar="BOOL",
              type=click.Choice(["true", "false"], case_sensitive=False))
@click.option("--cert-dir", default=None, type=click.Path(file_okay=False))
@click.option("--authfile", envvar="REGISTRY_AUTH_FILE", default=None)
@click.option("--get-login", is_flag=True, help="Print the user logged in to REGISTRY.")
@click.argument("registry")
def login(registry: str, username: str | None, password: str | None, password_stdin: bool, tls_verify: str | None,
          cert_dir: str | None, authfile: str | None, get_login: bool) -> None:
    """Check credentials against REGISTRY and store them in the auth file."""
    from builder.errors import AuthError, UsageError
    from builder.image.registry import auth
    from builder.image.registry.client import RegistryClient
    from builder.image.registry.options import RegistryOptions
    host = registry.removeprefix("https://").removeprefix("http://").removeprefix("docker://").split("/", 1)[0]
    if get_login:
        creds = auth.lookup(host, None, None, authfile)
        if creds is None:
            raise AuthError(f"not logged in to {host}")
        click.echo(creds.username)
        return
    if password_stdin:
        if password:
            raise UsageError("login: --password and --password-stdin are exclusive")
        password = sys.stdin.readline().rstrip("\n")
    if not username:
        username = click.prompt("Username")
    if password is None:
        password = click.prompt("Password", hide_input=True)
    creds = auth.Credentials(username, password)
    verify = None if tls_verify is None else tls_verify.lower() == "true"
    opts = RegistryOptions(tls_verify=verify, cert_dir=cert_dir, creds=f"{username}:{password}", authfile=authfile)
    client = RegistryClient(host, opts)
    try:
        client.check_auth()
    finally:
        client.close()
    path = auth.save_login(host, creds, authfile)
    click.echo("Login Succeeded!")
    del path


@click.command("logout")
@click.option("--all", "-a", "all_", is_flag=True, help="Remove every stored credential.")
@click.option("--authfile", envvar="REGISTRY_AUTH_FILE", default=None)
@click.argument("registry", required=False)
def logout(registry: str | None, all_: bool, authfile: str | None) -> None:
    """Remove the stored credentials for REGISTRY."""
    from builder.errors import AuthError, UsageError
    from builder.image.registry import auth
    if not registry and not all_:
        raise UsageError("logout: name a registry, or use --all")
    host = None if all_ else registry.removeprefix("https://").removeprefix("docker://").split("/", 1)[0]  # type: ignore[union-attr]
    if not auth.remove_login(host, authfile) and host:
        raise AuthError(f"not logged in to {host}")
    click.echo("Removed login credentials for " + (host or "all registries"))
