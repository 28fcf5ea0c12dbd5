"""Verifying the JWT a CDS client sends (interfaces.md section 4, CDS Hooks 2.0 security).

Rules: asymmetric algorithms only; ``kid`` required; a ``jku`` or ``x5u`` header that differs
from the issuer's configured ``jwks_url`` is refused and never fetched (an issuer without a
``jwks_url`` accepts neither header); ``aud`` equal to PUBLIC_BASE_URL plus the exact path;
``exp``, ``iat`` and ``jti`` required; ``exp - iat`` at most the issuer's ``max_lifetime_s``
(default 300 s; Epic's tokens live 900 s); ``nbf`` honoured; ``iat`` at most 60 s in the
future; 60 s leeway on every time; a ``jti`` is never accepted twice (the store keeps them, so
replicas share them). Keys come only from CDS_TRUSTED_ISSUERS: the pinned ``jwks_file`` when
one is given (then nothing is fetched, even when the token names the ``jwks_url`` in its
``jku``), else the ``jwks_url`` (fetched without redirects, within the request's outbound
deadline, cached). Every failure is the same ``TokenRejected``; the reason goes to the log,
never the token.
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
from typing import Any, Protocol, TypeGuard

import jwt
import requests

from ..config import TrustedIssuer, trusted_issuer

log = logging.getLogger("baclofen_check.jwt")

ALGORITHMS = frozenset({
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
})
LEEWAY_S = 60
MAX_LIFETIME_S = 300  # the default of an issuer's max_lifetime_s
MAX_FUTURE_IAT_S = 60
JWKS_TTL_S = 300.0
# choice: a kid missing from a cached JWKS refetches it (key rotation), at most once a minute.
JWKS_REFRESH_MIN_S = 60.0
JWKS_MAX_BYTES = 1_000_000


class Budget(Protocol):
    """The request's outbound deadline (service/outbound/deadline.Deadline)."""

    def remaining(self) -> float: ...


class TokenRejected(Exception):
    """The token is not accepted (the message is for the log only)."""


@dataclass(frozen=True)
class Verified:
    issuer: str
    subject: str | None
    jti: str
    style: str | None = None   # the issuer's card style (None: CDS_CLIENT_STYLE)


def is_url(source: str) -> bool:
    return source.startswith(("https://", "http://"))


@dataclass(frozen=True)
class Key:
    jwk: jwt.PyJWK
    alg: str | None   # the alg the JWK declares, if any: a token must use that one


class JwksCache:
    """Keys per issuer, from the configured file or URL only. ``issuers`` maps each issuer to
    a TrustedIssuer or to the string form (a JWKS URL or a JWKS file path)."""

    def __init__(self, issuers: Mapping[str, str | TrustedIssuer],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.issuers: dict[str, TrustedIssuer] = {
            name: trusted_issuer(name, value) for name, value in issuers.items()}
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

    def _load(self, source: TrustedIssuer, deadline: Budget) -> dict[str, Key]:
        if source.jwks_file is not None:
            try:
                data = json.loads(Path(source.jwks_file).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise TokenRejected("the JWKS file cannot be read") from exc
        elif source.jwks_url is not None:
            data = _fetch_jwks(source.jwks_url, deadline)
        else:  # pragma: no cover - the settings refuse an issuer without either
            raise TokenRejected("the issuer has no key source")
        return jwks_keys(data)


def jwks_keys(data: Any) -> dict[str, Key]:
    """The signing keys of a JWKS document by kid (keys for other uses, or unreadable, are
    left out)."""
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


def trusted_key(token: str, cache: JwksCache, deadline: Budget) -> tuple[str, str, Key]:
    """(alg, issuer, key) of a token whose header and issuer pass the checks every JWT we
    accept must pass (CDS Hooks calls and OAuth access tokens alike): an asymmetric ``alg``, a
    ``kid``, a trusted ``iss``, no ``jku``/``x5u`` but the issuer's own ``jwks_url``, and a key
    of that issuer with that ``kid`` (and ``alg``, when the key names one). The signature and
    the claims are checked by the caller with the key."""
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise TokenRejected("not a JWT") from exc
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ALGORITHMS:
        raise TokenRejected("algorithm not allowed")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise TokenRejected("kid missing")
    issuer = claims.get("iss")
    if not isinstance(issuer, str) or issuer not in cache.issuers:
        raise TokenRejected("issuer not trusted")
    source = cache.issuers[issuer]
    for name in ("jku", "x5u"):
        if name in header and (source.jwks_url is None or header[name] != source.jwks_url):
            raise TokenRejected(f"{name} differs from the configured JWKS URL")
    key = cache.key(issuer, kid, deadline)
    if key.alg is not None and key.alg != alg:
        raise TokenRejected("the token's alg differs from the key's")
    return alg, issuer, key


def verify(
    token: str,
    audience: str,
    cache: JwksCache,
    use_jti: Callable[[str, str, datetime], bool],
    deadline: Budget,
    now: datetime | None = None,
) -> Verified:
    """Check one token; raises TokenRejected for any failure."""
    alg, issuer, key = trusted_key(token, cache, deadline)
    source = cache.issuers[issuer]
    current = now or datetime.now(UTC)
    try:
        verified = jwt.decode(
            token, key=key.jwk.key, algorithms=[alg], audience=audience, issuer=issuer,
            leeway=LEEWAY_S, options={"require": ["exp", "iat", "jti", "iss", "aud"]},
        )
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise TokenRejected(type(exc).__name__) from exc
    exp, iat, jti = verified.get("exp"), verified.get("iat"), verified.get("jti")
    if not _number(exp) or not _number(iat):
        raise TokenRejected("exp and iat must be numbers")
    if exp - iat > source.max_lifetime_s:
        raise TokenRejected(f"lifetime over {source.max_lifetime_s} s")
    if iat > current.timestamp() + MAX_FUTURE_IAT_S:
        raise TokenRejected("iat in the future")
    if exp + LEEWAY_S < current.timestamp():
        raise TokenRejected("expired")
    if "nbf" in verified:
        nbf = verified["nbf"]
        if not _number(nbf):
            raise TokenRejected("nbf must be a number")
        if nbf - LEEWAY_S > current.timestamp():
            raise TokenRejected("not valid yet (nbf)")
    if not isinstance(jti, str) or not jti:
        raise TokenRejected("jti missing")
    expires = datetime.fromtimestamp(exp, UTC) + timedelta(seconds=LEEWAY_S)
    if not use_jti(issuer, jti, expires):
        raise TokenRejected("jti replayed")
    sub = verified.get("sub")
    return Verified(issuer, sub if isinstance(sub, str) else None, jti, source.style)


def _number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)
