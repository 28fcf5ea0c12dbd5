"""Verifying the JWT a CDS client sends (interfaces.md section 4, CDS Hooks 2.0 security).

Rules: asymmetric algorithms only; ``kid`` required; a ``jku`` or ``x5u`` header that differs
from the issuer's configured JWKS URL is refused and never fetched; ``aud`` equal to
PUBLIC_BASE_URL plus the exact path; ``exp``, ``iat`` and ``jti`` required; ``exp - iat`` at
most 300 s; ``iat`` at most 60 s in the future; 60 s leeway; a ``jti`` is never accepted twice
(the store keeps them, so replicas share them). Keys come only from CDS_TRUSTED_ISSUERS: a JWKS
URL (fetched without redirects, within the request's outbound deadline, cached) or a file.
Every failure is the same ``TokenRejected``; the reason goes to the log, never the token.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import jwt
import requests

log = logging.getLogger("baclofen_check.jwt")

ALGORITHMS = frozenset({
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
})
LEEWAY_S = 60
MAX_LIFETIME_S = 300
MAX_FUTURE_IAT_S = 60
JWKS_TTL_S = 300.0
# choice: a kid missing from a cached JWKS refetches it (key rotation), at most once a minute.
JWKS_REFRESH_MIN_S = 60.0
JWKS_MAX_BYTES = 1_000_000


class Budget(Protocol):
    """The request's outbound deadline (service/fhir_input/fetch.Deadline)."""

    def remaining(self) -> float: ...


class TokenRejected(Exception):
    """The token is not accepted (the message is for the log only)."""


@dataclass(frozen=True)
class Verified:
    issuer: str
    subject: str | None
    jti: str


def is_url(source: str) -> bool:
    return source.startswith(("https://", "http://"))


@dataclass(frozen=True)
class Key:
    jwk: jwt.PyJWK
    alg: str | None   # the alg the JWK declares, if any: a token must use that one


class JwksCache:
    """Keys per issuer, from the configured URL or file only."""

    def __init__(self, issuers: Mapping[str, str],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.issuers = dict(issuers)
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, tuple[float, dict[str, Key]]] = {}

    def key(self, issuer: str, kid: str, deadline: Budget) -> Key:
        source = self.issuers[issuer]
        now = self._clock()
        with self._lock:
            cached = self._keys.get(issuer)
        if cached and now - cached[0] < JWKS_TTL_S and kid in cached[1]:
            return cached[1][kid]
        if cached and kid not in cached[1] and now - cached[0] < JWKS_REFRESH_MIN_S:
            raise TokenRejected("unknown kid")
        keys = self._load(source, deadline)
        with self._lock:
            self._keys[issuer] = (self._clock(), keys)
        if kid not in keys:
            raise TokenRejected("unknown kid")
        return keys[kid]

    def _load(self, source: str, deadline: Budget) -> dict[str, Key]:
        if is_url(source):
            data = _fetch_jwks(source, deadline)
        else:
            try:
                data = json.loads(Path(source).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise TokenRejected("the JWKS file cannot be read") from exc
        keys: dict[str, Key] = {}
        for raw in data.get("keys", []) if isinstance(data, dict) else []:
            if not isinstance(raw, dict) or not isinstance(raw.get("kid"), str):
                continue
            if raw.get("use") not in (None, "sig"):
                continue
            try:
                declared = raw.get("alg")
                keys[raw["kid"]] = Key(jwt.PyJWK(raw),
                                       declared if isinstance(declared, str) else None)
            except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
                continue
        return keys


def _fetch_jwks(url: str, deadline: Budget) -> Any:
    remaining = deadline.remaining()
    if remaining <= 0:
        raise TokenRejected("no time left to fetch the JWKS")
    session = requests.Session()
    session.trust_env = False  # no .netrc credentials sent with the key fetch
    try:
        with session.get(url, timeout=(remaining, remaining), allow_redirects=False,
                         stream=True, headers={"Accept": "application/json"}) as resp:
            if resp.status_code != 200:
                raise TokenRejected(f"the JWKS URL answered {resp.status_code}")
            body = b""
            for chunk in resp.iter_content(65536):
                body += chunk
                if len(body) > JWKS_MAX_BYTES:
                    raise TokenRejected("the JWKS is too large")
                if deadline.remaining() <= 0:
                    raise TokenRejected("the JWKS fetch ran out of time")
        return json.loads(body)
    except (requests.RequestException, ValueError) as exc:
        raise TokenRejected("the JWKS cannot be fetched") from exc
    finally:
        session.close()


def verify(
    token: str,
    audience: str,
    cache: JwksCache,
    use_jti: Callable[[str, str, datetime], bool],
    deadline: Budget,
    now: datetime | None = None,
) -> Verified:
    """Check one token; raises TokenRejected for any failure."""
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise TokenRejected("not a JWT") from exc
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise TokenRejected("algorithm not allowed")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise TokenRejected("kid missing")
    issuer = claims.get("iss")
    if not isinstance(issuer, str) or issuer not in cache.issuers:
        raise TokenRejected("issuer not trusted")
    source = cache.issuers[issuer]
    for name in ("jku", "x5u"):
        if name in header and header[name] != source:
            raise TokenRejected(f"{name} differs from the configured JWKS URL")
    key = cache.key(issuer, kid, deadline)
    if key.alg is not None and key.alg != alg:
        raise TokenRejected("the token's alg differs from the key's")
    current = now or datetime.now(UTC)
    try:
        verified = jwt.decode(
            token, key=key.jwk.key, algorithms=[alg], audience=audience, issuer=issuer,
            leeway=LEEWAY_S, options={"require": ["exp", "iat", "jti", "iss", "aud"]},
        )
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise TokenRejected(type(exc).__name__) from exc
    exp, iat, jti = verified.get("exp"), verified.get("iat"), verified.get("jti")
    if not isinstance(exp, int | float) or not isinstance(iat, int | float):
        raise TokenRejected("exp and iat must be numbers")
    if exp - iat > MAX_LIFETIME_S:
        raise TokenRejected("lifetime over 300 s")
    if iat > current.timestamp() + MAX_FUTURE_IAT_S:
        raise TokenRejected("iat in the future")
    if exp + LEEWAY_S < current.timestamp():
        raise TokenRejected("expired")
    if not isinstance(jti, str) or not jti:
        raise TokenRejected("jti missing")
    expires = datetime.fromtimestamp(exp, UTC) + timedelta(seconds=LEEWAY_S)
    if not use_jti(issuer, jti, expires):
        raise TokenRejected("jti replayed")
    sub = verified.get("sub")
    return Verified(issuer, sub if isinstance(sub, str) else None, jti)
