"""Option decorators shared by several commands, with buildah's and skopeo's flag names."""
from __future__ import annotations

from typing import Any, Callable, overload

import click

F = Callable[..., Any]


def _bool_flag(text: str) -> bool:
    low = str(text).lower()
    if low in ("true", "1", "yes"):
        return True
    if low in ("false", "0", "no"):
        return False
    raise click.BadParameter(f"expected true or false, not {text!r}")


def registry_options(f: F) -> F:
    """--tls-verify, --cert-dir, --creds, --authfile, --retry, --retry-delay (as buildah and skopeo take
    them) and --registry-timeout."""
    f = click.option("--registry-timeout", "registry_timeout", default=None, metavar="DURATION",
                     envvar="BALE_REGISTRY_TIMEOUT",
                     help="Connect and read timeout of each registry request (default 30s).")(f)
    f = click.option("--retry-delay", "retry_delay", default=None, metavar="DURATION",
                     help="Delay between tries of a failed registry request (default: backoff from 0.5s).")(f)
    f = click.option("--retry", "retry", default=None, type=click.IntRange(min=0),
                     help="How often to try a failed registry request again (default 3).")(f)
    f = click.option("--authfile", envvar="REGISTRY_AUTH_FILE", default=None,
                     help="Path of the authentication file.")(f)
    f = click.option("--creds", default=None, metavar="USER[:PASS]", help="Credentials for the registry.")(f)
    f = click.option("--cert-dir", default=None, type=click.Path(file_okay=False),
                     help="Directory with certificates (*.crt, *.cert, *.key) for the registry.")(f)
    f = click.option("--tls-verify", "tls_verify", default=None, metavar="BOOL", type=_bool_flag,
                     help="Require HTTPS and verify certificates (default true; registries.conf may mark registries insecure).")(f)
    return f


def signing_options(f: F) -> F:
    """--sign-by-sigstore-private-key, --sign-passphrase-file (podman's and skopeo's names)."""
    f = click.option("--sign-passphrase-file", default=None, type=click.Path(dir_okay=False),
                     help="File with the passphrase of the signing key.")(f)
    f = click.option("--sign-by-sigstore-private-key", default=None, type=click.Path(dir_okay=False),
                     help="Sign pushed manifests with this PEM private key (cosign's format, sha256-HEX.sig tag).")(f)
    return f


def registry_options_from(kwargs: dict[str, Any]) -> "Any":
    """Pop the registry_options values out of a command's kwargs into a RegistryOptions."""
    from builder.image.registry.options import DEFAULT_RETRIES, DEFAULT_TIMEOUT, RegistryOptions, parse_duration
    retry, delay, timeout = kwargs.pop("retry", None), kwargs.pop("retry_delay", None), \
        kwargs.pop("registry_timeout", None)
    sign_key, pass_file = kwargs.pop("sign_by_sigstore_private_key", None), kwargs.pop("sign_passphrase_file", None)
    passphrase = None
    if pass_file:
        from builder.errors import UsageError
        try:
            with open(pass_file) as fh:
                passphrase = fh.readline().rstrip("\n")
        except OSError as exc:
            raise UsageError(f"--sign-passphrase-file {pass_file}: {exc.strerror}") from None
    if sign_key:
        from builder.image.sign import load_private_key
        load_private_key(sign_key, passphrase)  # a bad key fails before anything is pushed
    return RegistryOptions(tls_verify=kwargs.pop("tls_verify", None), cert_dir=kwargs.pop("cert_dir", None),
                           creds=kwargs.pop("creds", None), authfile=kwargs.pop("authfile", None),
                           retries=DEFAULT_RETRIES if retry is None else retry,
                           retry_delay=None if delay is None else parse_duration(delay, "--retry-delay"),
                           timeout=DEFAULT_TIMEOUT if timeout is None else
                           (parse_duration(timeout, "--registry-timeout") or DEFAULT_TIMEOUT),
                           sign_by_sigstore_key=sign_key, sign_passphrase=passphrase)


@overload
def output_options(f: F, *, short_format: bool = True) -> F: ...
@overload
def output_options(f: None = None, *, short_format: bool = True) -> Callable[[F], F]: ...
def output_options(f: F | None = None, *, short_format: bool = True) -> F | Callable[[F], F]:
    """--format, --compression, --compression-level for anything that writes layers or manifests.
    ``bale bud`` keeps -f for the Dockerfile, as buildah does (``short_format=False``)."""
    def deco(f: F) -> F:
        f = click.option("--compression-level", type=int, default=None, help="Compression level.")(f)
        f = click.option("--compression", "--compression-format", "compression",
                         type=click.Choice(["gzip", "zstd", "zstd:chunked", "none"]), default=None,
                         callback=_compression, help="Layer compression (default gzip; zstd:chunked is "
                         "written as plain zstd).")(f)
        names = ("--format", "-f") if short_format else ("--format",)
        f = click.option(*names, "image_format", type=click.Choice(["oci", "docker"]), default=None,
                         envvar="BUILDAH_FORMAT", help="Manifest and media-type family (default oci).")(f)
        return f
    return deco(f) if f is not None else deco


def _compression(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value == "zstd:chunked":
        import logging
        logging.getLogger("bale").info("--compression-format zstd:chunked: written as zstd (bale writes no "
                                       "chunked TOC)")
        return "zstd"
    return value


def progress_options(f: F) -> F:
    """--quiet / --progress."""
    f = click.option("--progress", type=click.Choice(["auto", "plain", "tty"]), default="auto",
                     help="Progress output style.")(f)
    f = click.option("--quiet", "-q", is_flag=True, help="Print nothing but the result.")(f)
    return f


def _check_platform(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--platform OS/ARCH[/VARIANT] (comma-separated lists too): a bad value is a usage error (exit 2)."""
    if value:
        from builder.errors import BaleError
        from builder.image.oci import Platform
        for part in value.split(","):
            try:
                Platform.parse(part)
            except BaleError as exc:
                raise click.BadParameter(str(exc)) from None
    return value


def platform_option(f: F) -> F:
    return click.option("--platform", default=None, metavar="OS/ARCH[/VARIANT]", callback=_check_platform,
                        help="Platform to select from a multi-platform image (default: this machine's).")(f)
