"""JWTs as real CDS clients sign them (issue 13): Epic (RS384, 900 s, ``nbf``, a ``kid`` with
``+`` and ``=``) and the CDS Hooks sandbox (ES384 on P-384, ``jku`` naming its published key
set, which the operator pinned in a local file). Keys are generated here; every refusal is a
bare 401."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flask import Flask
from flask.testing import FlaskClient

from service import create_app
from service.config import ConfigError, load_settings
from tests.support import builders as b
from tests.support.cdsclient import hook_call
from tests.support.cdsjwt import jwk
from tests.support.httpstub import StubServer, stub_server

BASE = "http://127.0.0.1:8080"
DISCOVERY = "/cds-services"
SIGN = "/cds-services/baclofen-order-sign"
EPIC = "https://fhir.epic.example/interconnect-prd/oauth2"
EPIC_KID = "Wq+3ZxV0f/a8bQ=="
SANDBOX = "https://sandbox.example.org"
SANDBOX_JKU = "https://sandbox.example.org/.well-known/jwks.json"
SANDBOX_KID = "44823f3d-0000-4a6c-a80e-b9d3e8a7226f"
PLAIN = "https://ehr.example/plain"   # string form, a file: no jku accepted
EPIC_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
SANDBOX_KEY = ec.generate_private_key(ec.SECP384R1())
PLAIN_KEY = ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def epic_jwks() -> Iterator[StubServer]:
    with stub_server() as stub:
        stub.json("/jwks.json", {"keys": [jwk(EPIC_KEY, EPIC_KID, "RS384")]})
        # what the sandbox-like issuer's jku would fetch if it were ever fetched
        stub.json("/sandbox-jwks.json", {"keys": [jwk(SANDBOX_KEY, SANDBOX_KID, "ES384")]})
        yield stub


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, epic_jwks: StubServer) -> Flask:
    tmp = tmp_path_factory.mktemp("jwt-clients")
    pinned = tmp / "sandbox-jwks.json"
    pinned.write_text(json.dumps({"keys": [jwk(SANDBOX_KEY, SANDBOX_KID, "ES384")]}))
    plain = tmp / "plain-jwks.json"
    plain.write_text(json.dumps({"keys": [jwk(PLAIN_KEY, "p1", "ES256")]}))
    issuers = {
        EPIC: {"jwks_url": f"{epic_jwks.base}/jwks.json", "max_lifetime_s": 900,
               "style": "epic"},
        SANDBOX: {"jwks_url": SANDBOX_JKU, "jwks_file": str(pinned)},
        PLAIN: str(plain),
    }
    return create_app({"CDS_REQUIRE_JWT": True, "CDS_TRUSTED_ISSUERS": json.dumps(issuers),
                       "PUBLIC_BASE_URL": BASE, "TESTING": True,
                       "DATABASE_URL": f"sqlite:///{tmp}/audit.sqlite3"})


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def epic_token(path: str, lifetime: int = 900, nbf_offset: int | None = 0,
               headers: dict[str, Any] | None = None) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {"iss": EPIC, "sub": "epic-client", "aud": BASE + path,
                              "iat": now, "exp": now + lifetime, "jti": str(uuid.uuid4())}
    if nbf_offset is not None:
        claims["nbf"] = now + nbf_offset
    return jwt.encode(claims, EPIC_KEY, algorithm="RS384",
                      headers={"kid": EPIC_KID, "typ": "JWT", **(headers or {})})


def sandbox_token(path: str, issuer: str = SANDBOX, jku: str | None = SANDBOX_JKU,
                  key: Any = SANDBOX_KEY, kid: str = SANDBOX_KID, alg: str = "ES384") -> str:
    now = int(time.time())
    headers: dict[str, Any] = {"kid": kid, "typ": "JWT"}
    if jku is not None:
        headers["jku"] = jku
    return jwt.encode({"iss": issuer, "aud": BASE + path, "iat": now, "exp": now + 300,
                       "jti": str(uuid.uuid4())}, key, algorithm=alg, headers=headers)


def call(client: FlaskClient, path: str, token: str) -> Any:
    headers = {"Authorization": f"Bearer {token}"}
    if path == DISCOVERY:
        return client.get(path, headers=headers)
    return client.post(path, headers=headers, json=hook_call(
        b.order(b.dosage(40, frequency=3)), patient=b.patient()))


@pytest.mark.parametrize("path", [DISCOVERY, SIGN])
def test_epic_like_token_of_900_s_with_nbf_and_an_awkward_kid(client: FlaskClient,
                                                               path: str) -> None:
    resp = call(client, path, epic_token(path))
    assert resp.status_code == 200, resp.get_data(as_text=True)


def test_epic_like_token_without_nbf_is_accepted(client: FlaskClient) -> None:
    assert call(client, DISCOVERY, epic_token(DISCOVERY, nbf_offset=None)).status_code == 200


def test_nbf_is_honoured_with_the_same_leeway(client: FlaskClient) -> None:
    # 30 s ahead: inside the 60 s leeway
    assert call(client, DISCOVERY, epic_token(DISCOVERY, nbf_offset=30)).status_code == 200
    late = call(client, DISCOVERY, epic_token(DISCOVERY, nbf_offset=120))
    assert late.status_code == 401
    assert late.get_data() == b""


def test_max_lifetime_is_per_issuer(client: FlaskClient) -> None:
    over = call(client, DISCOVERY, epic_token(DISCOVERY, lifetime=901))
    assert over.status_code == 401 and over.get_data() == b""
    # the default (300 s) still holds for the other issuers
    now = int(time.time())
    long_plain = jwt.encode({"iss": PLAIN, "aud": BASE + DISCOVERY, "iat": now,
                             "exp": now + 301, "jti": str(uuid.uuid4())}, PLAIN_KEY,
                            algorithm="ES256", headers={"kid": "p1"})
    assert call(client, DISCOVERY, long_plain).status_code == 401


def test_epic_jku_must_be_its_jwks_url(client: FlaskClient, epic_jwks: StubServer) -> None:
    url = f"{epic_jwks.base}/jwks.json"
    assert call(client, DISCOVERY, epic_token(DISCOVERY, headers={"jku": url})).status_code \
        == 200
    before = len(epic_jwks.hits)
    foreign = call(client, DISCOVERY, epic_token(
        DISCOVERY, headers={"jku": f"{epic_jwks.base}/sandbox-jwks.json"}))
    assert foreign.status_code == 401
    assert len(epic_jwks.hits) == before


@pytest.mark.parametrize("path", [DISCOVERY, SIGN, SIGN + "/feedback"])
def test_sandbox_like_token_with_its_jku_and_a_pinned_key_set(
        client: FlaskClient, epic_jwks: StubServer, path: str) -> None:
    headers = {"Authorization": f"Bearer {sandbox_token(path)}"}
    if path == DISCOVERY:
        resp = client.get(path, headers=headers)
    elif path.endswith("/feedback"):
        resp = client.post(path, headers=headers, json={"feedback": [{
            "card": str(uuid.uuid4()), "outcome": "accepted",
            "outcomeTimestamp": "2026-11-25T10:00:00Z"}]})
    else:
        resp = call(client, path, sandbox_token(path))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    # the pinned file was used: nothing fetched (the jku host does not even exist)
    assert [h for h in epic_jwks.hits if "sandbox" in h[1]] == []


@pytest.mark.parametrize("make", [
    pytest.param(lambda: sandbox_token(DISCOVERY, jku="https://sandbox.example.org/other.json"),
                 id="other_jku"),
    pytest.param(lambda: sandbox_token(DISCOVERY, jku="https://evil.example/.well-known/"
                                                      "jwks.json"), id="foreign_jku"),
    pytest.param(lambda: sandbox_token(DISCOVERY, key=ec.generate_private_key(
        ec.SECP384R1())), id="another_key_same_kid"),
    pytest.param(lambda: sandbox_token(DISCOVERY, issuer=PLAIN, key=PLAIN_KEY, kid="p1",
                                       alg="ES256", jku=SANDBOX_JKU),
                 id="jku_on_an_issuer_without_jwks_url"),
])
def test_sandbox_like_refusals_are_bare_401(client: FlaskClient, make: Any) -> None:
    resp = call(client, DISCOVERY, make())
    assert resp.status_code == 401
    assert resp.get_data() == b""


def test_string_form_still_works(client: FlaskClient) -> None:
    resp = call(client, DISCOVERY, sandbox_token(DISCOVERY, issuer=PLAIN, key=PLAIN_KEY,
                                                 kid="p1", alg="ES256", jku=None))
    assert resp.status_code == 200


@pytest.mark.parametrize("entry", [
    {"jwks_url": "https://a.example/jwks.json", "colour": "red"},
    {"style": "epic"},
    {"jwks_url": "ftp://a.example/jwks.json"},
    {"jwks_file": "/tmp/x.json", "style": "cerner"},
    {"jwks_file": "/tmp/x.json", "max_lifetime_s": 0},
    {"jwks_file": "/tmp/x.json", "max_lifetime_s": 86400},
    {"jwks_file": "/tmp/x.json", "max_lifetime_s": True},
    42,
    "",
])
def test_bad_issuer_entries_are_refused_at_start(entry: Any) -> None:
    with pytest.raises(ConfigError, match="CDS_TRUSTED_ISSUERS"):
        load_settings({"CDS_TRUSTED_ISSUERS": json.dumps({"https://i.example": entry})},
                      environ={})


def test_issuer_entries_are_read(tmp_path: Path) -> None:
    cfg = load_settings({"CDS_TRUSTED_ISSUERS": json.dumps({
        "https://a.example": "https://a.example/jwks.json",
        "https://b.example": str(tmp_path / "b.json"),
        "https://c.example": {"jwks_url": "https://c.example/k", "jwks_file": "/k.json",
                              "max_lifetime_s": "900", "style": "epic"},
    }), "CDS_CLIENT_STYLE": "Epic", "CDS_REPEAT_AFTER_H": "12"}, environ={})
    a, bb, c = (cfg.cds_trusted_issuers[f"https://{n}.example"] for n in "abc")
    assert (a.jwks_url, a.jwks_file, a.max_lifetime_s, a.style) == (
        "https://a.example/jwks.json", None, 300, None)
    assert (bb.jwks_url, bb.jwks_file) == (None, str(tmp_path / "b.json"))
    assert (c.jwks_url, c.jwks_file, c.max_lifetime_s, c.style) == (
        "https://c.example/k", "/k.json", 900, "epic")
    assert cfg.cds_client_style == "epic"
    assert cfg.cds_repeat_after_h == 12
    with pytest.raises(ConfigError, match="CDS_CLIENT_STYLE"):
        load_settings({"CDS_CLIENT_STYLE": "cerner"}, environ={})
    with pytest.raises(ConfigError, match="CDS_REPEAT_AFTER_H"):
        load_settings({"CDS_REPEAT_AFTER_H": "-1"}, environ={})


def test_the_issuer_style_picks_the_card_style(client: FlaskClient) -> None:
    epic = call(client, SIGN, epic_token(SIGN))
    plain = call(client, SIGN, sandbox_token(SIGN))
    epic_codes = {c["source"]["topic"]["code"] for c in epic.get_json()["cards"]}
    plain_codes = {c["source"]["topic"]["code"] for c in plain.get_json()["cards"]}
    assert "oralmaxdaily" in epic_codes and "oral.max-daily" in plain_codes
