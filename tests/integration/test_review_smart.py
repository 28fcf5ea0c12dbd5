"""``review --fhir-server`` against a FHIR server that requires SMART Backend Services (sekmet
with ``auth.types: [smart]``): the kick-off, the status polls and the file downloads carry
the SMART access token the service gets with its own keys, and the review finds what the
by-id check finds."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.cli import main
from service.outbound.smart import forget_all
from tests.support.builders import dosage, order, patient
from tests.support.smart import (
    SmartSekmet,
    Switch,
    serve_app,
    settings_for,
)


@pytest.fixture(autouse=True)
def fresh_tokens() -> Iterator[None]:
    forget_all()
    yield
    forget_all()


def test_the_export_is_downloaded_with_a_smart_token(
        smart: SmartSekmet, switch: tuple[Switch, int], keys: dict[str, str],
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_for(smart, tmp_path, keys["rsa"])
    serve_app(switch, settings)          # publishes our keys where sekmet fetches them
    tag = uuid.uuid4().hex[:8]
    pid, oid = f"rs-{tag}", f"rs-o-{tag}"
    smart.put(patient(id=pid, birth_date="1970-05-01"))
    smart.put(order(dosage(40), id=oid, status="active",
                    subject={"reference": f"Patient/{pid}"}))   # 120 mg/day
    monkeypatch.delenv("FHIR_SERVER_TOKEN", raising=False)
    for name, value in settings.items():
        monkeypatch.setenv(name, str(value))
    out = tmp_path / "out"
    assert main(["review", "--fhir-server", smart.base, "--out", str(out), "--jobs", "1"]) == 0
    mine = [json.loads(line) for line in (out / "DetectedIssue.ndjson").read_text().splitlines()
            if f'"Patient/{pid}"' in line]
    rules = {i["identifier"][0]["value"]: i["severity"] for i in mine}
    assert rules.get("oral.max-daily") == "high", rules
    assert all(i["implicated"][0] == {"reference": f"MedicationRequest/{oid}"} for i in mine)
