"""service/fhirref.py: one reader of literal references (relative, absolute, versioned,
contained, urn) and one writer back."""

from __future__ import annotations

import pytest

from service.fhirref import (
    Reference,
    format_reference,
    local,
    parse_reference,
    relative,
    split_version,
    unversioned,
    versioned,
)


@pytest.mark.parametrize("text,expected", [
    ("Patient/1", Reference("Patient", "1")),
    ("Patient/1/", Reference("Patient", "1")),
    ("Patient/1/_history/2", Reference("Patient", "1", "2")),
    ("https://ehr.example/fhir/Patient/1", Reference("Patient", "1", None,
                                                     "https://ehr.example/fhir")),
    ("https://ehr.example/fhir/Medication/m1/_history/3",
     Reference("Medication", "m1", "3", "https://ehr.example/fhir")),
    ("DetectedIssue/9/_history/1", Reference("DetectedIssue", "9", "1")),
], ids=["relative", "trailing_slash", "versioned", "absolute", "absolute_versioned",
        "server_location"])
def test_a_literal_reference_is_read(text: str, expected: Reference) -> None:
    assert parse_reference(text) == expected
    assert relative(text) == expected.relative


@pytest.mark.parametrize("text", ["urn:uuid:0f1e2d3c-aaaa-4bbb-8ccc-0123456789ab", "#med1",
                                  "", "Patient", "Patient/", "Patient//"])
def test_what_names_no_type_and_id_is_none(text: str) -> None:
    assert parse_reference(text) is None
    assert relative(text) is None


def test_contained_and_urn_references_are_local() -> None:
    assert local("#med1") and local("urn:uuid:abc") and local("urn:oid:1.2.3")
    assert not local("Medication/m1") and not local("https://ehr.example/fhir/Patient/1")


def test_the_version_is_split_at_the_first_history() -> None:
    assert split_version("Patient/1/_history/2") == ("Patient/1", "2")
    assert split_version("Patient/1") == ("Patient/1", "")
    assert unversioned("https://x/Patient/1/_history/2") == "https://x/Patient/1"


def test_references_are_written_back() -> None:
    assert versioned("Patient/1", "2") == "Patient/1/_history/2"
    assert versioned("Patient/1", None) == "Patient/1"
    assert versioned("Patient/1", "") == "Patient/1"
    assert format_reference("Patient", "1", "2", "https://x/fhir") == (
        "https://x/fhir/Patient/1/_history/2")
    for text in ("Patient/1", "Patient/1/_history/2", "https://x/fhir/Patient/1/_history/2"):
        ref = parse_reference(text)
        assert ref is not None and str(ref) == text
