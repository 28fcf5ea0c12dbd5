"""The CapabilityStatement, the OperationDefinition and the OpenAPI description."""

from __future__ import annotations

from ..fhirjson import JSON

OPDEF_ID = "MedicationRequest-check"


def operation_definition(base: str) -> JSON:
    def param(name: str, use: str, mn: int, mx: str, typ: str, doc: str) -> JSON:
        return {"name": name, "use": use, "min": mn, "max": mx, "type": typ,
                "documentation": doc}

    return {
        "resourceType": "OperationDefinition",
        "id": OPDEF_ID,
        "url": f"{base}/OperationDefinition/{OPDEF_ID}",
        "name": "MedicationRequestCheck",
        "title": "Check baclofen orders",
        "status": "active",
        "kind": "operation",
        "code": "check",
        "resource": ["MedicationRequest"],
        "system": False,
        "type": True,
        "instance": True,
        "description": "Checks baclofen MedicationRequests against dose, age, kidney-function, "
                       "titration, withdrawal and interaction rules and returns one "
                       "DetectedIssue per finding.",
        "parameter": [
            param("order", "in", 0, "*", "MedicationRequest",
                  "The orders to check (a stopped order asks to check that stop)."),
            param("patient", "in", 0, "1", "Patient",
                  "The patient; required unless the service can read it from its FHIR server."),
            param("context", "in", 0, "*", "Resource",
                  "Observations, MedicationRequests, MedicationStatements, MedicationDispenses, "
                  "MedicationAdministrations, Conditions, Procedures and Medications."),
            param("checkTime", "in", 0, "1", "dateTime", "The time of the check (default now)."),
            param("profile", "in", 0, "1", "code", "Rule profile: us (default) or uk."),
            param("return", "out", 1, "1", "Bundle",
                  "A collection Bundle: one DetectedIssue per finding, plus an OperationOutcome "
                  "when some checks could not be run or context was skipped."),
        ],
    }


def capability_statement(base: str, version: str, date: str) -> JSON:
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date,
        "publisher": "baclofen-check",
        "kind": "instance",
        "software": {"name": "baclofen-check", "version": version},
        "implementation": {"description": "baclofen-check decision support", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "resource": [{
                "type": "MedicationRequest",
                "operation": [{
                    "name": "check",
                    "definition": f"{base}/OperationDefinition/{OPDEF_ID}",
                }],
            }],
            "operation": [{"name": "check",
                           "definition": f"{base}/OperationDefinition/{OPDEF_ID}"}],
        }],
    }


def openapi(base: str, version: str) -> JSON:
    fhir = {"application/fhir+json": {"schema": {"type": "object"}}}
    outcome = {"description": "OperationOutcome", "content": fhir}
    errors = {str(code): outcome for code in (400, 401, 403, 413, 415, 422)}
    return {
        "openapi": "3.0.3",
        "info": {"title": "baclofen-check", "version": version},
        "servers": [{"url": base}],
        "paths": {
            "/MedicationRequest/$check": {"post": {
                "summary": "Check baclofen orders in a Parameters or Bundle body",
                "requestBody": {"required": True, "content": {
                    "application/fhir+json": {"schema": {"type": "object"}},
                    "application/json": {"schema": {"type": "object"}},
                }},
                "responses": {"200": {"description": "result Bundle", "content": fhir},
                              **errors},
            }},
            "/MedicationRequest/{id}/$check": {"post": {
                "summary": "Check an order that lives on the configured FHIR server",
                "parameters": [
                    {"name": "id", "in": "path", "required": True,
                     "schema": {"type": "string"}},
                    {"name": "persist", "in": "query", "required": False,
                     "schema": {"type": "boolean"}},
                ],
                "responses": {"200": {"description": "result Bundle", "content": fhir},
                              "502": outcome, "504": outcome, **errors},
            }},
            "/metadata": {"get": {"summary": "CapabilityStatement",
                                  "responses": {"200": {"description": "ok", "content": fhir}}}},
            "/OperationDefinition/MedicationRequest-check": {"get": {
                "summary": "OperationDefinition of $check",
                "responses": {"200": {"description": "ok", "content": fhir}}}},
            "/openapi.json": {"get": {
                "summary": "This OpenAPI description",
                "responses": {"200": {"description": "ok", "content": {
                    "application/json": {"schema": {"type": "object"}}}}}}},
            "/cds-services": {"get": {
                "summary": "CDS Hooks discovery",
                "responses": {"200": {"description": "the CDS services"}}}},
            "/cds-services/{service_id}": {"post": {
                "summary": "CDS Hooks call (order-select, order-sign, medication-prescribe)",
                "parameters": [{"name": "service_id", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "responses": {"200": {"description": "cards"},
                              "400": {"description": "bad request"},
                              "401": {"description": "no or bad JWT"}}}},
            "/cds-services/{service_id}/feedback": {"post": {
                "summary": "CDS Hooks feedback on cards",
                "parameters": [{"name": "service_id", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "responses": {"200": {"description": "recorded"}}}},
            "/healthz": {"get": {"summary": "process alive",
                                 "responses": {"200": {"description": "ok"}}}},
            "/readyz": {"get": {"summary": "ready to serve",
                                "responses": {"200": {"description": "ok"},
                                              "503": {"description": "not ready"}}}},
        },
    }
