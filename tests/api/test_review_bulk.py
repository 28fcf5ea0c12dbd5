"""The Bulk Data client of ``review --fhir-server`` against a small server on loopback that
answers the way other servers do: ``_typeFilter`` refused, ``202`` with ``Retry-After`` and
``X-Progress`` before the manifest, error files, a file URL elsewhere."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from service.cli import main
from service.config import load_settings
from service.knowledge import load
from service.population.bulk import BulkClient, BulkError
from tests.support.httpstub import StubServer, stub_server

TOKEN = "bulk-token"


@pytest.fixture
def stub() -> Iterator[StubServer]:
    with stub_server() as s:
        yield s


def _serve(stub: StubServer, manifest: dict[str, object]) -> None:
    base = stub.base + "/fhir"
    polls = {"n": 0}

    def kick_off(h: BaseHTTPRequestHandler) -> None:
        if "_typeFilter" in h.path:
            body = json.dumps({"resourceType": "OperationOutcome", "issue": [{
                "severity": "error", "code": "not-supported",
                "diagnostics": "_typeFilter is not supported"}]}).encode()
            h.send_response(400)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
            return
        h.send_response(202)
        h.send_header("Content-Location", f"{base}/status/1")
        h.send_header("Content-Length", "0")
        h.end_headers()

    def status(h: BaseHTTPRequestHandler) -> None:
        polls["n"] += 1
        if polls["n"] <= 2:
            h.send_response(202)
            h.send_header("Retry-After", "2")
            h.send_header("X-Progress", f"{polls['n'] * 40}% done")
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        body = json.dumps(manifest).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def ndjson(lines: list[dict[str, object]]) -> object:
        data = "".join(json.dumps(x) + "\n" for x in lines).encode()

        def handler(h: BaseHTTPRequestHandler) -> None:
            h.send_response(200)
            h.send_header("Content-Type", "application/fhir+ndjson")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
        return handler

    stub.routes["/fhir/$export"] = kick_off
    stub.routes["/fhir/status/1"] = status
    stub.routes["/fhir/files/p.ndjson"] = ndjson(  # type: ignore[assignment]
        [{"resourceType": "Patient", "id": "a"}])
    stub.routes["/fhir/files/err.ndjson"] = ndjson(  # type: ignore[assignment]
        [{"resourceType": "OperationOutcome", "issue": []}])


def _client(stub: StubServer, sleeps: list[float]) -> BulkClient:
    settings = load_settings({"FHIR_SERVER_URL": stub.base + "/fhir",
                              "FHIR_SERVER_TOKEN": TOKEN})
    return BulkClient(stub.base + "/fhir", settings, sleep=sleeps.append)


def test_export_kicked_off_polled_and_downloaded(stub: StubServer, tmp_path: Path) -> None:
    base = stub.base + "/fhir"
    _serve(stub, {"transactionTime": "2026-11-25T10:00:00Z", "requiresAccessToken": True,
                  "output": [{"type": "Patient", "url": f"{base}/files/p.ndjson"}],
                  "error": [{"type": "OperationOutcome", "url": f"{base}/files/err.ndjson"}]})
    sleeps: list[float] = []
    client = _client(stub, sleeps)
    seen: list[tuple[str, int, int]] = []
    status = client.kick_off(None, "2026-11-01T00:00:00Z", load())
    manifest = client.wait(status, lambda stage, done, total: seen.append((stage, done, total)))
    errors = client.download(manifest, tmp_path / "export", None)
    kick = [path for method, path, _h in stub.hits if path.startswith("/fhir/$export")]
    assert len(kick) == 2 and "_typeFilter" in kick[0] and "_typeFilter" not in kick[1]
    assert "_since=2026-11-01T00%3A00%3A00Z" in kick[1]
    assert "_type=Patient,MedicationRequest" in kick[1]
    assert sleeps == [2.0, 2.0]                    # Retry-After honoured
    assert seen == [("export 40% done", 40, 100), ("export 80% done", 80, 100)]
    assert errors == 1
    assert (tmp_path / "export" / "Patient_0000.ndjson").read_text().startswith(
        '{"resourceType": "Patient"')
    assert (tmp_path / "export" / "errors" / "OperationOutcome_0001.ndjson").exists()
    assert json.loads((tmp_path / "export" / "manifest.json").read_text())["output"]
    for method, path, headers in stub.hits:
        if method == "GET":
            assert headers.get("Authorization") == f"Bearer {TOKEN}", path
    assert all(h.get("Prefer", "").startswith("respond-async") for m, p, h in stub.hits
               if p.startswith("/fhir/$export"))


def test_a_file_url_outside_the_allow_list_is_never_fetched(stub: StubServer,
                                                           tmp_path: Path) -> None:
    _serve(stub, {"output": [{"type": "Patient", "url": "http://127.0.0.1:9/elsewhere.ndjson"}],
                  "error": []})
    client = _client(stub, [])
    manifest = client.wait(client.kick_off(None, None, load()), None)
    with pytest.raises(BulkError, match="not under FHIR_ALLOWLIST"):
        client.download(manifest, tmp_path / "export", None)


def test_a_failed_kick_off_names_the_server_s_reason(stub: StubServer) -> None:
    stub.json("/fhir/Group/nope/$export", {"resourceType": "OperationOutcome", "issue": [{
        "severity": "error", "code": "not-found", "diagnostics": "Group/nope not found"}]},
        status=404)
    with pytest.raises(BulkError, match="answered HTTP 404: Group/nope not found"):
        _client(stub, []).kick_off("nope", None, load())


def test_fhir_server_named_on_the_command_line_only(tmp_path, monkeypatch, capsys) -> None:
    """review --fhir-server with no FHIR_SERVER_URL in the environment: the server named is
    this run's server (its failure is said as such, not a configuration error)."""

    monkeypatch.delenv("FHIR_SERVER_URL", raising=False)
    code = main(["review", "--fhir-server", "http://127.0.0.1:9/fhir",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code != 0
    assert "http://127.0.0.1:9/fhir/$export could not be reached" in err
    assert "unknown setting" not in err
