"""Failing FHIR servers (issue 7): for the CDS self-fetch path and the by-id path, a real local
HTTP server misbehaves on purpose. The service answers within OUTBOUND_TIMEOUT_S plus a small
margin, never sends the token where it must not, and says what could not be checked."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from service import create_app
from tests.support import builders as b
from tests.support.cdsclient import cards, hook_call, post, rules_in, searchset, topic
from tests.support.checks import AUTH, TOKEN
from tests.support.httpstub import StubServer, stub_server
from tests.support.services import free_port

DEADLINE_S = 1.0
MARGIN_S = 3.0       # generous: the bound proves "no hang", not speed
EHR_TOKEN = "ehr-token-xyz"

Behaviour = Callable[[StubServer, StubServer], Callable[[BaseHTTPRequestHandler], None]]


def _status(code: int) -> Behaviour:
    def make(stub: StubServer, other: StubServer) -> Any:
        def h(r: BaseHTTPRequestHandler) -> None:
            body = json.dumps({"resourceType": "OperationOutcome", "issue": [
                {"severity": "error", "code": "exception"}]}).encode()
            r.send_response(code)
            r.send_header("Content-Length", str(len(body)))
            r.end_headers()
            r.wfile.write(body)
        return h
    return make


def _slow(stub: StubServer, other: StubServer) -> Any:
    def h(r: BaseHTTPRequestHandler) -> None:
        stub.release.wait(30)
    return h


def _invalid_json(stub: StubServer, other: StubServer) -> Any:
    def h(r: BaseHTTPRequestHandler) -> None:
        r.send_response(200)
        r.send_header("Content-Length", "12")
        r.end_headers()
        r.wfile.write(b'{"resource":')
    return h


def _huge(stub: StubServer, other: StubServer) -> Any:
    def h(r: BaseHTTPRequestHandler) -> None:
        total = 50 * 1000 * 1000
        r.send_response(200)
        r.send_header("Content-Type", "application/fhir+json")
        r.send_header("Content-Length", str(total))
        r.end_headers()
        chunk = b"a" * 65536
        try:
            r.wfile.write(b'{"resourceType":"Bundle","x":"')
            sent = 0
            while sent < total and not stub.release.is_set():
                r.wfile.write(chunk)
                sent += len(chunk)
        except OSError:
            pass  # the client stopped reading: what we want
    return h


def _redirect(stub: StubServer, other: StubServer) -> Any:
    def h(r: BaseHTTPRequestHandler) -> None:
        r.send_response(302)
        r.send_header("Location", f"{other.base}/fhir{r.path[len('/fhir'):]}")
        r.send_header("Content-Length", "0")
        r.end_headers()
    return h


BEHAVIOURS: dict[str, Behaviour] = {
    "slow": _slow, "http_500": _status(500), "http_401": _status(401),
    "invalid_json": _invalid_json, "body_50mb": _huge, "redirect_other_host": _redirect,
}


@pytest.fixture
def servers() -> Iterator[tuple[StubServer, StubServer]]:
    with stub_server() as stub, stub_server() as other:
        other.json("/fhir/Observation", searchset())   # must never be asked
        yield stub, other
        stub.release.set()


def ehr(stub: StubServer, other: StubServer | None, bad: str | None, bad_path: str) -> None:
    """A patient, an order and empty searches; ``bad_path`` misbehaves."""
    stub.json("/fhir/Patient/pat-1", b.patient())
    stub.json("/fhir/MedicationRequest/o1", b.order(b.dosage(40, frequency=3), id="o1"))
    for rtype in ("Observation", "Condition", "Procedure", "MedicationRequest",
                  "MedicationStatement", "MedicationDispense"):
        stub.json(f"/fhir/{rtype}", searchset())
    if bad is not None and other is not None:
        stub.routes[bad_path] = BEHAVIOURS[bad](stub, other)


def cds_app(tmp_path: Path, allow: str) -> Flask:
    return create_app({"CDS_REQUIRE_JWT": False, "FHIR_ALLOWLIST": allow,
                       "OUTBOUND_TIMEOUT_S": DEADLINE_S, "TESTING": True,
                       "DATABASE_URL": f"sqlite:///{tmp_path}/a.sqlite3"})


def by_id_app(tmp_path: Path, base: str) -> Flask:
    return create_app({"API_REQUIRE_AUTH": True, "API_TOKENS": TOKEN,
                       "CDS_REQUIRE_JWT": False, "FHIR_SERVER_URL": base,
                       "FHIR_SERVER_TOKEN": EHR_TOKEN, "OUTBOUND_TIMEOUT_S": DEADLINE_S,
                       "TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path}/a.sqlite3"})


def unavailable_text(got: list[dict[str, Any]]) -> str:
    for c in got:
        if topic(c) == "low-findings":
            for di in c["extension"]["baclofen-check.detectedIssue"]:
                if di["identifier"][0]["value"] == "context.unavailable":
                    return str(di["detail"])
    return ""


@pytest.mark.parametrize("bad", list(BEHAVIOURS))
def test_cds_self_fetch_with_a_failing_search(tmp_path: Path, servers: Any, bad: str) -> None:
    stub, other = servers
    ehr(stub, other, bad, "/fhir/Observation")
    client = cds_app(tmp_path, f"{stub.base}/fhir").test_client()
    body = hook_call(b.order(b.dosage(40, frequency=3)), empty_prefetch=False)
    body["fhirServer"] = f"{stub.base}/fhir"
    body["fhirAuthorization"] = {"access_token": EHR_TOKEN, "token_type": "Bearer",
                                 "expires_in": 300, "scope": "patient/*.read", "subject": "x"}
    started = time.monotonic()
    got = cards(post(client, body))
    elapsed = time.monotonic() - started
    stub.release.set()
    assert elapsed < DEADLINE_S + MARGIN_S
    assert "oral.max-daily" in rules_in(got)          # the dose was still checked
    assert "results" in unavailable_text(got)         # and the missing results are named
    assert other.hits == []                           # no redirect followed
    assert all(h[2].get("Authorization") == f"Bearer {EHR_TOKEN}" for h in stub.hits)


def test_cds_self_fetch_from_a_server_that_refuses_connections(tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{free_port()}/fhir"
    client = cds_app(tmp_path, base).test_client()
    body = hook_call(b.order(b.dosage(40, frequency=3)), empty_prefetch=False)
    body["fhirServer"] = base
    got = cards(post(client, body))
    assert "oral.max-daily" in rules_in(got)
    assert "patient" in unavailable_text(got)


def test_cds_next_link_loop_terminates(tmp_path: Path, servers: Any) -> None:
    stub, _other = servers
    ehr(stub, None, None, "")
    page = searchset(b.patient(id="ignored") | {"resourceType": "Observation",
                                                 "status": "final", "code": {"text": "x"}})
    page["link"] = [{"relation": "next", "url": f"{stub.base}/fhir/Observation"}]
    stub.json("/fhir/Observation", page)
    client = cds_app(tmp_path, f"{stub.base}/fhir").test_client()
    body = hook_call(b.order(b.dosage(40, frequency=3)), empty_prefetch=False)
    body["fhirServer"] = f"{stub.base}/fhir"
    started = time.monotonic()
    got = cards(post(client, body))
    assert time.monotonic() - started < DEADLINE_S + MARGIN_S
    assert "oral.max-daily" in rules_in(got)


def check_by_id_within_deadline(tmp_path: Path, stub: StubServer, other: StubServer, bad: str,
                                bad_path: str) -> Any:
    """POST /MedicationRequest/o1/$check with ``bad_path`` misbehaving; the answer must come
    within the deadline plus the margin."""
    ehr(stub, other, bad, bad_path)
    client = by_id_app(tmp_path, f"{stub.base}/fhir").test_client()
    started = time.monotonic()
    resp = client.post("/MedicationRequest/o1/$check", headers=AUTH)
    elapsed = time.monotonic() - started
    stub.release.set()
    assert elapsed < DEADLINE_S + MARGIN_S
    return resp


@pytest.mark.parametrize("bad", list(BEHAVIOURS))
def test_by_id_with_a_failing_order_read(tmp_path: Path, servers: Any, bad: str) -> None:
    stub, other = servers
    resp = check_by_id_within_deadline(tmp_path, stub, other, bad, "/fhir/MedicationRequest/o1")
    assert resp.status_code == (504 if bad == "slow" else 502), resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["resourceType"] == "OperationOutcome"
    assert "MedicationRequest/o1" in body["issue"][0]["diagnostics"]
    assert EHR_TOKEN not in resp.get_data(as_text=True)
    assert other.hits == []


@pytest.mark.parametrize("bad", list(BEHAVIOURS))
def test_by_id_with_a_failing_context_search(tmp_path: Path, servers: Any, bad: str) -> None:
    stub, other = servers
    resp = check_by_id_within_deadline(tmp_path, stub, other, bad, "/fhir/Observation")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    result = resp.get_json()
    ids = b.rule_ids(result)
    assert "oral.max-daily" in ids and "context.unavailable" in ids
    assert "results" in b.by_rule(result, "context.unavailable")["detail"]
    assert other.hits == []
