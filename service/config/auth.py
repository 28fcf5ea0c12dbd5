"""Parsing of the authentication settings (interfaces.md section 6): FHIR_SERVER_AUTH and the
SMART_* client settings (outbound), API_AUTH and OAUTH_ISSUERS (inbound).
service/config/__init__.py calls these; they raise ConfigError naming the setting."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .values import ConfigError, json_object

SERVER_AUTH_MODES = ("none", "bearer", "smart-backend")
API_AUTH_MODES = ("tokens", "oauth", "both")
# What the service reads from FHIR_SERVER_URL (the order, its patient and medication, the
# context queries of service/cds/discovery.py) and writes back (DetectedIssue: create, read to
# cancel, update), as SMART v2 scopes.
DEFAULT_SMART_SCOPE = " ".join([
    "system/Patient.rs", "system/MedicationRequest.rs", "system/Medication.rs",
    "system/MedicationStatement.rs", "system/MedicationDispense.rs", "system/Observation.rs",
    "system/Condition.rs", "system/Procedure.rs", "system/DetectedIssue.cru",
])
ISSUER_FIELDS = frozenset({"jwks_url", "jwks_file", "audience", "token_url"})


@dataclass(frozen=True)
class OAuthIssuer:
    """One entry of OAUTH_ISSUERS: keys from ``jwks_file`` when given (nothing fetched), else
    from ``jwks_url``; ``audience``: the ``aud`` its tokens must carry (default
    PUBLIC_BASE_URL); ``token_url``: advertised to clients (CapabilityStatement,
    ``.well-known/smart-configuration``)."""

    jwks_url: str | None = None
    jwks_file: str | None = None
    audience: str | None = None
    token_url: str | None = None


def _url(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("https://", "http://"))


def server_auth(raw: Mapping[str, Any], fhir_url: str | None) -> dict[str, Any]:
    """Settings fields of the outbound side."""
    token = str(raw["FHIR_SERVER_TOKEN"]) if raw.get("FHIR_SERVER_TOKEN") else None
    mode = str(raw.get("FHIR_SERVER_AUTH") or ("bearer" if token else "none")).strip().lower()
    if mode not in SERVER_AUTH_MODES:
        raise ConfigError(f"FHIR_SERVER_AUTH must be one of {', '.join(SERVER_AUTH_MODES)}")
    if mode == "bearer" and not token:
        raise ConfigError("FHIR_SERVER_AUTH=bearer needs FHIR_SERVER_TOKEN")
    client_id = str(raw.get("SMART_CLIENT_ID") or "").strip() or None
    keys = str(raw.get("SMART_PRIVATE_KEYS") or "").strip() or None
    scope = " ".join(str(raw.get("SMART_SCOPE") or DEFAULT_SMART_SCOPE).split())
    token_url = str(raw.get("SMART_TOKEN_URL") or "").strip() or None
    if token_url is not None and not _url(token_url):
        raise ConfigError("SMART_TOKEN_URL must be an http(s) URL")
    if mode == "smart-backend":
        missing = [name for name, value in (("FHIR_SERVER_URL", fhir_url),
                                            ("SMART_CLIENT_ID", client_id),
                                            ("SMART_PRIVATE_KEYS", keys)) if not value]
        if missing:
            raise ConfigError(f"FHIR_SERVER_AUTH=smart-backend needs {', '.join(missing)}")
    return {"fhir_server_auth": mode, "smart_client_id": client_id,
            "smart_private_keys": keys, "smart_scope": scope, "smart_token_url": token_url}


def api_auth(value: Any, issuers: Mapping[str, OAuthIssuer]) -> str:
    mode = str(value or "tokens").strip().lower()
    if mode not in API_AUTH_MODES:
        raise ConfigError(f"API_AUTH must be one of {', '.join(API_AUTH_MODES)}")
    if mode != "tokens" and not issuers:
        raise ConfigError(f"API_AUTH={mode} needs OAUTH_ISSUERS (no access token could be "
                     "verified without an issuer)")
    return mode


def oauth_issuers(value: Any) -> dict[str, OAuthIssuer]:

    data = json_object("OAUTH_ISSUERS", value)
    return {issuer: _issuer(issuer, entry) for issuer, entry in data.items()}


def _issuer(issuer: str, entry: Any) -> OAuthIssuer:
    where = f"OAUTH_ISSUERS[{issuer!r}]"
    if isinstance(entry, OAuthIssuer):
        return entry
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where} must be an object with {', '.join(sorted(ISSUER_FIELDS))}")
    unknown = sorted(set(entry) - ISSUER_FIELDS)
    if unknown:
        raise ConfigError(f"{where} has unknown field(s) {', '.join(unknown)} (allowed: "
                     f"{', '.join(sorted(ISSUER_FIELDS))})")
    for name in ("jwks_url", "token_url"):
        if entry.get(name) is not None and not _url(entry[name]):
            raise ConfigError(f"{where}.{name} must be an http(s) URL")
    path, audience = entry.get("jwks_file"), entry.get("audience")
    if path is not None and not (isinstance(path, str) and path.strip()):
        raise ConfigError(f"{where}.jwks_file must be a file path")
    if audience is not None and not (isinstance(audience, str) and audience):
        raise ConfigError(f"{where}.audience must be a string")
    if entry.get("jwks_url") is None and path is None:
        raise ConfigError(f"{where} needs jwks_url or jwks_file")
    return OAuthIssuer(jwks_url=entry.get("jwks_url"),
                       jwks_file=path.strip() if isinstance(path, str) else None,
                       audience=audience, token_url=entry.get("token_url"))
