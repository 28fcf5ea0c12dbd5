"""Real CDS Hooks clients and models against the served service.

- ``@medplum/core`` (Node, tests/cds-client): ``buildCdsRequest`` runs our discovery prefetch
  templates against the real FHIR server (sekmet) the way an EHR does, then ``callCdsService``
  posts the request to the service over HTTP, signed with a JWT.
- ``healthchain`` (its own virtualenv): its pydantic CDS Hooks models validate our discovery
  response and cards (tests/support/healthchain_validate.py, run as a subprocess).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from flask.testing import FlaskClient
from werkzeug.serving import make_server

from service import create_app
from tests.support import builders as b
from tests.support.cdsclient import (
    EXT,
    PRESCRIBE,
    SELECT,
    SIGN,
    VIEW,
    cards,
    hook_call,
    post,
    searchset,
)
from tests.support.checks import CLOCK, CLOCK_TIME
from tests.support.services import Sekmet, free_port

ROOT = Path(__file__).resolve().parents[2]
CLIENT_DIR = ROOT / "tests" / "cds-client"
HEALTHCHAIN_PY = ROOT / ".venv-healthchain" / "bin" / "python"
ISSUER = "https://ehr.example/medplum-test"
KEY = ec.generate_private_key(ec.SECP256R1())


@dataclass
class Served:
    base: str
    server: Any


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, sekmet: Sekmet) -> Iterator[Served]:
    """The service on a loopback port (real HTTP), with JWTs required."""
    tmp = tmp_path_factory.mktemp("served")
    pub = jwt.algorithms.ECAlgorithm.to_jwk(KEY.public_key(), as_dict=True)
    pub.update(kid="k1", alg="ES256", use="sig")
    (tmp / "jwks.json").write_text(json.dumps({"keys": [pub]}))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = create_app({"CDS_REQUIRE_JWT": True, "PUBLIC_BASE_URL": base,
                      "CDS_TRUSTED_ISSUERS": json.dumps({ISSUER: str(tmp / "jwks.json")}),
                      "FHIR_ALLOWLIST": sekmet.base_url,
                      "DATABASE_URL": f"sqlite:///{tmp}/audit.sqlite3", "TESTING": True},
                     clock=CLOCK)
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Served(base, server)
    finally:
        server.shutdown()


def token(audience: str) -> str:
    now = int(time.time())
    return jwt.encode({"iss": ISSUER, "sub": "medplum-test", "aud": audience, "iat": now,
                       "exp": now + 120, "jti": str(uuid.uuid4())}, KEY, algorithm="ES256",
                      headers={"kid": "k1"})


def node() -> list[str]:
    exe = shutil.which("node")
    if exe is None:
        pytest.fail("Node.js is missing: install it with `apt-get install -y nodejs npm`")
    major = int(subprocess.run([exe, "--version"], capture_output=True, text=True,
                               check=True).stdout.strip().lstrip("v").split(".")[0])
    # @medplum/core touches the WebSocket global at import: built in from Node 22, behind a
    # flag on Node 20.
    return [exe] if major >= 22 else [exe, "--experimental-websocket", "--no-warnings"]


def medplum_call(job: dict[str, Any]) -> dict[str, Any]:
    if not (CLIENT_DIR / "node_modules" / "@medplum" / "core").exists():
        pytest.fail("@medplum/core is not installed: run `make tests/cds-client/.installed`")
    proc = subprocess.run([*node(), str(CLIENT_DIR / "call.mjs")], input=json.dumps(job),
                          capture_output=True, text=True, cwd=CLIENT_DIR, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def test_medplum_client_against_the_real_fhir_server(served: Served, sekmet: Sekmet) -> None:
    pid = f"medplum-{uuid.uuid4().hex[:8]}"
    sekmet.put(b.patient("1942-02-02", "female", id=pid))
    sekmet.put({"resourceType": "Observation", "id": f"{pid}-cr", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "2160-0"}]},
                "subject": {"reference": f"Patient/{pid}"},
                "effectiveDateTime": (CLOCK_TIME - timedelta(days=3)).strftime(
                    "%Y-%m-%dT08:00:00Z"),
                "valueQuantity": {"value": 2.6, "unit": "mg/dL",
                                  "system": "http://unitsofmeasure.org", "code": "mg/dL"}})
    sekmet.put({"resourceType": "Observation", "id": f"{pid}-wt", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
                "subject": {"reference": f"Patient/{pid}"},
                "effectiveDateTime": (CLOCK_TIME - timedelta(days=3)).strftime("%Y-%m-%d"),
                "valueQuantity": {"value": 55, "unit": "kg",
                                  "system": "http://unitsofmeasure.org", "code": "kg"}})
    sekmet.put({"resourceType": "MedicationRequest", "id": f"{pid}-oxy", "status": "active",
                "intent": "order", "subject": {"reference": f"Patient/{pid}"},
                "medicationCodeableConcept": {"text": "oxycodone 5 MG Oral Tablet"}})
    order = b.order(b.dosage(30, frequency=3), id=f"{pid}-draft",
                    subject={"reference": f"Patient/{pid}"})
    root, path = sekmet.base_url.rsplit("/", 1)
    result = medplum_call({
        "serviceRoot": served.base + "/",
        "fhirRoot": root + "/", "fhirPath": path, "fhirToken": sekmet.token,
        "serviceId": SIGN, "patientId": pid, "userId": "prac-1",
        "draftOrders": {"resourceType": "Bundle", "type": "collection",
                        "entry": [{"resource": order}]},
        "discoveryToken": token(f"{served.base}/cds-services"),
        "callToken": token(f"{served.base}/cds-services/{SIGN}"),
    })
    request = result["request"]
    assert request["hook"] == "order-sign"
    assert request["prefetch"]["patient"]["id"] == pid
    assert len(request["prefetch"]["creatinine"]["entry"]) == 1
    rules = {c["source"]["topic"]["code"]: c for c in result["response"]["cards"]}
    assert "interaction.opioid" in rules
    assert any(r.startswith(("renal.", "geriatric.")) for r in rules), sorted(rules)
    assert "oral.max-single" in rules
    assert "context.unavailable" not in json.dumps(result["response"])


def test_medplum_client_opens_the_chart(served: Served, sekmet: Sekmet) -> None:
    """patient-view: no orders are sent; the active baclofen order comes from the record the
    client prefetched with our templates. A second chart open within the period shows
    nothing again."""
    pid = f"medplum-pv-{uuid.uuid4().hex[:8]}"
    sekmet.put(b.patient("1980-02-02", "male", id=pid))
    sekmet.put({"resourceType": "MedicationRequest", "id": f"{pid}-oxy", "status": "active",
                "intent": "order", "subject": {"reference": f"Patient/{pid}"},
                "medicationCodeableConcept": {"text": "oxycodone 5 MG Oral Tablet"}})
    sekmet.put(b.order(b.dosage(40, frequency=3), id=f"{pid}-bac", status="active",
                       subject={"reference": f"Patient/{pid}"}))
    root, path = sekmet.base_url.rsplit("/", 1)

    def chart_open() -> dict[str, Any]:
        return medplum_call({
            "serviceRoot": served.base + "/",
            "fhirRoot": root + "/", "fhirPath": path, "fhirToken": sekmet.token,
            "serviceId": VIEW, "patientId": pid, "userId": "prac-1",
            "discoveryToken": token(f"{served.base}/cds-services"),
            "callToken": token(f"{served.base}/cds-services/{VIEW}"),
        })

    result = chart_open()
    assert result["request"]["hook"] == "patient-view"
    assert "draftOrders" not in result["request"]["context"]
    got = result["response"]["cards"]
    assert {c["indicator"] for c in got} <= {"critical", "warning"}
    rules = {c["source"]["topic"]["code"] for c in got}
    assert {"oral.max-daily", "interaction.opioid"} <= rules
    assert all(c["extension"][EXT]["implicated"][0]["reference"] ==
               f"MedicationRequest/{pid}-bac" for c in got)
    assert chart_open()["response"]["cards"] == []


# --- healthchain's models -----------------------------------------------------------------

def healthchain_validate(kind: str, data: Any) -> dict[str, Any]:
    if not HEALTHCHAIN_PY.exists():
        pytest.fail("healthchain is not installed: run `make .venv-healthchain/.installed`")
    script = ROOT / "tests" / "support" / "healthchain_validate.py"
    proc = subprocess.run([str(HEALTHCHAIN_PY), str(script),
                           kind], input=json.dumps(data), capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def test_healthchain_validates_discovery(tmp_path: Path) -> None:
    app = create_app({"CDS_REQUIRE_JWT": False, "TESTING": True,
                      "DATABASE_URL": f"sqlite:///{tmp_path}/audit.sqlite3"})
    discovery = app.test_client().get("/cds-services").get_json()
    result = healthchain_validate("discovery", discovery)
    assert result["services"] == 4


def test_healthchain_validates_cards_and_requests(client: FlaskClient) -> None:
    prn = b.order(b.dosage(10, frequency=None, asNeededBoolean=True), id="prn")
    high = b.order(b.dosage(40, frequency=3), id="high")
    requests_ = [hook_call(prn, high, patient=b.patient()),
                 hook_call(high, service=SELECT, patient=b.patient()),
                 hook_call(high, service=PRESCRIBE, patient=b.patient())]
    responses = []
    for req, service in zip(requests_, (SIGN, SELECT, PRESCRIBE), strict=True):
        got = cards(post(client, req, service))
        assert got
        responses.append({"cards": got})
    result = healthchain_validate("responses", {"requests": requests_[:2],
                                                "responses": responses})
    assert result["cards"] == sum(len(r["cards"]) for r in responses)
    assert all(EXT in c["extension"] for r in responses for c in r["cards"]
               if c["source"]["topic"]["code"] != "not-checked")


def test_healthchain_validates_patient_view_and_epic_cards(tmp_path: Path) -> None:
    epic = create_app({"CDS_REQUIRE_JWT": False, "TESTING": True, "CDS_CLIENT_STYLE": "epic",
                       "DATABASE_URL": f"sqlite:///{tmp_path}/audit.sqlite3"}).test_client()
    active = b.order(b.dosage(40, frequency=3), id="bac", status="active")
    view = hook_call(service=VIEW, patient=b.patient(),
                     prefetch={"medicationRequests": searchset(active)})
    sign = hook_call(b.order(b.dosage(40, frequency=3), id="high"), patient=b.patient())
    responses = [{"cards": cards(post(epic, view, VIEW))},
                 {"cards": cards(post(epic, sign, SIGN))}]
    assert all(r["cards"] for r in responses)
    actions = [a["type"] for c in responses[1]["cards"] for s in c.get("suggestions", [])
               for a in s["actions"]]
    assert "create" in actions and "delete" in actions
    result = healthchain_validate("responses", {"requests": [view, sign],
                                                "responses": responses})
    assert result["cards"] == sum(len(r["cards"]) for r in responses)
