"""Authentication of the FHIR endpoints and the report (API_REQUIRE_AUTH, API_AUTH).

With API_REQUIRE_AUTH on, API_AUTH says which bearer credentials are accepted:

- ``tokens``: the static API_TOKENS (``persist=true`` needs one listed with ``:write``);
- ``oauth``: OAuth 2.0 access tokens (JWTs) of OAUTH_ISSUERS, by their SMART scopes
  (service/web/oauth.py): checking needs read on MedicationRequest, ``persist=true`` create
  and update on DetectedIssue, ``GET /report`` read on DetectedIssue; a ``patient/`` scope
  only for the patient of the token's ``patient`` claim;
- ``both``: either.

In every mode a JWT from a CDS_TRUSTED_ISSUERS issuer is accepted read-only (as on the CDS
endpoints). No or an unreadable credential is ``401`` (``WWW-Authenticate: Bearer
error="invalid_token"`` for a token that was sent and refused); a credential that does not
allow the call is ``403`` with an OperationOutcome naming the scope or token it needs.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass

from flask import Request, current_app, g

from ..config import Settings
from ..errors import Problem, ServiceError, forbidden
from .oauth import AccessToken, Need

log = logging.getLogger("baclofen_check.auth")
REALM = 'Bearer realm="baclofen-check"'
OAUTH_KEYS = "baclofen_check.oauth_jwks"

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
    import jwt

    try:
        iss = jwt.decode(token, options={"verify_signature": False}).get("iss")
    except jwt.PyJWTError:
        return None
    return iss if isinstance(iss, str) else None


def _access_token(token: str, settings: Settings) -> AccessToken:
    from ..cds.tokens import TokenRejected
    from ..fhir_input.fetch import Deadline
    from .oauth import Verified, key_cache, verify_access_token

    caches = current_app.extensions.get(OAUTH_KEYS)
    if caches is None:
        caches = current_app.extensions.setdefault(OAUTH_KEYS, (key_cache(settings),
                                                                Verified()))
    try:
        return verify_access_token(token, settings, caches[0],
                                   Deadline(settings.outbound_timeout_s), verified=caches[1])
    except TokenRejected as exc:
        log.info(f"access token refused: {exc}", extra={"event": "oauth-refused"})
        raise _invalid() from exc


def _trusted_jwt(token: str, settings: Settings) -> str | None:
    """A JWT from a trusted CDS issuer is accepted too (same checks as the CDS endpoints)."""
    if not settings.cds_trusted_issuers or token.count(".") != 2:
        return None
    from ..cds.tokens import TokenRejected
    from .cds_hooks import verify_jwt

    try:
        return verify_jwt(token)
    except TokenRejected:
        return None


def _fingerprint(token: str) -> str:
    import hashlib

    return hashlib.sha256(token.encode()).hexdigest()[:12]
