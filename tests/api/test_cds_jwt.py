"""JWT security of the CDS Hooks endpoints: real tokens signed with generated EC and RSA keys,
every rejection a bare 401 (interfaces.md section 4)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from service import create_app
from service.cds.tokens import JWKS_REFRESH_MIN_S, JWKS_TTL_S, JwksCache, TokenRejected
from service.store import get_store
from tests.support import builders as b
from tests.support.cdsclient import hook_call
from tests.support.cdsjwt import (
    BASE,
    DISCOVERY,
    EC_KEY,
    ISS_FILE,
    ISS_URL,
    OTHER_KEY,
    RSA_KEY,
    SIGN,
    call,
    claims,
    jwk,
    token,
)
from tests.support.httpstub import StubServer, stub_server


@pytest.fixture(scope="module")
def jwks_stub() -> Iterator[StubServer]:
    with stub_server() as stub:
        stub.json("/jwks.json", {"keys": [jwk(RSA_KEY, "rsa-1", "RS384")]})
        yield stub


@pytest.fixture(scope="module")
def secure_app(tmp_path_factory: pytest.TempPathFactory, jwks_stub: StubServer) -> Flask:
    tmp_path = tmp_path_factory.mktemp("jwt")
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [jwk(EC_KEY, "ec-1", "ES256"),
                                              jwk(RSA_KEY, "rsa-1", "RS256")]}))
    return create_app({
        "CDS_REQUIRE_JWT": True,
        "CDS_TRUSTED_ISSUERS": json.dumps({ISS_FILE: str(jwks_file),
                                           ISS_URL: f"{jwks_stub.base}/jwks.json"}),
        "PUBLIC_BASE_URL": BASE,
        "API_REQUIRE_AUTH": True,
        "API_TOKENS": "static-token",
        "DATABASE_URL": f"sqlite:///{tmp_path}/audit.sqlite3",
        "TESTING": True,
    })


@pytest.fixture
def secure(secure_app: Flask) -> FlaskClient:
    return secure_app.test_client()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(path: str) -> str:
    head = b64(json.dumps({"alg": "none", "typ": "JWT", "kid": "ec-1"}).encode())
    body = b64(json.dumps(claims(path)).encode())
    return f"{head}.{body}."


def hs256_with_public_key(path: str) -> str:
    """The classic key-confusion attack: HMAC keyed with the issuer's public key."""
    pem = RSA_KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    body = b64(json.dumps(claims(path)).encode())
    sig = hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"




ATTACKS = [
    pytest.param(lambda p: None, id="no_token"),
    pytest.param(lambda p: "not.a.jwt", id="garbage"),
    pytest.param(unsigned, id="alg_none"),
    pytest.param(hs256_with_public_key, id="hs256_with_public_key"),
    pytest.param(lambda p: token(p, aud=BASE + "/cds-services/other"), id="wrong_aud_path"),
    pytest.param(lambda p: token(p, aud="https://elsewhere.example" + p), id="wrong_aud_host"),
    pytest.param(lambda p: token(p, iat=int(time.time()) - 250, exp=int(time.time()) - 61),
                 id="expired"),
    pytest.param(lambda p: token(p, iat=int(time.time()) + 120, exp=int(time.time()) + 300),
                 id="iat_in_future"),
    pytest.param(lambda p: token(p, nbf=int(time.time()) + 120), id="not_yet_valid_nbf"),
    pytest.param(lambda p: token(p, iss="https://unknown.example"), id="unknown_issuer"),
    pytest.param(lambda p: token(p, kid="ec-unknown"), id="unknown_kid"),
    pytest.param(lambda p: token(p, kid=None), id="no_kid"),
    pytest.param(lambda p: token(p, key=OTHER_KEY), id="signed_by_another_key"),
    pytest.param(lambda p: token(p, headers={"jku": "https://evil.example/jwks.json"}),
                 id="foreign_jku"),
    pytest.param(lambda p: token(p, headers={"x5u": "https://evil.example/cert.pem"}),
                 id="foreign_x5u"),
    pytest.param(lambda p: token(p, exp=int(time.time()) + 301), id="lifetime_over_300s"),
    pytest.param(lambda p: token(p, jti=None), id="no_jti"),
    pytest.param(lambda p: token(p, exp=None), id="no_exp"),
    pytest.param(lambda p: token(p, iat=None), id="no_iat"),
    pytest.param(lambda p: token(p, key=RSA_KEY, alg="RS256", kid="ec-1"),
                 id="rsa_signature_on_ec_kid"),
    pytest.param(lambda p: token(p, key=RSA_KEY, alg="PS256", kid="rsa-1"),
                 id="alg_other_than_the_keys"),
]


@pytest.mark.parametrize("path", [DISCOVERY, SIGN, SIGN + "/feedback"],
                         ids=["discovery", "service", "feedback"])
@pytest.mark.parametrize("make", ATTACKS)
def test_every_attack_is_a_bare_401(secure: FlaskClient, make: Any, path: str) -> None:
    resp = call(secure, path, make(path))
    assert resp.status_code == 401
    assert resp.get_data() == b""


@pytest.mark.parametrize("path", [DISCOVERY, SIGN, SIGN + "/feedback"],
                         ids=["discovery", "service", "feedback"])
@pytest.mark.parametrize(("key", "alg", "kid"), [(EC_KEY, "ES256", "ec-1"),
                                                 (RSA_KEY, "RS256", "rsa-1")],
                         ids=["ES256", "RS256"])
def test_valid_token_is_accepted(secure: FlaskClient, path: str, key: Any, alg: str,
                                 kid: str) -> None:
    resp = call(secure, path, token(path, key=key, alg=alg, kid=kid))
    assert resp.status_code == 200, resp.get_data(as_text=True)


def test_replayed_jti_is_refused(secure: FlaskClient) -> None:
    tok = token(DISCOVERY)
    assert call(secure, DISCOVERY, tok).status_code == 200
    assert call(secure, DISCOVERY, tok).status_code == 401


def test_clock_leeway_of_60_seconds(secure: FlaskClient) -> None:
    now = int(time.time())
    recent = token(DISCOVERY, iat=now - 290, exp=now - 30)
    assert call(secure, DISCOVERY, recent).status_code == 200
    ahead = token(DISCOVERY, iat=now + 30, exp=now + 300)
    assert call(secure, DISCOVERY, ahead).status_code == 200


def test_jwks_url_issuer_and_matching_jku(secure: FlaskClient, jwks_stub: StubServer) -> None:
    url = f"{jwks_stub.base}/jwks.json"
    tok = token(DISCOVERY, key=RSA_KEY, alg="RS384", kid="rsa-1", iss=ISS_URL,
                headers={"jku": url})
    before = len(jwks_stub.hits)
    assert call(secure, DISCOVERY, tok).status_code == 200
    fetched = len(jwks_stub.hits)
    assert fetched - before <= 1
    assert all(h[1] == "/jwks.json" for h in jwks_stub.hits)
    # cached: a second token does not fetch again
    tok2 = token(DISCOVERY, key=RSA_KEY, alg="RS384", kid="rsa-1", iss=ISS_URL)
    assert call(secure, DISCOVERY, tok2).status_code == 200
    assert len(jwks_stub.hits) == fetched


def test_foreign_jku_is_never_fetched(secure: FlaskClient, jwks_stub: StubServer) -> None:
    foreign = f"{jwks_stub.base}/attacker-jwks.json"
    jwks_stub.json("/attacker-jwks.json", {"keys": [jwk(OTHER_KEY, "evil", "ES256")]})
    tok = token(DISCOVERY, key=OTHER_KEY, kid="evil", iss=ISS_URL, headers={"jku": foreign})
    assert call(secure, DISCOVERY, tok).status_code == 401
    assert [h for h in jwks_stub.hits if "attacker" in h[1]] == []


def test_trusted_jwt_is_accepted_on_the_fhir_endpoint(secure: FlaskClient) -> None:
    path = "/MedicationRequest/$check"
    body = b.parameters(b.order(b.dosage(40, frequency=3)))
    headers = {"Content-Type": "application/fhir+json"}
    ok = secure.post(path, json=body,
                     headers={**headers, "Authorization": f"Bearer {token(path)}"})
    assert ok.status_code == 200
    wrong_aud = secure.post(path, json=body, headers={
        **headers, "Authorization": f"Bearer {token(path, aud=BASE + SIGN)}"})
    assert wrong_aud.status_code == 401
    static = secure.post(path, json=body,
                         headers={**headers, "Authorization": "Bearer static-token"})
    assert static.status_code == 200


def test_no_jwt_needed_when_turned_off(client: FlaskClient) -> None:
    assert client.get(DISCOVERY).status_code == 200


def test_unknown_service_needs_the_jwt_first(secure: FlaskClient) -> None:
    assert secure.post("/cds-services/nope", json={}).status_code == 401
    path = "/cds-services/nope"
    assert call(secure, path, token(path)).status_code == 404


# --- the key cache ------------------------------------------------------------------------

class _Budget:
    def remaining(self) -> float:
        return 5.0


def test_jwks_cache_ttl_and_rotation(tmp_path: Any) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk(EC_KEY, "old", "ES256")]}))
    now = [1000.0]
    cache = JwksCache({ISS_FILE: str(path)}, clock=lambda: now[0])
    assert cache.key(ISS_FILE, "old", _Budget()) is not None
    # the issuer rotates its key: a new kid is looked up again only after the refresh interval
    path.write_text(json.dumps({"keys": [jwk(OTHER_KEY, "new", "ES256")]}))
    with pytest.raises(TokenRejected):
        cache.key(ISS_FILE, "new", _Budget())
    now[0] += JWKS_REFRESH_MIN_S + 1
    assert cache.key(ISS_FILE, "new", _Budget()) is not None
    # after the TTL the old key is gone
    now[0] += JWKS_TTL_S + 1
    with pytest.raises(TokenRejected):
        cache.key(ISS_FILE, "old", _Budget())


def test_jwks_keys_for_encryption_are_not_used(tmp_path: Any) -> None:
    key = jwk(EC_KEY, "enc", "ES256")
    key["use"] = "enc"
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [key]}))
    with pytest.raises(TokenRejected):
        JwksCache({ISS_FILE: str(path)}).key(ISS_FILE, "enc", _Budget())


def test_the_issuer_is_recorded_as_the_caller(secure_app: Flask, secure: FlaskClient) -> None:
    body = hook_call(b.order(), patient=b.patient())
    resp = secure.post(SIGN, json=body, headers={"Authorization": f"Bearer {token(SIGN)}"})
    assert resp.status_code == 200
    with get_store(secure_app).engine.connect() as conn:
        callers = conn.execute(text("select caller from checks where hook_instance = :h"),
                               {"h": body["hookInstance"]}).scalars().all()
    assert callers == [f"jwt:{ISS_FILE}"]
