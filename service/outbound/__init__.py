"""How the service authenticates its own calls to FHIR_SERVER_URL (FHIR_SERVER_AUTH).

- ``none``: no ``Authorization`` header;
- ``bearer``: ``FHIR_SERVER_TOKEN`` as a static bearer token;
- ``smart-backend``: SMART Backend Services (service/outbound/smart.py), our keys in
  service/outbound/keys.py, published at ``GET /.well-known/jwks.json``.

Every call the service makes to FHIR_SERVER_URL goes through ``fhir_server_client`` (the
by-id check, write-back) or, for code with its own HTTP client (Bulk Data downloads),
``fhir_server_headers``. The CDS self-fetch never does: it uses the EHR's
``fhirAuthorization``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import Settings
    from ..fhir_input.fetch import Authorizer, Deadline, FhirClient
    from .keys import SigningKey
    from .smart import ClientConfig, SmartBackendClient

JWKS_PATH = "/.well-known/jwks.json"


def smart_config(settings: Settings) -> ClientConfig:
    from .smart import ClientConfig

    if settings.fhir_server_url is None or not settings.smart_client_id or \
            not settings.smart_private_keys:
        raise ValueError("FHIR_SERVER_AUTH=smart-backend needs FHIR_SERVER_URL, "
                         "SMART_CLIENT_ID and SMART_PRIVATE_KEYS")
    return ClientConfig(
        fhir_base=settings.fhir_server_url, client_id=settings.smart_client_id,
        keys_path=settings.smart_private_keys, scope=settings.smart_scope,
        token_url=settings.smart_token_url, allowlist=tuple(settings.fhir_allowlist),
        jku=settings.public_base_url + JWKS_PATH, max_bytes=settings.max_request_bytes)


def smart_client(settings: Settings) -> SmartBackendClient | None:
    """This process's SMART client for the settings (None unless ``smart-backend``); made,
    and its keys read, on first use. Raises keys.KeyFileError for unusable keys."""
    if settings.fhir_server_auth != "smart-backend":
        return None
    from .smart import client_for

    return client_for(smart_config(settings))


def fhir_server_authorizer(settings: Settings) -> Authorizer | None:
    return smart_client(settings)


def fhir_server_client(settings: Settings) -> FhirClient:
    """The client for every call the service makes to FHIR_SERVER_URL."""
    from ..fhir_input.fetch import FhirClient

    if settings.fhir_server_url is None:
        raise ValueError("FHIR_SERVER_URL is not configured")
    token = settings.fhir_server_token if settings.fhir_server_auth == "bearer" else None
    return FhirClient(settings.fhir_server_url, token, settings.fhir_allowlist,
                      settings.max_request_bytes, auth=fhir_server_authorizer(settings))


def fhir_server_headers(settings: Settings, deadline: Deadline,
                        refused: str | None = None) -> dict[str, str]:
    """The ``Authorization`` header for a call to FHIR_SERVER_URL made with another HTTP
    client (e.g. Bulk Data ``$export`` status and file downloads): ``{}`` for ``none``, the
    static token for ``bearer``, a SMART access token for ``smart-backend`` (cached per
    process). After a ``401``, call again with ``refused`` = the header value that was
    refused, for a new token, and retry once. Raises fetch.FetchFailure (``auth``; ``timeout``
    past the deadline) when no token can be had. Send it only to URLs under FHIR_ALLOWLIST
    (fetch.allowed)."""
    authorizer = fhir_server_authorizer(settings)
    if authorizer is not None:
        return {"Authorization": authorizer.authorization(deadline, refused)}
    if settings.fhir_server_auth == "bearer" and settings.fhir_server_token:
        return {"Authorization": f"Bearer {settings.fhir_server_token}"}
    return {}


def published_keys(settings: Settings) -> tuple[SigningKey, ...]:
    """Our public keys for ``/.well-known/jwks.json``: those of SMART_PRIVATE_KEYS (none
    when it is not set)."""
    if not settings.smart_private_keys:
        return ()
    client = smart_client(settings)
    if client is not None:
        return client.keys
    from .keys import load_keys

    return load_keys(settings.smart_private_keys)


__all__ = ["fhir_server_client", "fhir_server_headers", "fhir_server_authorizer",
           "published_keys", "smart_client", "JWKS_PATH"]
