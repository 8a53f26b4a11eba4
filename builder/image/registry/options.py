"""How to reach registries, as given on the command line (skopeo's and buildah's flag names)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RegistryOptions:
    #: None = decide per registry (registries.conf insecure, localhost), False = --tls-verify=false
    tls_verify: bool | None = None
    #: directory with *.crt (CA), *.cert/*.key (client) files, as containers-certs.d
    cert_dir: str | None = None
    #: "USER[:PASSWORD]" from --creds
    creds: str | None = None
    #: path from --authfile (else $REGISTRY_AUTH_FILE and the default locations)
    authfile: str | None = None
    #: "image" for config/manifest-only operations; purely informational
    user_agent: str = "bale/0.1"
