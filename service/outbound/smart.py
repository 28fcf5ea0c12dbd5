"""SMART Backend Services client (SMART App Launch 2.x, "Backend Services").

Every call the service itself makes to ``FHIR_SERVER_URL`` (by-id reads, write-back, and what
later features add) carries an access token got this way when ``FHIR_SERVER_AUTH`` is
``smart-backend``; the CDS self-fetch never does (it uses the EHR's ``fhirAuthorization``).

- The token URL is ``SMART_TOKEN_URL``, else ``token_endpoint`` of
  ``{FHIR_SERVER_URL}/.well-known/smart-configuration`` (read once per process per hour).
- The token request is ``client_credentials`` with a signed JWT client assertion:
  ``iss`` = ``sub`` = ``SMART_CLIENT_ID``, ``aud`` = the token URL, ``exp`` 4 minutes ahead
  (at most 5 are allowed), a fresh ``jti``, header ``kid`` and ``jku`` (our published key set,
  ``PUBLIC_BASE_URL/.well-known/jwks.json``), signed with the first key of
  ``SMART_PRIVATE_KEYS`` (RS384 or ES384).
- Both calls are outbound calls like any other (service/outbound/client.py): the URL must
  be under ``FHIR_ALLOWLIST`` (which includes ``SMART_TOKEN_URL`` when it is set), the
  request's deadline bounds them, redirects are never followed and answers are size-capped.
- One token per process, shared by its threads, until ``expires_in`` minus a margin; while one
  thread asks for a token the others wait for it (each within its own deadline). A ``401``
  from the FHIR server gets one new token and one retry (fhir_input.fetch.FhirClient.request).
- A failure is a ``FetchFailure`` (``auth``, or ``timeout`` past the deadline) whose message
  names the authorization step; it counts in
  ``baclofen_check_outbound_fhir_failures_total{operation="token",reason="auth"}``.
  Nothing of a token, an assertion or a key is logged or put into a message; of the token
  endpoint's error answer only the OAuth ``error`` code is kept.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt

from .. import metrics
from ..errors import ServiceError
from ..jsonbody import parse_json_text
from .allowlist import allowed
from .client import HttpClient
from .deadline import Deadline, FetchFailure
from .keys import load_keys

log = logging.getLogger("baclofen_check.smart")

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# choice: 240 s, under the 300 s SMART allows, so that a server whose clock is a minute
# behind ours still sees an exp within its limit
ASSERTION_LIFETIME_S = 240
# choice: a token is renewed 30 s before it expires (a fifth of its life when that is less),
# so that a call started with it does not reach the server after its end
EXPIRY_MARGIN_S = 30.0
# SMART requires expires_in; an answer without one is taken to last 5 minutes
DEFAULT_EXPIRES_IN_S = 300.0
DISCOVERY_TTL_S = 3600.0
TOKEN_MAX_BYTES = 256 * 1024
ERROR_BODY_BYTES = 16 * 1024
_OAUTH_ERROR = re.compile(r"^[a-z_]{1,64}$")
OPERATION = "token"


def auth_failure(message: str, url: str, timeout: bool = False) -> FetchFailure:
    """A failed authorization step, counted under reason ``auth``."""
    metrics.OUTBOUND_FAILURES.labels(OPERATION, "auth").inc()
    return FetchFailure("timeout" if timeout else "auth", url,
                        f"authorization failed: {message}")


@dataclass(frozen=True)
class ClientConfig:
    """What one SMART client needs (from Settings; see ``config_from``)."""

    fhir_base: str
    client_id: str
    keys_path: str
    scope: str
    token_url: str | None
    allowlist: tuple[str, ...]
    jku: str
    max_bytes: int


@dataclass
class _Token:
    header: str         # "Bearer <access token>"
    expires_at: float   # monotonic

    def __repr__(self) -> str:  # never shows the token
        return f"_Token(expires_at={self.expires_at:.0f})"


class SmartBackendClient:
    """The access token for one FHIR server; an ``Authorizer`` (service/outbound/client.py) for
    fhir_input.fetch.FhirClient."""

    def __init__(self, config: ClientConfig, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.keys = load_keys(config.keys_path)
        self._clock = clock
        self._wall = wall_clock
        self._lock = threading.Lock()
        self._token: _Token | None = None
        self._token_url: tuple[str, float] | None = None  # (url, discovered at)
        self.token_requests = 0  # made by this process (tests and the README's figures)

    def __repr__(self) -> str:
        return f"SmartBackendClient({self.config.client_id!r}, {self.config.fhir_base!r})"

    # --- Authorizer -------------------------------------------------------------------------

    def authorization(self, deadline: Deadline, refused: str | None = None) -> str:
        token = self._token
        if token is not None and token.header != refused and self._fresh(token):
            return token.header
        if not self._lock.acquire(timeout=max(deadline.remaining(), 0.0)):
            raise auth_failure("no time was left waiting for the access token another call "
                               "is requesting", self.config.token_url or "", timeout=True)
        try:
            token = self._token  # another thread may have got one meanwhile
            if token is not None and token.header != refused and self._fresh(token):
                return token.header
            self._token = None
            token = self._request_token(deadline)
            self._token = token
            return token.header
        finally:
            self._lock.release()

    def forget(self) -> None:
        """Drop the cached token and token URL (the next call asks again)."""
        with self._lock:
            self._token = None
            self._token_url = None

    def _fresh(self, token: _Token) -> bool:
        return self._clock() < token.expires_at

    # --- the two calls ----------------------------------------------------------------------

    def _http(self) -> HttpClient:
        cfg = self.config
        return HttpClient(cfg.allowlist, min(cfg.max_bytes, TOKEN_MAX_BYTES))

    def token_url(self, deadline: Deadline) -> str:
        cfg = self.config
        if cfg.token_url:
            return cfg.token_url
        cached = self._token_url
        if cached is not None and self._clock() - cached[1] < DISCOVERY_TTL_S:
            return cached[0]
        url = f"{cfg.fhir_base}/.well-known/smart-configuration"
        data = self._json_call("GET", url, deadline, "the SMART configuration", "discovery")
        endpoint = data.get("token_endpoint")
        if not isinstance(endpoint, str) or not endpoint.startswith(("https://", "http://")):
            raise auth_failure(f"the SMART configuration at {url} names no token_endpoint",
                               url)
        self._token_url = (endpoint, self._clock())
        return endpoint

    def assertion(self, token_url: str) -> str:
        """The signed client assertion for one token request."""
        key = self.keys[0]
        now = int(self._wall())
        claims = {"iss": self.config.client_id, "sub": self.config.client_id,
                  "aud": token_url, "iat": now, "exp": now + ASSERTION_LIFETIME_S,
                  "jti": uuid.uuid4().hex}
        return jwt.encode(claims, key.private, algorithm=key.alg,
                          headers={"kid": key.kid, "jku": self.config.jku, "typ": "JWT"})

    def _request_token(self, deadline: Deadline) -> _Token:
        url = self.token_url(deadline)
        if not allowed(url, self.config.allowlist):
            shown = url.split("?", 1)[0]
            if self.config.token_url:
                raise auth_failure(f"the token endpoint {shown} (SMART_TOKEN_URL) is not in "
                                   "FHIR_ALLOWLIST: add it there", url)
            raise auth_failure(f"the token endpoint {shown} named by the server's SMART "
                               "configuration is not in FHIR_ALLOWLIST: add it there, or set "
                               "SMART_TOKEN_URL (the default FHIR_ALLOWLIST includes it)", url)
        form = {"grant_type": "client_credentials", "scope": self.config.scope,
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": self.assertion(url)}
        self.token_requests += 1
        started = self._clock()
        data = self._json_call("POST", url, deadline, "the token request", OPERATION,
                               form=form)
        access = data.get("access_token")
        kind = data.get("token_type")
        if not isinstance(access, str) or not access or any(c in access for c in "\r\n "):
            raise auth_failure(f"the token endpoint {url} answered no usable access_token",
                               url)
        if not isinstance(kind, str) or kind.lower() != "bearer":
            raise auth_failure(f"the token endpoint {url} answered a token_type other than "
                               "bearer", url)
        lifetime = data.get("expires_in", DEFAULT_EXPIRES_IN_S)
        if isinstance(lifetime, str) and lifetime.isdigit():
            lifetime = int(lifetime)
        if isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or lifetime <= 0:
            lifetime = DEFAULT_EXPIRES_IN_S
        margin = min(EXPIRY_MARGIN_S, float(lifetime) / 5)
        log.info("SMART access token received", extra={
            "event": "smart-token", "expires_in": lifetime,
            "granted_scope": data.get("scope") if isinstance(data.get("scope"), str) else None})
        return _Token(f"Bearer {access}", started + float(lifetime) - margin)

    def _json_call(self, method: str, url: str, deadline: Deadline, what: str,
                   operation: str, form: dict[str, str] | None = None) -> dict[str, Any]:
        try:
            status, raw = self._http().exchange(
                method, url, deadline, {"Accept": "application/json"}, operation, form=form,
                error_body_bytes=ERROR_BODY_BYTES, count_failures=False)
        except FetchFailure as failure:
            raise auth_failure(f"{what} to {url.split('?', 1)[0]} failed: {failure.message}",
                               url, timeout=failure.reason == "timeout") from failure
        if status != 200:
            code = _oauth_error(raw)
            raise auth_failure(f"{what} to {url} was refused (HTTP {status}"
                               f"{', ' + code if code else ''})", url)
        try:
            data = parse_json_text(raw)
        except ServiceError as exc:
            raise auth_failure(f"{what} to {url} answered invalid JSON", url) from exc
        if not isinstance(data, dict):
            raise auth_failure(f"{what} to {url} did not answer a JSON object", url)
        return data


def _oauth_error(raw: bytes) -> str | None:
    """The OAuth ``error`` code of an error answer (RFC 6749 5.2), when it is a plain code;
    ``error_description`` is never repeated (it is the server's free text)."""
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        return None
    code = data.get("error") if isinstance(data, dict) else None
    return code if isinstance(code, str) and _OAUTH_ERROR.match(code) else None


# --- one client per configuration, per process ----------------------------------------------

_clients: dict[ClientConfig, SmartBackendClient] = {}
_clients_lock = threading.Lock()


def client_for(config: ClientConfig) -> SmartBackendClient:
    """The process's client for this configuration (made on first use)."""
    found = _clients.get(config)
    if found is not None:
        return found
    with _clients_lock:
        found = _clients.get(config)
        if found is None:
            found = _clients[config] = SmartBackendClient(config)
        return found


def forget_all() -> None:
    """Drop every client of this process with its tokens (tests)."""
    global _clients_lock
    _clients.clear()
    _clients_lock = threading.Lock()


def _after_fork() -> None:
    """In a forked child (a gunicorn worker): its own clients, with the keys already read but
    no token and new locks (a lock held by another thread at the fork would never be
    released here)."""
    global _clients_lock
    _clients_lock = threading.Lock()
    for config, parent in list(_clients.items()):
        child = SmartBackendClient.__new__(SmartBackendClient)
        child.__dict__.update(parent.__dict__)
        child._lock = threading.Lock()
        child._token = None
        child.token_requests = 0
        _clients[config] = child


os.register_at_fork(after_in_child=_after_fork)
