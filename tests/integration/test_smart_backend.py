"""SMART Backend Services to a FHIR server that requires it: sekmet with ``auth.types: [smart]``.

sekmet's token endpoint verifies our client assertion with the keys it fetches from our
``/.well-known/jwks.json`` (``jwks_url`` registration; it keeps a fetched key set about
5 minutes), and its guard checks the scopes of every call: a transaction POST to the base is
create on ``*``, so the registration grants ``system/*.cruds`` (the service's default scope
is the narrow list of service/config/auth.py). The test data is written with a second
client (``client_secret_basic``), so that no other kind of credential is open on the server.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
import pytest
import requests
from flask import Flask

from service import create_app
from service.config import ConfigError
from service.metrics import OUTBOUND, OUTBOUND_FAILURES
from service.outbound import fhir_server_headers, smart_client
from service.outbound.deadline import Deadline, FetchFailure
from service.outbound.smart import ASSERTION_TYPE, forget_all
from tests.support.builders import by_rule, dosage, order, patient, rule_ids
from tests.support.cdsclient import hook_call
from tests.support.checks import TOKEN
from tests.support.fhir_validate import validate
from tests.support.httpstub import StubServer, stub_server
from tests.support.keypairs import ec_key, rsa_key, write_jwks, write_pem
from tests.support.services import running_serve
from tests.support.smart import (
    AUTH,
    CLIENT,
    SERVED_CLIENT,
    WRITE,
    SmartSekmet,
    Switch,
    serve_app,
    settings_for,
)


@pytest.fixture(autouse=True)
def fresh_tokens() -> Iterator[None]:
    forget_all()  # each test starts with no token cached in this process
    yield
    forget_all()



def load_case(smart: SmartSekmet, dose_mg: float = 40) -> tuple[str, str]:
    tag = uuid.uuid4().hex[:10]
    pid, oid = f"p-{tag}", f"o-{tag}"
    smart.put(patient(id=pid, birth_date="1970-05-01"))
    smart.put(order(dosage(dose_mg), id=oid, status="draft",
                    subject={"reference": f"Patient/{pid}"}))
    return pid, oid


def check(app: Flask, oid: str, persist: bool = False) -> Any:
    url = f"/MedicationRequest/{oid}/$check" + ("?persist=true" if persist else "")
    return app.test_client().post(url, headers=WRITE if persist else AUTH)


def token_requests(app: Flask) -> int:
    client = smart_client(app.config["SETTINGS"])
    assert client is not None
    return client.token_requests


def counter(metric: Any, *labels: str) -> float:
    return float(metric.labels(*labels)._value.get())


# --- the whole flow ---------------------------------------------------------------------------

def test_the_guard_refuses_calls_without_a_smart_token(smart: SmartSekmet) -> None:
    resp = requests.get(f"{smart.base}/Patient", timeout=10)
    assert resp.status_code == 401


def test_discovery_assertion_token_check_and_write_back_through_the_guard(
        smart: SmartSekmet, switch: tuple[Switch, int], keys: dict[str, str],
        tmp_path: Path) -> None:
    app = serve_app(switch, settings_for(smart, tmp_path, keys["rsa"]))
    _pid, oid = load_case(smart)
    resp = check(app, oid, persist=True)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    result = resp.get_json()
    validate(result)
    assert "context.unavailable" not in rule_ids(result)  # every context search was let in
    issue = by_rule(result, "oral.max-daily")
    stored = smart.get(f"DetectedIssue/{issue['id']}")
    assert stored.status_code == 200
    assert stored.json()["implicated"][0] == {"reference": f"MedicationRequest/{oid}"}
    assert token_requests(app) == 1  # discovery, then one token for the reads and the write

    client = smart_client(app.config["SETTINGS"])
    assert client is not None
    assert client.token_url(Deadline(5)) == smart.token_url  # from smart-configuration
    assertion = client.assertion(smart.token_url)
    header = jwt.get_unverified_header(assertion)
    claims = jwt.decode(assertion, options={"verify_signature": False})
    assert header["alg"] == "RS384"
    assert header["kid"] == client.keys[0].kid
    assert header["jku"] == f"http://127.0.0.1:{smart.app_port}/.well-known/jwks.json"
    assert claims["iss"] == claims["sub"] == CLIENT
    assert claims["aud"] == smart.token_url
    assert 0 < claims["exp"] - time.time() <= 300
    assert claims["jti"] != jwt.decode(client.assertion(smart.token_url),
                                       options={"verify_signature": False})["jti"]


def test_es384_keys_sign_too(smart: SmartSekmet, switch: tuple[Switch, int],
                             keys: dict[str, str], tmp_path: Path) -> None:
    smart.start()  # a fresh sekmet: it keeps the key set it fetched for our URL ~5 minutes
    app = serve_app(switch, settings_for(smart, tmp_path, keys["ec"],
                                         SMART_TOKEN_URL=smart.token_url))
    _pid, oid = load_case(smart)
    resp = check(app, oid)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    client = smart_client(app.config["SETTINGS"])
    assert client is not None and client.keys[0].alg == "ES384"
    assert jwt.get_unverified_header(client.assertion(smart.token_url))["alg"] == "ES384"


def test_the_token_is_reused_and_renewed_after_expiry(smart: SmartSekmet,
                                                      switch: tuple[Switch, int],
                                                      keys: dict[str, str],
                                                      tmp_path: Path) -> None:
    smart.start(lifetime=5)  # held for 4 s here (a fifth of its life is the margin)
    try:
        app = serve_app(switch, settings_for(smart, tmp_path, keys["rsa"]))
        _pid, oid = load_case(smart)
        assert check(app, oid).status_code == 200
        assert check(app, oid).status_code == 200
        assert token_requests(app) == 1
        time.sleep(5.2)  # past expires_in: the cached token is not used again
        resp = check(app, oid)
        assert resp.status_code == 200, resp.get_data(as_text=True)
        assert token_requests(app) == 2
    finally:
        smart.start()


def test_a_401_gets_one_new_token_and_one_retry(smart: SmartSekmet,
                                                switch: tuple[Switch, int],
                                                keys: dict[str, str], tmp_path: Path) -> None:
    app = serve_app(switch, settings_for(smart, tmp_path, keys["rsa"]))
    _pid, oid = load_case(smart)
    assert check(app, oid).status_code == 200
    assert token_requests(app) == 1
    smart.wipe()  # a new signing secret: the token this process holds is now refused
    smart.start()
    _pid, oid = load_case(smart)
    calls = counter(OUTBOUND, "read")
    resp = check(app, oid)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert token_requests(app) == 2
    assert counter(OUTBOUND, "read") - calls == 2  # order and patient, the refused one once


def test_a_client_the_server_no_longer_accepts_is_502_naming_the_authorization(
        smart: SmartSekmet, switch: tuple[Switch, int], keys: dict[str, str],
        tmp_path: Path) -> None:
    _pid, oid = load_case(smart)
    smart.start(register=False)
    try:
        app = serve_app(switch, settings_for(smart, tmp_path, keys["rsa"]))
        failures = counter(OUTBOUND_FAILURES, "token", "auth")
        resp = check(app, oid)
        assert resp.status_code == 502
        assert resp.mimetype == "application/fhir+json"
        body = resp.get_json()
        assert body["resourceType"] == "OperationOutcome"
        text = body["issue"][0]["diagnostics"]
        assert f"MedicationRequest/{oid}" in text
        assert f"authorization failed: the token request to {smart.token_url} was refused " \
               "(HTTP 401, invalid_client)" in text
        assert counter(OUTBOUND_FAILURES, "token", "auth") == failures + 1
        metrics = app.test_client().get("/metrics").get_data(as_text=True)
        assert 'baclofen_check_outbound_fhir_failures_total{operation="token",reason="auth"}' \
            in metrics
    finally:
        smart.start()


def test_key_rotation(smart: SmartSekmet, switch: tuple[Switch, int], keys: dict[str, str],
                      tmp_path: Path) -> None:
    smart.start()  # sekmet holds no fetched key set yet
    _pid, oid = load_case(smart)
    # k1 signs, k2 is published beside it before the first token request: sekmet fetches both
    first = serve_app(switch, settings_for(smart, tmp_path, keys["old-first"]))
    published = first.test_client().get("/.well-known/jwks.json").get_json()
    assert [k["kid"] for k in published["keys"]] == ["k1", "k2"]
    assert check(first, oid).status_code == 200
    # then k2 signs: accepted with the key set sekmet already holds
    second = serve_app(switch, settings_for(smart, tmp_path, keys["new-first"]))
    client = smart_client(second.config["SETTINGS"])
    assert client is not None and client.keys[0].kid == "k2"
    resp = check(second, oid)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert token_requests(second) == 1
    # a key published only now is not in the set sekmet keeps for about 5 minutes: refused
    third = serve_app(switch, settings_for(smart, tmp_path, keys["unpublished"]))
    resp = check(third, oid)
    assert resp.status_code == 502
    assert "invalid_client" in resp.get_json()["issue"][0]["diagnostics"]


def test_the_cds_self_fetch_never_gets_our_token(smart: SmartSekmet,
                                                 switch: tuple[Switch, int],
                                                 keys: dict[str, str], tmp_path: Path) -> None:
    app = serve_app(switch, settings_for(smart, tmp_path, keys["rsa"]))
    pid, _oid = load_case(smart)
    draft = order(dosage(40), id="draft-1", status="draft",
                  subject={"reference": f"Patient/{pid}"})
    call = hook_call(draft, patient_id=pid, empty_prefetch=False, fhirServer=smart.base)
    resp = app.test_client().post("/cds-services/baclofen-order-sign", json=call)
    # without fhirAuthorization the self-fetch goes without a token, and sekmet refuses it
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert "context.unavailable" in resp.get_data(as_text=True)
    assert token_requests(app) == 0


# --- one serving process: one token for 50 calls -------------------------------------------------

def test_fifty_calls_on_one_worker_make_exactly_one_token_request(
        smart: SmartSekmet, keys: dict[str, str], tmp_path: Path) -> None:
    _pid, oid = load_case(smart)
    env = {**os.environ, **{k: str(v) for k, v in settings_for(
        smart, tmp_path, keys["rsa"], SMART_CLIENT_ID=SERVED_CLIENT, OUTBOUND_TIMEOUT_S=15,
        PUBLIC_BASE_URL=f"http://127.0.0.1:{smart.served_port}").items() if k != "TESTING"}}
    with running_serve(tmp_path, smart.served_port, env, workers=1, threads=2) as base:
        statuses: list[int] = []
        lock = threading.Lock()

        def run(n: int) -> None:
            for _ in range(n):
                r = requests.post(f"{base}/MedicationRequest/{oid}/$check", headers=AUTH,
                                  timeout=30)
                with lock:
                    statuses.append(r.status_code)

        # the first call alone: while it waits for its token, sekmet fetches our key set
        # from this same worker, and with both its threads waiting for a token nobody would
        # answer that fetch before the deadline (README: "Serving the key set")
        run(1)
        threads = [threading.Thread(target=run, args=(n,)) for n in (24, 25)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert statuses == [200] * 50
        metrics = requests.get(base + "/metrics", timeout=10).text
        rows = [r for r in metrics.splitlines()
                if r.startswith('baclofen_check_outbound_fhir_calls_total{operation="token"}')]
        assert rows and float(rows[0].rsplit(" ", 1)[1]) == 1.0, rows
        assert 'operation="token",reason="auth"' not in metrics
    assert "access_token" not in (tmp_path / "serve.log").read_text()


# --- faults of the token endpoint (a stand-in server) ---------------------------------------------

@pytest.fixture
def stub() -> Iterator[StubServer]:
    with stub_server() as s:
        yield s


def stub_settings(stub: StubServer, tmp_path: Path, keys_path: str,
                  **extra: Any) -> dict[str, Any]:
    return {
        "API_REQUIRE_AUTH": True, "API_TOKENS": TOKEN, "CDS_REQUIRE_JWT": False,
        "DATABASE_URL": f"sqlite:///{tmp_path}/audit.sqlite3",
        "FHIR_SERVER_URL": stub.base + "/fhir", "FHIR_SERVER_AUTH": "smart-backend",
        "SMART_CLIENT_ID": CLIENT, "SMART_PRIVATE_KEYS": keys_path,
        "SMART_TOKEN_URL": stub.base + "/token", "OUTBOUND_TIMEOUT_S": 1, "TESTING": True,
        **extra,
    }


def test_a_slow_token_endpoint_is_504(stub: StubServer, keys: dict[str, str],
                                      tmp_path: Path) -> None:
    def slow(h: BaseHTTPRequestHandler) -> None:
        stub.release.wait(30)

    stub.routes["/token"] = slow
    app = create_app(stub_settings(stub, tmp_path, keys["rsa"]))
    failures = counter(OUTBOUND_FAILURES, "token", "auth")
    resp = check(app, "o1")
    assert resp.status_code == 504
    issue = resp.get_json()["issue"][0]
    assert issue["code"] == "timeout"
    assert "authorization failed: the token request" in issue["diagnostics"]
    assert counter(OUTBOUND_FAILURES, "token", "auth") == failures + 1
    assert not [h for h in stub.hits if h[1].startswith("/fhir")]  # nothing read without it


def test_the_token_request_is_a_form_post_with_the_assertion(stub: StubServer,
                                                             keys: dict[str, str],
                                                             tmp_path: Path) -> None:
    seen: list[bytes] = []

    def token(h: BaseHTTPRequestHandler) -> None:
        seen.append(h.rfile.read(int(h.headers["Content-Length"])))
        body = b'{"access_token":"stub-access-token","token_type":"Bearer","expires_in":300}'
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    stub.routes["/token"] = token
    stub.json("/fhir/MedicationRequest/o1", order(dosage(40), id="o1"))
    stub.json("/fhir/Patient/pat-1", patient())
    app = create_app(stub_settings(stub, tmp_path, keys["rsa"], OUTBOUND_TIMEOUT_S=5))
    check(app, "o1")

    form = {k: v[0] for k, v in parse_qs(seen[0].decode()).items()}
    assert form["grant_type"] == "client_credentials"
    assert form["client_assertion_type"] == ASSERTION_TYPE
    assert form["scope"].split() == app.config["SETTINGS"].smart_scope.split()
    assert "system/DetectedIssue.cru" in form["scope"] and "*" not in form["scope"]
    token_call = next(h for h in stub.hits if h[1] == "/token")
    assert token_call[2]["Content-Type"] == "application/x-www-form-urlencoded"
    reads = [h for h in stub.hits if h[1].startswith("/fhir/")]
    assert reads and all(h[2]["Authorization"] == "Bearer stub-access-token" for h in reads)


@pytest.mark.parametrize("answer, expected", [
    ((302, {"Location": "http://127.0.0.1:9/token"}, b""), "redirect"),
    ((200, {"Content-Type": "application/json"}, b"x" * 300_000), "more than"),
    ((200, {"Content-Type": "application/json"}, b"{not json"), "invalid JSON"),
    ((200, {"Content-Type": "application/json"}, b'{"token_type":"bearer"}'),
     "no usable access_token"),
    ((400, {"Content-Type": "application/json"},
      b'{"error":"invalid_scope","error_description":"secret-ish text"}'),
     "(HTTP 400, invalid_scope)"),
])
def test_a_failing_token_endpoint_is_502(stub: StubServer, keys: dict[str, str],
                                         tmp_path: Path, answer: tuple[int, dict[str, str],
                                                                       bytes],
                                         expected: str) -> None:
    status, headers, body = answer

    def token(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    stub.routes["/token"] = token
    app = create_app(stub_settings(stub, tmp_path, keys["rsa"], OUTBOUND_TIMEOUT_S=5))
    resp = check(app, "o1")
    assert resp.status_code == 502
    text = resp.get_json()["issue"][0]["diagnostics"]
    assert "authorization failed" in text and expected in text
    assert "secret-ish" not in text


def test_a_discovered_token_url_outside_the_allowlist_is_never_called(
        stub: StubServer, keys: dict[str, str], tmp_path: Path) -> None:
    with stub_server() as elsewhere:
        stub.json("/fhir/.well-known/smart-configuration",
                  {"token_endpoint": elsewhere.base + "/token"})
        settings = stub_settings(stub, tmp_path, keys["rsa"], OUTBOUND_TIMEOUT_S=5)
        del settings["SMART_TOKEN_URL"]
        app = create_app(settings)
        resp = check(app, "o1")
        assert resp.status_code == 502
        assert "is not in FHIR_ALLOWLIST" in resp.get_json()["issue"][0]["diagnostics"]
        assert elsewhere.hits == []


def test_headers_for_other_clients(stub: StubServer, keys: dict[str, str],
                                   tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """fhir_server_headers: the function Bulk Data downloads use; the token never in logs."""
    stub.json("/token", {"access_token": "abc.def.ghi", "token_type": "bearer",
                         "expires_in": 3600})
    app = create_app(stub_settings(stub, tmp_path, keys["rsa"], OUTBOUND_TIMEOUT_S=5))
    cfg = app.config["SETTINGS"]
    with caplog.at_level(logging.DEBUG):
        first = fhir_server_headers(cfg, Deadline(5))
        assert first == {"Authorization": "Bearer abc.def.ghi"}
        assert fhir_server_headers(cfg, Deadline(5)) == first
        assert len([h for h in stub.hits if h[1] == "/token"]) == 1
        again = fhir_server_headers(cfg, Deadline(5), refused=first["Authorization"])
        assert again == first
        assert len([h for h in stub.hits if h[1] == "/token"]) == 2
    assert "abc.def.ghi" not in caplog.text
    stub.routes.pop("/token")
    forget_all()
    with pytest.raises(FetchFailure) as failed:
        fhir_server_headers(cfg, Deadline(5))
    assert failed.value.reason == "auth"
    plain = create_app({**stub_settings(stub, tmp_path, keys["rsa"]),
                        "FHIR_SERVER_AUTH": "bearer", "FHIR_SERVER_TOKEN": "static"})
    assert fhir_server_headers(plain.config["SETTINGS"], Deadline(1)) == {
        "Authorization": "Bearer static"}


# --- our key set and the settings -------------------------------------------------------------

def test_the_published_key_set_has_no_private_parts(keys: dict[str, str],
                                                    tmp_path: Path) -> None:
    stub_base = "http://127.0.0.1:9"
    app = create_app({"CDS_REQUIRE_JWT": False, "API_REQUIRE_AUTH": False,
                      "DATABASE_URL": f"sqlite:///{tmp_path}/a.sqlite3",
                      "FHIR_SERVER_URL": stub_base + "/fhir",
                      "FHIR_SERVER_AUTH": "smart-backend", "SMART_CLIENT_ID": CLIENT,
                      "SMART_PRIVATE_KEYS": keys["mixed"]})
    resp = app.test_client().get("/.well-known/jwks.json")
    assert resp.status_code == 200
    published = resp.get_json()["keys"]
    assert [(k["kid"], k["alg"], k["use"], k["kty"]) for k in published] == [
        ("r", "RS384", "sig", "RSA"), ("e", "ES384", "sig", "EC")]
    for k in published:
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(k)
    rsa_only = create_app({"CDS_REQUIRE_JWT": False, "API_REQUIRE_AUTH": False,
                           "DATABASE_URL": f"sqlite:///{tmp_path}/b.sqlite3",
                           "SMART_PRIVATE_KEYS": keys["rsa"]})
    (one,) = rsa_only.test_client().get("/.well-known/jwks.json").get_json()["keys"]
    assert one["alg"] == "RS384" and len(one["kid"]) == 43  # RFC 7638 thumbprint
    none = create_app({"CDS_REQUIRE_JWT": False, "API_REQUIRE_AUTH": False,
                       "DATABASE_URL": f"sqlite:///{tmp_path}/c.sqlite3"})
    assert none.test_client().get("/.well-known/jwks.json").get_json() == {"keys": []}


@pytest.mark.parametrize("settings, message", [
    ({"FHIR_SERVER_AUTH": "smart-backend", "SMART_PRIVATE_KEYS": "x"}, "SMART_CLIENT_ID"),
    ({"FHIR_SERVER_AUTH": "smart"}, "FHIR_SERVER_AUTH must be one of"),
    ({"FHIR_SERVER_AUTH": "bearer"}, "needs FHIR_SERVER_TOKEN"),
    ({"SMART_TOKEN_URL": "ftp://x"}, "SMART_TOKEN_URL must be an http(s) URL"),
])
def test_unusable_settings_are_refused_at_start(tmp_path: Path, settings: dict[str, Any],
                                                message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/a.sqlite3",
                    "FHIR_SERVER_URL": "http://127.0.0.1:9/fhir", "SMART_CLIENT_ID": None,
                    **settings})


@pytest.mark.parametrize("make, message", [
    (lambda d: write_pem(d / "small.pem", rsa_key(1024)), "1024 bits"),
    (lambda d: write_pem(d / "p256.pem", ec_key(__import__(
        "cryptography.hazmat.primitives.asymmetric.ec", fromlist=["SECP256R1"]).SECP256R1())),
     "secp256r1"),
    (lambda d: write_jwks(d / "pub.jwks", [("p", rsa_key())], private=False),
     "no private part"),
    (lambda d: str(d / "missing.pem"), "cannot be read"),
    (lambda d: (d / "junk.pem").write_text("junk") and str(d / "junk.pem"),
     "no PEM private key"),
])
def test_unusable_keys_are_refused_at_start(tmp_path: Path, make: Any, message: str) -> None:
    path = make(tmp_path)
    with pytest.raises(ConfigError, match=message) as refused:
        create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/a.sqlite3",
                    "FHIR_SERVER_URL": "http://127.0.0.1:9/fhir",
                    "FHIR_SERVER_AUTH": "smart-backend", "SMART_CLIENT_ID": CLIENT,
                    "SMART_PRIVATE_KEYS": path})
    assert "SMART_PRIVATE_KEYS" in str(refused.value)
    assert "BEGIN" not in str(refused.value)


def test_the_default_allowlist_takes_smart_token_url_and_a_set_one_must_name_it(
        stub: StubServer, keys: dict[str, str], tmp_path: Path) -> None:
    settings = stub_settings(stub, tmp_path, keys["rsa"])
    assert create_app(settings).config["SETTINGS"].fhir_allowlist == (
        stub.base + "/fhir", stub.base + "/token")
    narrow = create_app({**settings, "FHIR_ALLOWLIST": stub.base + "/fhir"})
    resp = check(narrow, "o1")
    assert resp.status_code == 502
    assert "(SMART_TOKEN_URL) is not in FHIR_ALLOWLIST" in \
        resp.get_json()["issue"][0]["diagnostics"]
    assert not [h for h in stub.hits if h[1] == "/token"]


def test_a_server_refusing_a_fresh_token_too_is_502_counted_as_auth(
        stub: StubServer, keys: dict[str, str], tmp_path: Path) -> None:
    stub.json("/token", {"access_token": "refused-anyway", "token_type": "bearer",
                         "expires_in": 3600})
    stub.json("/fhir/MedicationRequest/o1", {"resourceType": "OperationOutcome"}, status=401)
    app = create_app(stub_settings(stub, tmp_path, keys["rsa"], OUTBOUND_TIMEOUT_S=5))
    failures = counter(OUTBOUND_FAILURES, "read", "auth")
    resp = check(app, "o1")
    assert resp.status_code == 502
    assert "refused a fresh access token (HTTP 401)" in resp.get_json()["issue"][0]["diagnostics"]
    assert token_requests(app) == 2
    assert len([h for h in stub.hits if h[1] == "/fhir/MedicationRequest/o1"]) == 2
    assert counter(OUTBOUND_FAILURES, "read", "auth") == failures + 1
