"""Authentication of the FHIR endpoints and the report (API_REQUIRE_AUTH, API_AUTH).

With API_REQUIRE_AUTH on, API_AUTH says which bearer credentials are accepted:

- ``tokens``: the static API_TOKENS (``persist=true`` needs one listed with ``:write``);
- ``oauth``: OAuth 2.0 access tokens (JWTs) of OAUTH_ISSUERS, by their SMART scopes
  (service/web/oauth.py): checking needs read on MedicationRequest, ``persist=true`` create
  and update on DetectedIssue, ``GET /report`` read on DetectedIssue; a ``patient/`` scope
  only for the patient of the token's ``patient`` claim;
- ``both``: either.

In every mode a JWT from a CDS_TRUSTED_ISSUERS issuer is accepted read-only (as on the CDS
endpoints, whose JWT check, ``authenticate_cds``, is here too). No or an unreadable credential
is ``401`` (``WWW-Authenticate: Bearer error="invalid_token"`` for a token that was sent and
refused); a credential that does not allow the call is ``403`` with an OperationOutcome naming
the scope or token it needs.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from datetime import datetime

import jwt
from flask import Flask, Request, current_app, g, request
from sqlalchemy.exc import SQLAlchemyError

from ..cds.tokens import JwksCache, TokenRejected, verify
from ..config import Settings
from ..errors import Problem, ServiceError, forbidden, unauthorized
from . import context
from .oauth import AccessToken, Need, Verified, key_cache, verify_access_token

log = logging.getLogger("baclofen_check.auth")
cds_log = logging.getLogger("baclofen_check.cds")
REALM = 'Bearer realm="baclofen-check"'
OAUTH_KEYS = "baclofen_check.oauth_jwks"
JWKS_KEY = "baclofen_check.jwks"

CHECK = Need("MedicationRequest", "r")
WRITE = Need("DetectedIssue", "cu")
REPORT = Need("DetectedIssue", "r")


@dataclass(frozen=True)
class Grant:
    """Who called, and the one patient whose data the call may touch (None: any)."""

    caller: str
    patient: str | None = None


def bearer(req: Request) -> str | None:
    header = req.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _matches(token: str, allowed: frozenset[str]) -> bool:
    found = False
    for candidate in allowed:
        if hmac.compare_digest(token.encode(), candidate.encode()):
            found = True
    return found


def _missing() -> ServiceError:
    return ServiceError(401, [Problem("a bearer token is required (Authorization: Bearer ...)",
                                      "login")], {"WWW-Authenticate": REALM})


def _invalid(message: str = "the bearer token is not accepted") -> ServiceError:
    return ServiceError(401, [Problem(message, "login")], {
        "WWW-Authenticate": f'{REALM}, error="invalid_token"'})


def _insufficient(need: Need, what: str) -> ServiceError:
    scopes = " ".join(f"{c}/{need.resource}.{need.permissions}" for c in ("system", "user",
                                                                          "patient"))
    return ServiceError(403, [Problem(
        f"the access token does not grant {what}: it needs the scope {need.names()}",
        "forbidden")], {"WWW-Authenticate": f'{REALM}, error="insufficient_scope", '
                                            f'scope="{scopes}"'})


def authorize(req: Request, settings: Settings, write: bool = False,
              report: bool = False) -> Grant:
    """The caller and what it may touch; raises 401/403. Kept on ``flask.g`` for
    ``require_patient``."""
    grant = _authorize(req, settings, write, report)
    g.auth_grant = grant
    return grant


def authenticate(req: Request, settings: Settings, write: bool = False,
                 report: bool = False) -> str:
    """The caller's identity for the audit trail; raises 401/403 when not allowed."""
    return authorize(req, settings, write, report).caller


def require_patient(patient_id: str | None, what: str = "this patient") -> None:
    """Refuse (403) when the call's credential is confined to another patient."""
    grant: Grant | None = g.get("auth_grant")
    if grant is None or grant.patient is None:
        return
    if patient_id != grant.patient:
        raise forbidden(f"the access token is for Patient/{grant.patient} only (its patient "
                        f"claim with patient/ scopes); {what} is not that patient")


def confined() -> str | None:
    """The patient the call's credential is confined to (None: any)."""
    grant: Grant | None = g.get("auth_grant")
    return grant.patient if grant is not None else None


def _authorize(req: Request, settings: Settings, write: bool, report: bool) -> Grant:
    if not settings.api_require_auth:
        return Grant("anonymous")
    token = bearer(req)
    if token is None:
        raise _missing()
    mode = settings.api_auth
    if mode in ("tokens", "both") and _matches(token, settings.read_tokens):
        if write and not _matches(token, settings.write_tokens):
            raise forbidden("this token may not write (persist=true needs a :write token)")
        return Grant("token:" + _fingerprint(token))
    if mode in ("oauth", "both") and _issuer_of(token) in settings.oauth_issuers:
        access = _access_token(token, settings)
        return _scoped(access, write, report)
    caller = _trusted_jwt(token, settings)
    if caller is None:
        raise _invalid()
    if write:
        raise forbidden("a CDS JWT may not write (persist=true needs a :write token or an "
                        "access token with create and update on DetectedIssue)")
    return Grant(caller)


def _scoped(access: AccessToken, write: bool, report: bool) -> Grant:
    patient: str | None = None
    needs = [(REPORT, "reading the alert report")] if report else [
        (CHECK, "checking orders (read access to MedicationRequest)")]
    if write:
        needs.append((WRITE, "persist=true (writing DetectedIssues)"))
    for need, what in needs:
        granted, only_patient = access.grants(need)
        if not granted:
            raise _insufficient(need, what)
        if only_patient:
            patient = access.patient
    if report and patient is not None:
        raise forbidden("the alert report spans every patient: a patient/ access token "
                        "cannot read it (it needs system/DetectedIssue.rs or "
                        "user/DetectedIssue.rs)")
    return Grant(access.caller, patient)


def _issuer_of(token: str) -> str | None:
    if token.count(".") != 2:
        return None
    try:
        iss = jwt.decode(token, options={"verify_signature": False}).get("iss")
    except jwt.PyJWTError:
        return None
    return iss if isinstance(iss, str) else None


def _access_token(token: str, cfg: Settings) -> AccessToken:
    caches = current_app.extensions.get(OAUTH_KEYS)
    if caches is None:
        caches = current_app.extensions.setdefault(OAUTH_KEYS, (key_cache(cfg), Verified()))
    try:
        return verify_access_token(token, cfg, caches[0], context.outbound_deadline(),
                                   verified=caches[1])
    except TokenRejected as exc:
        log.info(f"access token refused: {exc}", extra={"event": "oauth-refused"})
        raise _invalid() from exc


def _trusted_jwt(token: str, cfg: Settings) -> str | None:
    """A JWT from a trusted CDS issuer is accepted too (same checks as the CDS endpoints)."""
    if not cfg.cds_trusted_issuers or token.count(".") != 2:
        return None
    try:
        return verify_jwt(token)
    except TokenRejected:
        return None


def _fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:12]


# --- CDS Hooks JWTs (CDS_REQUIRE_JWT, CDS_TRUSTED_ISSUERS; checks in service/cds/tokens.py) ----

def install_jwks(app: Flask, cfg: Settings) -> None:
    """The app's cache of the trusted CDS issuers' keys."""
    app.extensions[JWKS_KEY] = JwksCache(cfg.cds_trusted_issuers)


def jwks_cache(app: Flask) -> JwksCache:
    cache: JwksCache = app.extensions[JWKS_KEY]
    return cache


def verify_jwt(token: str) -> str:
    """The caller (``jwt:<issuer>``) for a valid token; raises TokenRejected otherwise. The
    issuer's card style is kept on ``flask.g`` (``cds_issuer_style``)."""
    cfg = context.settings()
    audit = context.store()

    def use_jti(issuer: str, jti: str, expires: datetime) -> bool:
        if audit is None:
            return False
        try:
            return bool(audit.use_jti(issuer, jti, expires))
        except SQLAlchemyError as exc:
            # choice: fail closed. Without the store a replay cannot be ruled out.
            cds_log.error("jti check failed", extra={"event": "jti-store-failed",
                                                     "error_type": type(exc).__name__})
            return False

    audience = cfg.public_base_url + request.path
    verified = verify(token, audience, jwks_cache(current_app), use_jti,
                      context.outbound_deadline())
    g.cds_issuer_style = verified.style
    return f"jwt:{verified.issuer}"


def authenticate_cds() -> str:
    """The caller of a CDS Hooks call; raises 401 when CDS_REQUIRE_JWT is on and the call
    has no acceptable JWT."""
    cfg = context.settings()
    if not cfg.cds_require_jwt:
        return "anonymous"
    token = bearer(request)
    if token is None:
        raise unauthorized()
    try:
        return verify_jwt(token)
    except TokenRejected as exc:
        cds_log.info(f"CDS JWT refused: {exc}", extra={"event": "jwt-refused"})
        raise unauthorized() from exc
