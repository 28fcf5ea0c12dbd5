from __future__ import annotations

from tests.support.builders import by_rule, dosage, order, parameters, rule_ids
from tests.support.checks import post_check
from tests.support.fhir_validate import validate


def test_overdose_order_gets_high_max_daily_through_http(client):
    body = parameters(order(dosage(30, "mg", 4)))
    resp = post_check(client, body)
    assert resp.status_code == 200
    assert resp.mimetype == "application/fhir+json"
    result = resp.get_json()
    validate(result)
    assert rule_ids(result) == ["oral.max-daily", "oral.max-single", "oral.start-dose"]
    di = by_rule(result, "oral.max-daily")
    assert di["severity"] == "high"
    assert "120 mg/day" in di["detail"] and "80 mg/day" in di["detail"]
    assert di["implicated"][0]["reference"] == "MedicationRequest/ord-1"
    assert di["patient"]["reference"] == "Patient/pat-1"


def test_no_credentials_is_401_operation_outcome(client):
    resp = client.post("/MedicationRequest/$check", json=parameters(order()),
                       headers={"Content-Type": "application/fhir+json"})
    assert resp.status_code == 401
    body = resp.get_json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == "login"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
