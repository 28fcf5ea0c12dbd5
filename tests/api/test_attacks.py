"""Attacks that cross components (issue 7): a JWT replayed against a second replica sharing
the database (SQLite and PostgreSQL), header injection, credentials on the FHIR endpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from service import create_app
from service.store import get_store
from tests.support.builders import order, parameters
from tests.support.cdsjwt import BASE, DISCOVERY, EC_KEY, ISS_FILE, call, jwk, token
from tests.support.checks import AUTH
from tests.support.services import Postgres


def replica(db_url: str, jwks_file: Path) -> Flask:
    return create_app({
        "CDS_REQUIRE_JWT": True,
        "CDS_TRUSTED_ISSUERS": json.dumps({ISS_FILE: str(jwks_file)}),
        "PUBLIC_BASE_URL": BASE,
        "DATABASE_URL": db_url,
        "TESTING": True,
    })


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_jti_replayed_on_another_replica_is_refused(tmp_path: Path, postgres: Postgres,
                                                      backend: str) -> None:
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [jwk(EC_KEY, "ec-1", "ES256")]}))
    db_url = (f"sqlite:///{tmp_path}/shared.sqlite3" if backend == "sqlite"
              else postgres.new_database())
    first, second = replica(db_url, jwks_file), replica(db_url, jwks_file)
    try:
        tok = token(DISCOVERY)
        assert call(first.test_client(), DISCOVERY, tok).status_code == 200
        replayed = call(second.test_client(), DISCOVERY, tok)
        assert replayed.status_code == 401
        assert replayed.get_data() == b""          # a bare 401
    finally:
        get_store(first).close()
        get_store(second).close()


@pytest.mark.parametrize("value", ["abc\r\nSet-Cookie: stolen=1", "a" * 500, "x y", "<script>"])
def test_request_id_header_is_not_reflected_unless_safe(client: Any, value: str) -> None:
    try:
        resp = client.get("/healthz", headers={"X-Request-ID": value})
    except ValueError:
        return  # the HTTP layer itself refuses a header with a line break
    assert resp.status_code == 200
    assert resp.headers["X-Request-ID"] != value
    assert "Set-Cookie" not in resp.headers


@pytest.mark.parametrize("profile", ["us\r\nX-Evil: 1", "uk%0d%0aX-Evil:1", "../../etc"])
def test_query_values_cannot_inject_headers(client: Any, profile: str) -> None:
    resp = client.post("/MedicationRequest/$check", query_string={"profile": profile},
                       json=parameters(order()), headers={
                           "Content-Type": "application/fhir+json", **AUTH})
    assert resp.status_code == 400
    assert "X-Evil" not in resp.headers
    assert resp.get_json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("path,method", [
    ("/MedicationRequest/$check", "post"), ("/MedicationRequest/o1/$check", "post"),
    ("/report", "get"),
])
@pytest.mark.parametrize("auth", [None, "Bearer wrong", "Basic dGVzdDp0ZXN0", "Bearer ",
                                  "bearer"], ids=["none", "wrong", "basic", "empty", "scheme"])
def test_fhir_endpoints_refuse_calls_without_credentials(client: Any, path: str, method: str,
                                                         auth: str | None) -> None:
    headers = {"Content-Type": "application/fhir+json"}
    if auth is not None:
        headers["Authorization"] = auth
    resp = getattr(client, method)(path, headers=headers,
                                   **({"json": parameters(order())} if method == "post" else {}))
    assert resp.status_code == 401
    assert resp.get_json()["resourceType"] == "OperationOutcome"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
