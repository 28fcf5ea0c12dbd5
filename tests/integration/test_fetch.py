"""The outbound FHIR client against the real sekmet server and small misbehaving servers."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from service import metrics
from service.fhir_input.fetch import MAX_PAGES, FhirClient
from service.outbound.allowlist import allowed
from service.outbound.deadline import Deadline, FetchFailure
from service.outbound.pool import fetch_all
from tests.support.httpstub import StubServer, stub_server
from tests.support.services import Sekmet, free_port


@pytest.mark.parametrize(("url", "expected"), [
    ("https://ehr.example/fhir/Patient/1", True),
    ("https://EHR.example:443/fhir/Patient/1", True),
    ("https://ehr.example/fhir", True),
    ("https://ehr.example/fhir/", True),
    ("https://ehr.example/fhirx/Patient/1", False),
    ("https://ehr.example/other/Patient/1", False),
    ("https://ehr.example/fhir/../admin", False),
    ("https://ehr.example/fhir/%2e%2e/admin", False),
    ("https://ehr.example:8443/fhir/Patient/1", False),
    ("http://ehr.example/fhir/Patient/1", False),
    ("https://ehr.example.evil/fhir/Patient/1", False),
    ("https://user:pw@ehr.example/fhir/Patient/1", False),
    ("ftp://ehr.example/fhir/Patient/1", False),
    ("not a url", False),
], ids=lambda v: str(v))
def test_allowlist_normalisation(url: str, expected: bool) -> None:
    assert allowed(url, ["https://ehr.example/fhir/"]) is expected


def _client(base: str, allow: list[str] | None = None, max_bytes: int = 100_000,
            token: str | None = "secret-token") -> FhirClient:
    return FhirClient(base, token, allow or [base], max_bytes)


def test_read_and_search_against_sekmet(sekmet: Sekmet) -> None:
    sekmet.put({"resourceType": "Patient", "id": "fetch-p1", "gender": "female",
                "birthDate": "1970-02-03"})
    for n in range(3):
        sekmet.put({"resourceType": "Condition", "id": f"fetch-c{n}",
                    "subject": {"reference": "Patient/fetch-p1"},
                    "code": {"text": f"condition {n}"}})
    client = FhirClient(sekmet.base_url, sekmet.token, [sekmet.base_url], 1_000_000)
    deadline = Deadline(10)
    patient = client.read("Patient/fetch-p1", deadline)
    assert (patient["id"], patient["birthDate"]) == ("fetch-p1", "1970-02-03")
    found = client.search("Condition?patient=Patient/fetch-p1&_count=1", deadline)
    assert sorted(r["id"] for r in found) == ["fetch-c0", "fetch-c1", "fetch-c2"]  # 3 pages


def test_sekmet_refuses_a_client_without_token(sekmet: Sekmet) -> None:
    client = FhirClient(sekmet.base_url, None, [sekmet.base_url], 1_000_000)
    with pytest.raises(FetchFailure) as err:
        client.read("Patient/fetch-p1", Deadline(10))
    assert (err.value.reason, err.value.status) == ("http-status", 401)


def _header(stub: StubServer, n: int, name: str) -> str | None:
    return {k.lower(): v for k, v in stub.hits[n][2].items()}.get(name.lower())


def test_token_is_sent_only_when_given_and_allowed() -> None:
    with stub_server() as stub:
        stub.json("/fhir/Patient/1", {"resourceType": "Patient", "id": "1"})
        _client(stub.base + "/fhir").read("Patient/1", Deadline(5))
        _client(stub.base + "/fhir", token=None).read("Patient/1", Deadline(5))
        assert _header(stub, 0, "Authorization") == "Bearer secret-token"
        assert _header(stub, 1, "Authorization") is None


def test_a_url_not_allow_listed_is_never_contacted() -> None:
    with stub_server() as outside:
        outside.json("/fhir/Patient/1", {"resourceType": "Patient", "id": "1"})
        client = _client("https://ehr.example/fhir", allow=["https://ehr.example/fhir"])
        before = metrics.OUTBOUND_FAILURES.labels("read", "not-allowed")._value.get()
        with pytest.raises(FetchFailure) as err:
            client.read(outside.base + "/fhir/Patient/1", Deadline(5))
        assert err.value.reason == "not-allowed"
        assert outside.hits == []
        after = metrics.OUTBOUND_FAILURES.labels("read", "not-allowed")._value.get()
        assert after == before + 1


def _slow(stub: StubServer) -> Any:
    def handler(h: BaseHTTPRequestHandler) -> None:
        stub.release.wait(30)  # answers only when the test lets it go
        h.send_response(200)
        h.send_header("Content-Length", "2")
        h.end_headers()
        h.wfile.write(b"{}")

    return handler


def _redirect(h: BaseHTTPRequestHandler) -> None:
    h.send_response(302)
    h.send_header("Location", "/fhir/Patient/elsewhere")
    h.send_header("Content-Length", "0")
    h.end_headers()


@pytest.mark.parametrize(("path", "reason", "status"), [
    ("/fhir/Patient/err", "http-status", 500),
    ("/fhir/Patient/missing", "http-status", 404),
    ("/fhir/Patient/redirect", "redirect", 302),
    ("/fhir/Patient/nan", "invalid-json", None),
    ("/fhir/Patient/notfhir", "invalid-json", None),
    ("/fhir/Patient/big", "too-large", None),
    ("/fhir/Patient/slow", "timeout", None),
], ids=["500", "404", "redirect", "nan-json", "not-fhir", "too-large", "slow"])
def test_misbehaving_server_gives_a_typed_failure(path: str, reason: str,
                                                  status: int | None) -> None:
    with stub_server() as stub:
        stub.json("/fhir/Patient/err", None, status=500, raw=b'{"resourceType":"x"}')
        stub.routes["/fhir/Patient/redirect"] = _redirect
        stub.json("/fhir/Patient/nan", None, raw=b'{"resourceType":"Patient","x":NaN}')
        stub.json("/fhir/Patient/notfhir", [1, 2])
        stub.json("/fhir/Patient/big", None,
                  raw=b'{"resourceType":"Patient","text":"' + b"a" * 200_000 + b'"}')
        stub.routes["/fhir/Patient/slow"] = _slow(stub)
        stub.json("/fhir/Patient/elsewhere", {"resourceType": "Patient"})
        client = _client(stub.base + "/fhir")
        deadline = Deadline(0.5 if reason == "timeout" else 5)
        with pytest.raises(FetchFailure) as err:
            client.read(path.removeprefix("/fhir/"), deadline)
        assert (err.value.reason, err.value.status) == (reason, status)
        assert "secret-token" not in str(err.value)
        assert [h[1] for h in stub.hits] == [path]  # one call, no redirect followed


def test_search_follows_next_only_under_the_base_and_stops_on_a_loop() -> None:
    with stub_server() as stub, stub_server() as other:
        base = stub.base + "/fhir"

        def page(ids: list[str], nxt: str | None) -> dict[str, Any]:
            bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "entry": [
                {"resource": {"resourceType": "Condition", "id": i}, "search": {"mode": "match"}}
                for i in ids]}
            bundle["entry"].append({"resource": {"resourceType": "OperationOutcome"},
                                    "search": {"mode": "outcome"}})
            if nxt:
                bundle["link"] = [{"relation": "next", "url": nxt}]
            return bundle

        stub.json("/fhir/Condition", page(["a"], base + "/p2"))
        stub.json("/fhir/p2", page(["b"], base + "/p3"))
        stub.json("/fhir/p3", page(["c"], base + "/p2"))  # a loop back to p2
        stub.json("/fhir/Observation", page(["o1"], other.base + "/fhir/p9"))
        other.json("/fhir/p9", page(["stolen"], None))
        client = FhirClient(base, "secret-token", [base, other.base + "/fhir"], 100_000)
        found = client.search("Condition?patient=Patient/1", Deadline(5))
        assert [r["id"] for r in found] == ["a", "b", "c"]
        with pytest.raises(FetchFailure) as err:
            client.search("Observation?patient=Patient/1", Deadline(5))
        assert err.value.reason == "not-allowed"
        assert other.hits == []


def test_fetch_all_runs_in_parallel_and_reports_each_call() -> None:
    with stub_server() as stub:
        stub.json("/fhir/Patient/1", {"resourceType": "Patient", "id": "1"})
        stub.json("/fhir/Patient/err", None, status=503, raw=b"{}")
        stub.routes["/fhir/Patient/slow"] = _slow(stub)
        client = _client(stub.base + "/fhir")
        deadline = Deadline(2)
        results = fetch_all({
            "patient": lambda: client.read("Patient/1", deadline),
            "broken": lambda: client.read("Patient/err", deadline),
            "slow": lambda: client.read("Patient/slow", deadline),
            "bug": lambda: 1 / 0,
        }, deadline)
        assert list(results) == ["patient", "broken", "slow", "bug"]
        assert results["patient"]["id"] == "1"
        failures = {k: (v.reason, v.status) for k, v in results.items()
                    if isinstance(v, FetchFailure)}
        assert failures == {"broken": ("http-status", 503), "slow": ("timeout", None),
                            "bug": ("error", None)}


def test_an_expired_deadline_contacts_nobody() -> None:
    with stub_server() as stub:
        stub.json("/fhir/Patient/1", {"resourceType": "Patient", "id": "1"})
        deadline = Deadline(0)
        with pytest.raises(FetchFailure) as err:
            _client(stub.base + "/fhir").read("Patient/1", deadline)
        assert err.value.reason == "timeout"
        assert stub.hits == []


def test_refused_connection() -> None:
    base = f"http://127.0.0.1:{free_port()}/fhir"
    with pytest.raises(FetchFailure) as err:
        _client(base).read("Patient/1", Deadline(5))
    assert err.value.reason == "refused"


def test_a_search_without_end_fails_instead_of_answering_part() -> None:
    with stub_server() as stub:
        def endless(h: BaseHTTPRequestHandler) -> None:
            n = int(h.path.rsplit("=", 1)[1]) if "=" in h.path else 0
            data = json.dumps({"resourceType": "Bundle", "type": "searchset", "link": [
                {"relation": "next", "url": f"{stub.base}/fhir/Endless?page={n + 1}"}]}).encode()
            h.send_response(200)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)

        stub.routes["/fhir/Endless"] = endless
        with pytest.raises(FetchFailure) as err:
            _client(stub.base + "/fhir").search("Endless", Deadline(30))
        assert err.value.reason == "too-large"
        assert len(stub.hits) == MAX_PAGES


@pytest.mark.parametrize(("severity", "fails"), [("error", True), ("fatal", True),
                                                 ("warning", False), ("information", False)])
def test_a_search_whose_outcome_reports_an_error_fails(severity: str, fails: bool) -> None:
    with stub_server() as stub:
        base = stub.base + "/fhir"
        stub.json("/fhir/Observation", {"resourceType": "Bundle", "type": "searchset", "entry": [
            {"resource": {"resourceType": "Observation", "id": "o1"},
             "search": {"mode": "match"}},
            {"resource": {"resourceType": "OperationOutcome", "issue": [
                {"severity": severity, "code": "processing", "diagnostics": "partial"}]},
             "search": {"mode": "outcome"}}]})
        client = FhirClient(base, None, [base], 100_000)
        if fails:
            with pytest.raises(FetchFailure):
                client.search("Observation?patient=Patient/1", Deadline(5))
        else:
            assert [r["id"] for r in client.search("Observation?patient=1", Deadline(5))] == [
                "o1"]
