"""Bearer-token authentication of the FHIR endpoints (API_REQUIRE_AUTH, API_TOKENS)."""

from __future__ import annotations

import hmac

from flask import Request

from ..config import Settings
from ..errors import forbidden, unauthorized


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


def authenticate(req: Request, settings: Settings, write: bool = False) -> str:
    """The caller's identity for the audit trail; raises 401/403 when not allowed."""
    if not settings.api_require_auth:
        return "anonymous"
    token = bearer(req)
    if token is None:
        raise unauthorized("a bearer token is required (Authorization: Bearer ...)")
    if not _matches(token, settings.read_tokens):
        caller = _trusted_jwt(token, settings)
        if caller is None:
            raise unauthorized("the bearer token is not accepted")
        if write:
            raise forbidden("a JWT may not write (persist=true needs a :write token)")
        return caller
    if write and not _matches(token, settings.write_tokens):
        raise forbidden("this token may not write (persist=true needs a :write token)")
    return "token:" + _fingerprint(token)


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
