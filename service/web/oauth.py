"""OAuth 2.0 access tokens on the native FHIR endpoints (API_AUTH ``oauth`` or ``both``).

A token is a JWT from an issuer of OAUTH_ISSUERS, verified like a CDS JWT: asymmetric
algorithms only (``alg: none`` and HMAC are refused), ``kid`` required, the signature with the
issuer's key (from its pinned ``jwks_file``, else its ``jwks_url``; a ``jku`` or ``x5u``
header naming any other URL is refused and never fetched), ``iss``, ``aud`` (the issuer's
``audience``, default PUBLIC_BASE_URL), ``exp`` required, ``nbf`` when present, 60 s leeway.
Access tokens are meant to be used many times: no ``jti`` replay list.

Scopes are read in the SMART v1 and v2 forms, from a ``scope`` string or an ``scp`` array:
``<context>/<resource type or *>.<permissions>`` with context ``system``, ``user`` or
``patient`` and permissions ``read``, ``write``, ``*`` (v1) or letters of ``cruds`` in that
order (v2). A v2 scope narrowed by a query (``?category=...``) covers only some resources
and is not taken to cover what is asked here. A ``patient/`` scope covers only the patient of
the token's ``patient`` claim (SMART's launch context), and nothing without one.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt

from ..cds.tokens import LEEWAY_S, Budget, JwksCache, TokenRejected, trusted_key
from ..config import Settings, TrustedIssuer

log = logging.getLogger("baclofen_check.oauth")

CONTEXTS = ("system", "user", "patient")
V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_V2 = re.compile(r"^c?r?u?d?s?$")


@dataclass(frozen=True)
class Scope:
    context: str       # system | user | patient
    resource: str      # a resource type or *
    permissions: str   # letters of cruds


@dataclass(frozen=True)
class Need:
    """What an endpoint needs: ``permissions`` on ``resource`` (SMART v2 letters)."""

    resource: str
    permissions: str

    def names(self) -> str:
        """The scopes that would grant it, for messages."""
        v1 = "read" if set(self.permissions) <= set("rs") else "write"
        return (" or ".join(f"{c}/{self.resource}.{self.permissions}" for c in CONTEXTS)
                + f" (SMART v1: {self.resource}.{v1})")


@dataclass(frozen=True)
class AccessToken:
    issuer: str
    subject: str | None
    scopes: tuple[Scope, ...]
    patient: str | None   # the ``patient`` claim

    @property
    def caller(self) -> str:
        return f"oauth:{self.issuer}" + (f":{self.subject}" if self.subject else "")

    def grants(self, need: Need) -> tuple[bool, bool]:
        """(granted at all, only for the token's patient)."""
        covering = [s for s in self.scopes if _covers(s, need)]
        if any(s.context != "patient" for s in covering):
            return True, False
        if covering and self.patient:
            return True, True
        return False, False


def _covers(scope: Scope, need: Need) -> bool:
    return scope.resource in ("*", need.resource) and set(need.permissions) <= set(
        scope.permissions)


def parse_scope(text: str) -> Scope | None:
    context, slash, rest = text.partition("/")
    if not slash or context not in CONTEXTS:
        return None
    resource, dot, permissions = rest.partition(".")
    if not dot or not resource or "?" in permissions:
        return None
    if resource != "*" and not resource.isalpha():
        return None
    granted = V1.get(permissions)
    if granted is None:
        if not permissions or not _V2.match(permissions):
            return None
        granted = permissions
    return Scope(context, resource, granted)


def scopes_of(claims: dict[str, Any]) -> tuple[Scope, ...]:
    raw: Iterable[Any]
    if isinstance(claims.get("scope"), str):
        raw = claims["scope"].split()
    elif isinstance(claims.get("scp"), list):
        raw = claims["scp"]
    elif isinstance(claims.get("scp"), str):
        raw = claims["scp"].split()
    else:
        raw = ()
    found = (parse_scope(s) for s in raw if isinstance(s, str))
    return tuple(s for s in found if s is not None)


class Verified:
    """Tokens already verified, by their SHA-256, until their ``exp`` (plus the leeway the
    verification allowed): an integration engine sends one token with many calls, and a
    signature check costs about a millisecond. At most MAX_VERIFIED are kept."""

    MAX_VERIFIED = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[bytes, tuple[float, AccessToken]] = {}

    def get(self, token: str) -> AccessToken | None:
        digest = hashlib.sha256(token.encode()).digest()
        with self._lock:
            found = self._tokens.get(digest)
        if found is None:
            return None
        if found[0] < time.time():
            with self._lock:
                self._tokens.pop(digest, None)
            return None
        return found[1]

    def put(self, token: str, access: AccessToken, expires: float) -> None:
        digest = hashlib.sha256(token.encode()).digest()
        now = time.time()
        with self._lock:
            if len(self._tokens) >= self.MAX_VERIFIED:
                for key in [k for k, (until, _) in self._tokens.items() if until < now]:
                    del self._tokens[key]
                if len(self._tokens) >= self.MAX_VERIFIED:
                    self._tokens.pop(next(iter(self._tokens)))
            self._tokens[digest] = (expires, access)


def key_cache(settings: Settings) -> JwksCache:
    """The keys of OAUTH_ISSUERS (fetched and cached as for CDS issuers)."""
    return JwksCache({name: TrustedIssuer(jwks_url=i.jwks_url, jwks_file=i.jwks_file)
                      for name, i in settings.oauth_issuers.items()})


def verify_access_token(token: str, settings: Settings, cache: JwksCache, deadline: Budget,
                        now: datetime | None = None, verified: Verified | None = None
                        ) -> AccessToken:
    """Raises TokenRejected (the reason is for the log only). With ``verified``, a token
    verified before and not yet expired is not verified again."""
    if verified is not None and now is None:
        known = verified.get(token)
        if known is not None:
            return known
    alg, issuer, key = trusted_key(token, cache, deadline)
    if issuer not in settings.oauth_issuers:
        raise TokenRejected("issuer not trusted")
    entry = settings.oauth_issuers[issuer]
    audience = entry.audience or settings.public_base_url
    try:
        claims = jwt.decode(token, key=key.jwk.key, algorithms=[alg], audience=audience,
                            issuer=issuer, leeway=LEEWAY_S,
                            options={"require": ["exp", "iss", "aud"]})
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise TokenRejected(type(exc).__name__) from exc
    current = (now or datetime.now(UTC)).timestamp()
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or exp + LEEWAY_S < current:
        raise TokenRejected("expired")
    sub = claims.get("sub") if isinstance(claims.get("sub"), str) else claims.get("client_id")
    patient = claims.get("patient")
    access = AccessToken(issuer, sub if isinstance(sub, str) else None, scopes_of(claims),
                         patient if isinstance(patient, str) and patient else None)
    if verified is not None:
        verified.put(token, access, float(exp) + LEEWAY_S)
    return access
