"""Any CDS Hooks call, however malformed, gets 200 with valid cards or a 4xx with an
OperationOutcome: never a 500 (property-based)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service import create_app
from tests.support import builders as b
from tests.support.cdsclient import PRESCRIBE, SELECT, SIGN, cards, hook_call

PROPS = settings(max_examples=80, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow,
                                        HealthCheck.function_scoped_fixture])

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
# Places where clients put odd things: the order's fields, the context, the prefetch.
PATHS = [
    ("context", "draftOrders", "entry", 0, "resource", "dosageInstruction"),
    ("context", "draftOrders", "entry", 0, "resource", "dosageInstruction", 0, "timing"),
    ("context", "draftOrders", "entry", 0, "resource", "dosageInstruction", 0, "doseAndRate"),
    ("context", "draftOrders", "entry", 0, "resource", "medicationCodeableConcept"),
    ("context", "draftOrders", "entry", 0, "resource", "status"),
    ("context", "draftOrders", "entry", 0, "resource", "subject"),
    ("context", "draftOrders", "entry", 0, "resource", "medicationReference"),
    ("context", "draftOrders", "entry", 0, "resource"),
    ("context", "draftOrders", "entry"),
    ("context", "draftOrders"),
    ("context", "selections"),
    ("context", "patientId"),
    ("context",),
    ("prefetch", "patient"),
    ("prefetch", "patient", "birthDate"),
    ("prefetch", "creatinine"),
    ("prefetch", "medicationRequests"),
    ("prefetch",),
    ("hookInstance",),
    ("fhirServer",),
    ("fhirAuthorization",),
]


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlaskClient]:
    db = tmp_path_factory.mktemp("cdsprops") / "audit.sqlite3"
    app = create_app({"CDS_REQUIRE_JWT": False, "DATABASE_URL": f"sqlite:///{db}",
                      "FHIR_ALLOWLIST": "https://fhir.allowed.example/r4"})
    yield app.test_client()


def _put(body: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    target: Any = body
    for part in path[:-1]:
        try:
            target = target[part]
        except (KeyError, IndexError, TypeError):
            return
    if isinstance(target, dict) or (isinstance(target, list) and isinstance(path[-1], int)
                                    and path[-1] < len(target)):
        target[path[-1]] = value


@PROPS
@given(service=st.sampled_from([SIGN, SELECT, PRESCRIBE]), path=st.sampled_from(PATHS),
       value=JSON_VALUES)
def test_no_call_gets_a_500(http: FlaskClient, service: str, path: tuple[Any, ...],
                            value: Any) -> None:
    body = hook_call(b.order(b.dosage(40, frequency=3)), service=service, patient=b.patient())
    if service == PRESCRIBE:
        path = tuple("medications" if p == "draftOrders" else p for p in path)
    mutated = copy.deepcopy(body)
    _put(mutated, path, value)
    resp = http.post(f"/cds-services/{service}", json=mutated)
    assert resp.status_code in {200, 400, 412}, (resp.status_code, resp.get_data()[:500])
    if resp.status_code == 200:
        cards(resp)  # every DetectedIssue in the cards validates as R4
    else:
        oo = resp.get_json()
        assert oo["resourceType"] == "OperationOutcome" and oo["issue"]
