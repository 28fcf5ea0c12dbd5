"""OAuth 2.0 access tokens on the native FHIR endpoints (API_AUTH=oauth|both).

The issuer is real: oidc-provider (OpenID Certified; tests/oauth-issuer) on loopback, issuing
``client_credentials`` access tokens as signed JWTs (RFC 9068: ``typ: at+jwt``, ``iss``,
``sub``, ``aud``, ``exp``, ``iat``, ``jti``, ``client_id``, ``scope``) with the scopes each
client is allowed, and a ``patient`` claim for the patient-confined client; the service
fetches its keys from the issuer's ``jwks_uri``. The refusals that a conforming issuer cannot
be made to produce (``alg: none``, HS256 signed with the public key, a foreign ``jku``, an
``scp`` array) are tokens signed by a test key pair, with the claims such servers issue.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from service import create_app
from service.config import ConfigError
from service.metrics import OUTBOUND
from service.store import get_store
from service.web.oauth import AccessToken, Verified
from tests.support.builders import dosage, order, parameters, patient
from tests.support.checks import TOKEN
from tests.support.fhir_validate import validate
from tests.support.keypairs import jwk, rsa_key
from tests.support.services import Sekmet, _wait_until, free_port

ROOT = Path(__file__).resolve().parents[2]
ISSUER_DIR = ROOT / "tests" / "oauth-issuer"
AUDIENCE = "http://127.0.0.1:8080"  # PUBLIC_BASE_URL's default
SECRET = "client-secret-" + "x" * 32
CLIENTS = {
    "engine": "system/MedicationRequest.rs system/DetectedIssue.cru system/DetectedIssue.rs",
    "reader": "system/MedicationRequest.rs",
    "clinician": "user/MedicationRequest.rs user/DetectedIssue.rs",
    "v1-engine": "system/MedicationRequest.read system/DetectedIssue.write",
    "portal": "patient/MedicationRequest.rs patient/DetectedIssue.cru",
    "labs": "system/Observation.rs",
    "narrow": "system/MedicationRequest.rs?status=active",
}
PATIENT_OF = {"portal": "pat-1"}


@dataclass
class Issuer:
    url: str

    def token(self, client: str, resource: str | None = None) -> str:
        form = {"grant_type": "client_credentials", "scope": CLIENTS[client]}
        if resource:
            form["resource"] = resource
        resp = requests.post(f"{self.url}/token", data=form, auth=(client, SECRET), timeout=10)
        assert resp.status_code == 200, resp.text
        return str(resp.json()["access_token"])


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Issuer]:
    server = ISSUER_DIR / "server.mjs"
    if not (ISSUER_DIR / "node_modules" / "oidc-provider").exists():
        pytest.fail("the OAuth issuer is not installed: run `make "
                    "tests/oauth-issuer/node_modules/.installed`")
    home = tmp_path_factory.mktemp("oauth-issuer")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    scopes = sorted({s for value in CLIENTS.values() for s in value.split()})
    config = {
        "issuer": url, "audience": AUDIENCE, "ttl": 300, "scopes": scopes,
        "jwks": {"keys": [jwk(rsa_key(), "issuer-key-1", alg="RS256")]},
        "clients": [{"client_id": c, "client_secret": SECRET, "scope": s,
                     **({"patient": PATIENT_OF[c]} if c in PATIENT_OF else {})}
                    for c, s in CLIENTS.items()],
    }
    (home / "config.json").write_text(json.dumps(config), encoding="utf-8")
    log = open(home / "issuer.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(["node", str(server), str(port), str(home / "config.json")],
                            cwd=ISSUER_DIR, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)

    def ready() -> bool:
        if proc.poll() is not None:
            pytest.fail("the OAuth issuer exited: " + (home / "issuer.log").read_text())
        try:
            return requests.get(f"{url}/jwks", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    try:
        _wait_until(ready, "the OAuth issuer")
        yield Issuer(url)
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
        log.close()


# --- a test issuer for what a conforming server does not issue -----------------------------------

TEST_ISSUER = "https://auth.example.org/realms/ehr"


@dataclass
class SigningPair:
    key: Any
    jwks_file: str
    public_pem: bytes


@pytest.fixture(scope="module")
def test_keys(tmp_path_factory: pytest.TempPathFactory) -> SigningPair:
    key = rsa_key()
    path = tmp_path_factory.mktemp("oauth-keys") / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk(key, "test-1", private=False, alg="RS256")]}))
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return SigningPair(key, str(path), pem)


def claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": TEST_ISSUER, "sub": "service-account-engine", "aud": AUDIENCE,
            "iat": now, "exp": now + 300, "jti": uuid.uuid4().hex, "azp": "engine",
            "scope": "system/MedicationRequest.rs"}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def signed(keys: SigningPair, headers: dict[str, Any] | None = None, **over: Any) -> str:
    return jwt.encode(claims(**over), keys.key, algorithm="RS256",
                      headers={"kid": "test-1", "typ": "at+jwt", **(headers or {})})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], body: dict[str, Any], secret: bytes | None) -> str:
    head = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(body).encode())
    if secret is None:
        return head + "."
    return head + "." + _b64(hmac.new(secret, head.encode(), hashlib.sha256).digest())


# --- the app ------------------------------------------------------------------------------------

def make_app(tmp_path: Path, issuer: Issuer, test_keys: SigningPair, mode: str = "oauth",
             **extra: Any) -> Flask:
    return create_app({
        "API_REQUIRE_AUTH": True, "API_AUTH": mode, "API_TOKENS": f"{TOKEN}:write",
        "CDS_REQUIRE_JWT": False, "DATABASE_URL": f"sqlite:///{tmp_path}/audit.sqlite3",
        "OAUTH_ISSUERS": json.dumps({
            issuer.url: {"jwks_url": f"{issuer.url}/jwks", "token_url": f"{issuer.url}/token"},
            TEST_ISSUER: {"jwks_file": test_keys.jwks_file},
        }),
        "TESTING": True, **extra,
    })


@pytest.fixture
def client(tmp_path: Path, issuer: Issuer, test_keys: SigningPair) -> FlaskClient:
    return make_app(tmp_path, issuer, test_keys).test_client()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def check(client: FlaskClient, token: str | None, pid: str = "pat-1") -> Any:
    body = parameters(order(dosage(10), subject={"reference": f"Patient/{pid}"}),
                      pat=patient(id=pid))
    return client.post("/MedicationRequest/$check", json=body,
                       headers=bearer(token) if token else {})


def assert_invalid_token(resp: Any) -> None:
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"] == \
        'Bearer realm="baclofen-check", error="invalid_token"'
    body = resp.get_json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == "login"


def assert_missing_scope(resp: Any, scope: str) -> None:
    assert resp.status_code == 403
    body = resp.get_json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == "forbidden"
    assert scope in body["issue"][0]["diagnostics"]
    challenge = resp.headers["WWW-Authenticate"]
    assert 'error="insufficient_scope"' in challenge and scope in challenge


# --- accepted -------------------------------------------------------------------------------

@pytest.mark.parametrize("who", ["engine", "reader", "clinician", "v1-engine", "portal"])
def test_tokens_of_the_real_issuer_check(client: FlaskClient, issuer: Issuer,
                                         who: str) -> None:
    resp = check(client, issuer.token(who))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json()["resourceType"] == "Bundle"


def test_the_caller_is_recorded_without_the_token(tmp_path: Path, issuer: Issuer,
                                                  test_keys: SigningPair) -> None:
    app = make_app(tmp_path, issuer, test_keys)
    token = issuer.token("engine")
    assert check(app.test_client(), token).status_code == 200


    with get_store(app).engine.connect() as conn:
        callers = [row[0] for row in conn.execute(text("SELECT caller FROM checks"))]
    assert callers == [f"oauth:{issuer.url}:engine"]


def test_scp_as_an_array_and_as_a_string(client: FlaskClient, test_keys: SigningPair) -> None:
    as_list = signed(test_keys, scope=None, scp=["system/MedicationRequest.rs"])
    assert check(client, as_list).status_code == 200
    as_text = signed(test_keys, scope=None, scp="user/MedicationRequest.read")
    assert check(client, as_text).status_code == 200


def test_both_accepts_static_tokens_and_access_tokens(tmp_path: Path, issuer: Issuer,
                                                      test_keys: SigningPair) -> None:
    both = make_app(tmp_path, issuer, test_keys, mode="both").test_client()
    assert check(both, TOKEN).status_code == 200
    assert check(both, issuer.token("reader")).status_code == 200
    oauth_only = make_app(tmp_path, issuer, test_keys, mode="oauth").test_client()
    assert_invalid_token(check(oauth_only, TOKEN))
    tokens_only = make_app(tmp_path, issuer, test_keys, mode="tokens").test_client()
    assert_invalid_token(check(tokens_only, issuer.token("reader")))


# --- refused: bad tokens (401) ------------------------------------------------------------------

def test_no_token_is_401_without_an_error_code(client: FlaskClient) -> None:
    resp = check(client, None)
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="baclofen-check"'


def test_a_token_for_another_audience_is_401(client: FlaskClient, issuer: Issuer) -> None:
    assert_invalid_token(check(client, issuer.token("engine",
                                                    resource="https://other.example/fhir")))


@pytest.mark.parametrize("case", [
    "expired", "not-yet-valid", "wrong-audience", "unknown-kid", "no-kid", "unknown-issuer",
    "foreign-jku", "no-exp", "tampered",
])
def test_refused_tokens_are_401_invalid_token(client: FlaskClient, test_keys: SigningPair,
                                              case: str) -> None:
    now = int(time.time())
    token = {
        "expired": lambda: signed(test_keys, iat=now - 900, exp=now - 120),
        "not-yet-valid": lambda: signed(test_keys, nbf=now + 600, exp=now + 900),
        "wrong-audience": lambda: signed(test_keys, aud="https://other.example/fhir"),
        "unknown-kid": lambda: signed(test_keys, headers={"kid": "rotated-away"}),
        "no-kid": lambda: jwt.encode(claims(), test_keys.key, algorithm="RS256"),
        "unknown-issuer": lambda: signed(test_keys, iss="https://evil.example"),
        "foreign-jku": lambda: signed(test_keys, headers={"jku": "https://evil.example/jwks"}),
        "no-exp": lambda: signed(test_keys, exp=None),
        "tampered": lambda: signed(test_keys)[:-6] + "AAAAAA",
    }[case]()
    assert_invalid_token(check(client, token))


def test_alg_none_is_401(client: FlaskClient) -> None:
    token = unsigned({"alg": "none", "kid": "test-1", "typ": "at+jwt"}, claims(), None)
    assert_invalid_token(check(client, token))


def test_hs256_signed_with_the_public_key_is_401(client: FlaskClient,
                                                  test_keys: SigningPair) -> None:
    token = unsigned({"alg": "HS256", "kid": "test-1", "typ": "at+jwt"}, claims(),
                     test_keys.public_pem)
    assert_invalid_token(check(client, token))


# --- refused: missing scope (403) ---------------------------------------------------------------

def test_a_token_without_medicationrequest_read_is_403_naming_the_scope(
        client: FlaskClient, issuer: Issuer) -> None:
    assert_missing_scope(check(client, issuer.token("labs")), "system/MedicationRequest.r")


def test_a_scope_narrowed_by_a_query_does_not_cover_checking(client: FlaskClient,
                                                              issuer: Issuer) -> None:
    assert_missing_scope(check(client, issuer.token("narrow")), "MedicationRequest")


def test_persist_needs_create_and_update_on_detectedissue(client: FlaskClient,
                                                          issuer: Issuer) -> None:
    resp = client.post("/MedicationRequest/o1/$check?persist=true",
                       headers=bearer(issuer.token("reader")))
    assert_missing_scope(resp, "system/DetectedIssue.cu")


def test_the_report_needs_detectedissue_read(client: FlaskClient, issuer: Issuer) -> None:
    assert client.get("/report", headers=bearer(issuer.token("engine"))).status_code == 200
    assert client.get("/report", headers=bearer(issuer.token("clinician"))).status_code == 200
    assert_missing_scope(client.get("/report", headers=bearer(issuer.token("reader"))),
                         "system/DetectedIssue.r")
    confined = client.get("/report", headers=bearer(issuer.token("portal")))
    assert confined.status_code == 403
    assert "spans every patient" in confined.get_json()["issue"][0]["diagnostics"]


# --- patient/ tokens ----------------------------------------------------------------------------

def test_a_patient_token_checks_its_patient_only(client: FlaskClient, issuer: Issuer) -> None:
    token = issuer.token("portal")
    assert jwt.decode(token, options={"verify_signature": False})["patient"] == "pat-1"
    assert check(client, token, "pat-1").status_code == 200
    resp = check(client, token, "pat-2")
    assert resp.status_code == 403
    text = resp.get_json()["issue"][0]["diagnostics"]
    assert "Patient/pat-1 only" in text


def test_a_patient_scope_without_a_patient_claim_is_403(client: FlaskClient,
                                                        test_keys: SigningPair) -> None:
    token = signed(test_keys, scope="patient/MedicationRequest.rs")
    assert_missing_scope(check(client, token), "patient/MedicationRequest.r")


def test_a_patient_token_cannot_send_a_batch(client: FlaskClient, issuer: Issuer) -> None:
    resp = client.post("/MedicationRequest/$check", data=b"{}\n",
                       headers={**bearer(issuer.token("portal")),
                                "Content-Type": "application/fhir+ndjson"})
    assert resp.status_code == 403
    assert "batch spans patients" in resp.get_json()["issue"][0]["diagnostics"]


def test_by_id_a_patient_token_reads_nothing_of_another_patient(
        tmp_path: Path, issuer: Issuer, test_keys: SigningPair, sekmet: Sekmet) -> None:
    tag = uuid.uuid4().hex[:8]
    sekmet.put(patient(id=f"other-{tag}"))
    sekmet.put(order(dosage(40), id=f"o-{tag}", status="draft",
                     subject={"reference": f"Patient/other-{tag}"}))
    sekmet.put(patient(id="pat-1"))
    sekmet.put(order(dosage(40), id=f"mine-{tag}", status="draft",
                     subject={"reference": "Patient/pat-1"}))
    app = make_app(tmp_path, issuer, test_keys, FHIR_SERVER_URL=sekmet.base_url,
                   FHIR_SERVER_TOKEN=sekmet.token)
    token = issuer.token("portal")

    searches = OUTBOUND.labels("search")._value.get()
    resp = app.test_client().post(f"/MedicationRequest/o-{tag}/$check", headers=bearer(token))
    assert resp.status_code == 403
    assert f"Patient/other-{tag}" in resp.get_json()["issue"][0]["diagnostics"]
    assert OUTBOUND.labels("search")._value.get() == searches  # no context was read
    mine = app.test_client().post(f"/MedicationRequest/mine-{tag}/$check?persist=true",
                                  headers=bearer(token))
    assert mine.status_code == 200, mine.get_data(as_text=True)


# --- what clients read about it -----------------------------------------------------------------

def test_capability_statement_and_smart_configuration(client: FlaskClient, issuer: Issuer,
                                                      tmp_path: Path,
                                                      test_keys: SigningPair) -> None:
    statement = client.get("/metadata").get_json()
    validate(statement)
    security = statement["rest"][0]["security"]
    assert security["service"][0]["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
        "code": "SMART-on-FHIR"}
    (uris,) = security["extension"]
    assert uris["url"] == \
        "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    assert uris["extension"] == [{"url": "token", "valueUri": f"{issuer.url}/token"}]
    config = client.get("/.well-known/smart-configuration")
    assert config.status_code == 200
    data = config.get_json()
    assert data["token_endpoint"] == f"{issuer.url}/token"
    assert "client_credentials" in data["grant_types_supported"]
    assert {"permission-v1", "permission-v2"} <= set(data["capabilities"])
    tokens = make_app(tmp_path, issuer, test_keys, mode="tokens").test_client()
    assert "service" not in tokens.get("/metadata").get_json()["rest"][0]["security"]
    missing = tokens.get("/.well-known/smart-configuration")
    assert missing.status_code == 404
    assert missing.get_json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("value, message", [
    ("[1]", "OAUTH_ISSUERS must be a JSON object"),
    ('{"https://i.example": "https://i.example/jwks"}', "must be an object"),
    ('{"https://i.example": {"audience": "x"}}', "needs jwks_url or jwks_file"),
    ('{"https://i.example": {"jwks_url": "ftp://x"}}', "jwks_url must be an http"),
    ('{"https://i.example": {"jwks_url": "https://i.example/k", "scopes": 1}}',
     "unknown field"),
])
def test_unusable_issuer_settings_are_refused(tmp_path: Path, value: str,
                                              message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/a.sqlite3", "OAUTH_ISSUERS": value})
    with pytest.raises(ConfigError, match="API_AUTH must be one of"):
        create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/a.sqlite3", "API_AUTH": "jwt"})


def test_a_verified_token_is_remembered_until_it_expires(client: FlaskClient,
                                                         test_keys: SigningPair) -> None:
    token = signed(test_keys)
    assert check(client, token).status_code == 200
    assert check(client, token).status_code == 200  # from the remembered verification
    assert_invalid_token(check(client, token[:-6] + "AAAAAA"))  # another token: verified
    remembered = Verified()
    access = AccessToken(TEST_ISSUER, "s", (), None)
    remembered.put("a.b.c", access, time.time() + 60)
    remembered.put("d.e.f", access, time.time() - 1)
    assert remembered.get("a.b.c") == access
    assert remembered.get("d.e.f") is None


def test_browser_clients_may_read_the_smart_configuration_and_the_challenge(
        tmp_path: Path, issuer: Issuer, test_keys: SigningPair) -> None:
    origin = "https://app.example.org"
    browser = make_app(tmp_path, issuer, test_keys, CORS_ORIGINS=origin).test_client()
    config = browser.get("/.well-known/smart-configuration", headers={"Origin": origin})
    assert config.headers["Access-Control-Allow-Origin"] == origin
    refused = browser.post("/MedicationRequest/$check", json={},
                           headers={"Origin": origin, "Authorization": "Bearer x.y.z"})
    assert refused.status_code == 401
    assert "WWW-Authenticate" in refused.headers["Access-Control-Expose-Headers"]


@pytest.mark.parametrize("mode", ["oauth", "both"])
def test_a_cds_jwt_stays_accepted_read_only(tmp_path: Path, issuer: Issuer,
                                            test_keys: SigningPair, mode: str) -> None:
    cds_issuer = "https://ehr.example.org/cds-client"
    app = make_app(tmp_path, issuer, test_keys, mode=mode, CDS_TRUSTED_ISSUERS=json.dumps(
        {cds_issuer: {"jwks_file": test_keys.jwks_file}}))

    def cds_jwt(path: str) -> str:
        now = int(time.time())
        return jwt.encode({"iss": cds_issuer, "sub": "ehr", "aud": AUDIENCE + path,
                           "iat": now, "exp": now + 120, "jti": uuid.uuid4().hex},
                          test_keys.key, algorithm="RS256", headers={"kid": "test-1"})

    assert check(app.test_client(), cds_jwt("/MedicationRequest/$check")).status_code == 200
    path = "/MedicationRequest/o1/$check"
    resp = app.test_client().post(path + "?persist=true", headers=bearer(cds_jwt(path)))
    assert resp.status_code == 403
    assert "a CDS JWT may not write" in resp.get_json()["issue"][0]["diagnostics"]


def test_oauth_without_an_issuer_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="API_AUTH=oauth needs OAUTH_ISSUERS"):
        create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/a.sqlite3", "API_AUTH": "oauth"})
