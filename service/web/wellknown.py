"""``GET /.well-known/jwks.json`` (our public keys) and ``GET /.well-known/smart-configuration``
(how clients get OAuth access tokens for the FHIR endpoints). Both are public: an
authorization server fetches the first without credentials (``jwks_url`` registration), and
clients read the second before they have a token."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Flask, Response, current_app

from ..config import ConfigError, Settings
from ..errors import Problem, ServiceError
from ..outbound import JWKS_PATH, published_keys
from ..outbound.keys import KeyFileError, SigningKey, public_jwks

bp = Blueprint("wellknown", __name__)
KEYS = "baclofen_check.published_keys"
SCOPES_SUPPORTED = ("system/MedicationRequest.rs", "user/MedicationRequest.rs",
                    "patient/MedicationRequest.rs", "system/DetectedIssue.cru",
                    "user/DetectedIssue.cru", "patient/DetectedIssue.cru",
                    "system/DetectedIssue.rs", "user/DetectedIssue.rs",
                    "system/MedicationRequest.read", "system/DetectedIssue.write",
                    "system/DetectedIssue.read")


def _json(data: Any, max_age: int) -> Response:
    resp = Response(json.dumps(data, separators=(",", ":")), mimetype="application/json")
    resp.headers["Cache-Control"] = f"public, max-age={max_age}"
    return resp


def oauth_token_url(settings: Settings) -> str | None:
    """The token endpoint we advertise: that of the first OAUTH_ISSUERS entry with one, when
    OAuth tokens are accepted."""
    if not settings.api_require_auth or settings.api_auth == "tokens":
        return None
    for issuer in settings.oauth_issuers.values():
        if issuer.token_url:
            return issuer.token_url
    return None


@bp.get(JWKS_PATH)
def jwks() -> Response:
    keys: tuple[SigningKey, ...] = current_app.extensions[KEYS]
    # choice: 5 minutes, as long as authorization servers commonly keep a jwks_url
    return _json(public_jwks(keys), 300)


@bp.get("/.well-known/smart-configuration")
def smart_configuration() -> Response:
    cfg: Settings = current_app.config["SETTINGS"]
    token_url = oauth_token_url(cfg)
    if token_url is None:
        raise ServiceError(404, [Problem(
            "this service takes no OAuth access tokens from a known token endpoint (API_AUTH "
            "is tokens, or no OAUTH_ISSUERS entry has a token_url)", "not-found")])
    return _json({
        "token_endpoint": token_url,
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "scopes_supported": list(SCOPES_SUPPORTED),
        "response_types_supported": ["token"],
        "capabilities": ["client-confidential-asymmetric", "permission-v1", "permission-v2"],
    }, 3600)


def register(app: Flask) -> None:
    """Read our keys at start (an unusable SMART_PRIVATE_KEYS fails the start, naming it)."""
    cfg: Settings = app.config["SETTINGS"]
    try:
        app.extensions[KEYS] = published_keys(cfg)
    except KeyFileError as exc:
        raise ConfigError(str(exc)) from exc
    app.register_blueprint(bp)
