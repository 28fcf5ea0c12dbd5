"""Validate what the service emits as FHIR R4: the R4B models plus the required value sets
that the models do not check (status, severity, codes)."""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B import get_fhir_model_class

DETECTED_ISSUE_STATUS = {
    "registered", "preliminary", "final", "amended", "corrected", "cancelled",
    "entered-in-error", "unknown",
}
DETECTED_ISSUE_SEVERITY = {"high", "moderate", "low"}
ACT_CODES = {
    "DOSE": "Dosage problem", "DOSEH": "High Dose Alert", "DOSEHINDA": "High Dose for Age Alert",
    "DOSEHINDW": "High Dose for Weight Alert", "DOSEIVL": "Dose-Interval Alert",
    "DOSECOND": "dosage-condition alert", "DUPTHPY": "Duplicate Therapy Alert",
    "DRG": "Drug Interaction Alert", "AGE": "Age Alert", "PREG": "Pregnancy Alert",
    "LACT": "Lactation Alert",
}
ISSUE_SEVERITY = {"fatal", "error", "warning", "information"}
ISSUE_TYPE = {
    "invalid", "structure", "required", "value", "invariant", "security", "login", "unknown",
    "expired", "forbidden", "suppressed", "processing", "not-supported", "duplicate",
    "multiple-matches", "not-found", "deleted", "too-long", "code-invalid", "extension",
    "too-costly", "business-rule", "conflict", "transient", "lock-error", "no-store",
    "exception", "timeout", "incomplete", "throttled", "informational",
}
BUNDLE_TYPES = {"document", "message", "transaction", "transaction-response", "batch",
                "batch-response", "history", "searchset", "collection"}
ACT_CODE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


def validate(resource: dict[str, Any]) -> None:
    """Raise AssertionError/ValidationError unless ``resource`` is valid R4 output."""
    rtype = resource["resourceType"]
    get_fhir_model_class(rtype).model_validate(resource)
    if rtype == "Bundle":
        assert resource["type"] in BUNDLE_TYPES
        for entry in resource.get("entry", []):
            assert entry.get("fullUrl"), "every result entry has a fullUrl"
            validate(entry["resource"])
    elif rtype == "DetectedIssue":
        validate_detected_issue(resource)
    elif rtype == "OperationOutcome":
        for issue in resource["issue"]:
            assert issue["severity"] in ISSUE_SEVERITY, issue
            assert issue["code"] in ISSUE_TYPE, issue


def validate_detected_issue(di: dict[str, Any]) -> None:
    assert di["status"] in DETECTED_ISSUE_STATUS
    assert di["severity"] in DETECTED_ISSUE_SEVERITY
    for coding in di["code"].get("coding", []):
        assert coding["system"] == ACT_CODE_SYSTEM
        assert coding["code"] in ACT_CODES, coding
        assert coding["display"] == ACT_CODES[coding["code"]]
    assert di["code"].get("text")
    assert di["author"]["reference"] == "#checker"
    device = di["contained"][0]
    assert device["resourceType"] == "Device" and device["id"] == "checker"
    assert device["deviceName"][0]["name"] == "baclofen-check"
    assert device["version"][0]["value"]
    systems = [i["system"] for i in di["identifier"]]
    assert systems == ["urn:baclofen-check:rule", "urn:baclofen-check:finding"]
    ts = di["identifiedDateTime"]
    assert ts.endswith("Z") or ts[-6] in "+-", "identifiedDateTime carries a timezone"
    text = di["detail"]
    assert " ug" not in text and "µg" not in text, "people read mg and micrograms, never ug"
    assert ".0 " not in text and not any(f" .{d}" in text for d in "0123456789")
