"""How the service authenticates its own calls to FHIR_SERVER_URL (FHIR_SERVER_AUTH).

- ``none``: no ``Authorization`` header;
- ``bearer``: ``FHIR_SERVER_TOKEN`` as a static bearer token;
- ``smart-backend``: SMART Backend Services (service/outbound/smart.py), our keys in
  service/outbound/keys.py, published at ``GET /.well-known/jwks.json``.

Every call the service makes to FHIR_SERVER_URL goes through
``fhir_input.fetch.fhir_server_client`` (the by-id check, write-back; its authorization comes
from here) or, for code with its own HTTP client (Bulk Data downloads),
``fhir_server_headers``. The CDS self-fetch never does: it uses the EHR's
``fhirAuthorization``.

The outbound HTTP client is in this package too: allowlist.py (FHIR_ALLOWLIST), pool.py
(connections and threads per process), deadline.py (one deadline per request, the typed
failures), client.py (the calls).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import Settings
    from .client import Authorizer
    from .deadline import Deadline
    from .keys import SigningKey
    from .smart import ClientConfig, SmartBackendClient

JWKS_PATH = "/.well-known/jwks.json"


# The imports of .smart and .keys below are inside the functions on purpose: every user of the
# HTTP client (outbound/client.py, pool.py) runs this package's __init__ first, and most of
# them (the CDS self-fetch, the CLI's offline check) never sign anything, so they must not pull
# in the SMART client (jwt, cryptography) with it.

def smart_config(settings: Settings) -> ClientConfig:
    from .smart import ClientConfig  # lazy: see above

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
    from .smart import client_for  # lazy: see above

    return client_for(smart_config(settings))


def fhir_server_authorizer(settings: Settings) -> Authorizer | None:
    return smart_client(settings)


def server_token(settings: Settings) -> str | None:
    """The static bearer token of FHIR_SERVER_URL (FHIR_SERVER_AUTH ``bearer``), else None."""
    return settings.fhir_server_token if settings.fhir_server_auth == "bearer" else None


def fhir_server_headers(settings: Settings, deadline: Deadline,
                        refused: str | None = None) -> dict[str, str]:
    """The ``Authorization`` header for a call to FHIR_SERVER_URL made with another HTTP
    client (e.g. Bulk Data ``$export`` status and file downloads): ``{}`` for ``none``, the
    static token for ``bearer``, a SMART access token for ``smart-backend`` (cached per
    process). After a ``401``, call again with ``refused`` = the header value that was
    refused, for a new token, and retry once. Raises deadline.FetchFailure (``auth``;
    ``timeout`` past the deadline) when no token can be had. Send it only to URLs under
    FHIR_ALLOWLIST (allowlist.allowed)."""
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
    from .keys import load_keys  # lazy: see above

    return load_keys(settings.smart_private_keys)


__all__ = ["fhir_server_headers", "fhir_server_authorizer", "published_keys", "server_token",
           "smart_client", "JWKS_PATH"]
