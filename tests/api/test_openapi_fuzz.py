"""schemathesis generates requests from the service's own GET /openapi.json and sends them to
the app in-process: no generated request may produce a 5xx, and every error on a FHIR endpoint
is an OperationOutcome (issue 7, hostile input)."""

from __future__ import annotations

import json
import tempfile
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings

from service import create_app
from tests.support.checks import TOKEN


def _app(tmp: str) -> Any:
    return create_app({
        "API_REQUIRE_AUTH": True,
        "API_TOKENS": TOKEN,
        "CDS_REQUIRE_JWT": False,
        "DATABASE_URL": f"sqlite:///{tmp}/fuzz.sqlite3",
        "TESTING": True,
    })


def _tmpdir() -> str:
    return tempfile.mkdtemp(prefix="baclofen-fuzz-")


@schemathesis.serializer("application/fhir+json")
def _fhir_json(_ctx: Any, value: Any) -> bytes:
    return json.dumps(value).encode()


@schemathesis.serializer("application/fhir+ndjson")
def _ndjson(_ctx: Any, value: Any) -> bytes:
    return (value if isinstance(value, str) else json.dumps(value)).encode()


APP = _app(_tmpdir())
schema = schemathesis.openapi.from_wsgi("/openapi.json", APP)


@schema.parametrize()
@settings(max_examples=40, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_no_generated_request_is_a_server_error(case: Any) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    response = case.call(headers=headers)
    assert response.status_code < 500, (case.method, case.path, response.status_code,
                                        response.text[:500])
    path = case.path
    if response.status_code >= 400 and not path.startswith("/cds-services") and (
            response.status_code != 401 or "cds" not in path):
        body = json.loads(response.text)
        assert body["resourceType"] == "OperationOutcome", body
        assert body["issue"][0]["diagnostics"]
