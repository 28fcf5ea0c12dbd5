"""The CapabilityStatement, the OperationDefinition and the OpenAPI description."""

from __future__ import annotations

from ..config import Settings
from ..fhirjson import JSON
from .wellknown import oauth_token_url

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


SECURITY_SERVICE = "http://terminology.hl7.org/CodeSystem/restful-security-service"
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"


def security(settings: Settings) -> JSON | None:
    """``rest.security``: SMART-on-FHIR when OAuth access tokens are accepted (with the
    token endpoint of the configured issuer, when one has a ``token_url``)."""
    if not settings.api_require_auth:
        return None
    cors = bool(settings.cors_origins)
    if settings.api_auth == "tokens":
        return {"cors": cors, "description": "Authorization: Bearer with a token issued by "
                "the operator of this service (API_TOKENS)."}
    described = ("OAuth 2.0 access tokens (SMART App Launch 2.x scopes, v1 and v2): "
                 "MedicationRequest read to check, DetectedIssue create and update for "
                 "persist=true, DetectedIssue read for the report; patient/ scopes for the "
                 "token's patient only.")
    if settings.api_auth == "both":
        described += " Operator-issued bearer tokens are accepted too."
    found: JSON = {"cors": cors, "service": [{"coding": [{
        "system": SECURITY_SERVICE, "code": "SMART-on-FHIR"}], "text": "SMART-on-FHIR"}],
        "description": described}
    token_url = oauth_token_url(settings)
    if token_url:
        found["extension"] = [{"url": OAUTH_URIS, "extension": [
            {"url": "token", "valueUri": token_url}]}]
    return found


def capability_statement(base: str, version: str, date: str,
                         settings: Settings | None = None) -> JSON:
    statement = _capability_statement(base, version, date)
    guard = security(settings) if settings is not None else None
    if guard is not None:
        statement["rest"][0]["security"] = guard
    return statement


def _capability_statement(base: str, version: str, date: str) -> JSON:
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


_RESOURCE = {"type": "object", "required": ["resourceType"],
             "properties": {"resourceType": {"type": "string"}, "id": {"type": "string"}}}
_PARAMETERS = {
    "type": "object", "required": ["resourceType", "parameter"],
    "properties": {
        "resourceType": {"type": "string", "enum": ["Parameters"]},
        "parameter": {"type": "array", "items": {
            "type": "object", "required": ["name"],
            "properties": {
                "name": {"type": "string",
                         "enum": ["order", "patient", "context", "checkTime", "profile"]},
                "resource": _RESOURCE,
                "valueDateTime": {"type": "string"},
                "valueCode": {"type": "string"},
            },
        }},
    },
}
_BUNDLE = {
    "type": "object", "required": ["resourceType"],
    "properties": {
        "resourceType": {"type": "string", "enum": ["Bundle"]},
        "type": {"type": "string"},
        "entry": {"type": "array", "items": {
            "type": "object",
            "properties": {"fullUrl": {"type": "string"}, "resource": _RESOURCE},
        }},
    },
}
_CDS_REQUEST = {
    "type": "object", "required": ["hook", "hookInstance", "context"],
    "properties": {
        "hook": {"type": "string"},
        "hookInstance": {"type": "string"},
        "fhirServer": {"type": "string"},
        "fhirAuthorization": {"type": "object"},
        "context": {"type": "object", "properties": {
            "userId": {"type": "string"},
            "patientId": {"type": "string"},
            "draftOrders": _BUNDLE,
            "selections": {"type": "array", "items": {"type": "string"}},
        }},
        "prefetch": {"type": "object", "additionalProperties": True},
    },
}
_FEEDBACK = {
    "type": "object", "required": ["feedback"],
    "properties": {"feedback": {"type": "array", "items": {
        "type": "object", "required": ["card", "outcome", "outcomeTimestamp"],
        "properties": {
            "card": {"type": "string"},
            "outcome": {"type": "string", "enum": ["accepted", "overridden"]},
            "outcomeTimestamp": {"type": "string"},
            "acceptedSuggestions": {"type": "array", "items": {
                "type": "object", "properties": {"id": {"type": "string"}}}},
            "overrideReason": {"type": "object"},
        },
    }}},
}


def openapi(base: str, version: str) -> JSON:
    """Every endpoint the service serves (schemathesis fuzzes the service against this)."""
    fhir = {"application/fhir+json": {"schema": {"type": "object"}}}
    outcome = {"description": "OperationOutcome", "content": fhir}
    errors = {str(code): outcome for code in (400, 401, 403, 413, 415, 422)}
    plain = {"application/json": {"schema": {"type": "object"}}}
    service_id = {"name": "service_id", "in": "path", "required": True,
                  "schema": {"type": "string"}}

    def get(summary: str, content: JSON | None = None) -> JSON:
        return {"get": {"summary": summary, "responses": {
            "200": {"description": "ok", **({"content": content} if content else {})}}}}

    return {
        "openapi": "3.0.3",
        "info": {"title": "baclofen-check", "version": version},
        "servers": [{"url": base}],
        "paths": {
            "/MedicationRequest/$check": {"post": {
                "summary": "Check baclofen orders in a Parameters or Bundle body (or NDJSON)",
                "requestBody": {"required": True, "content": {
                    "application/fhir+json": {"schema": {"oneOf": [_PARAMETERS, _BUNDLE]}},
                    "application/json": {"schema": {"oneOf": [_PARAMETERS, _BUNDLE]}},
                    "application/fhir+ndjson": {"schema": {"type": "string"}},
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
            "/metadata": get("CapabilityStatement", fhir),
            "/OperationDefinition/MedicationRequest-check": get(
                "OperationDefinition of $check", fhir),
            "/openapi.json": get("This OpenAPI description", plain),
            "/cds-services": get("CDS Hooks discovery", plain),
            "/cds-services/{service_id}": {"post": {
                "summary": "CDS Hooks service call",
                "parameters": [service_id],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": _CDS_REQUEST}}},
                "responses": {"200": {"description": "cards", "content": plain},
                              "400": outcome, "401": {"description": "bad or missing JWT"},
                              "404": outcome, "412": outcome},
            }},
            "/cds-services/{service_id}/feedback": {"post": {
                "summary": "CDS Hooks feedback",
                "parameters": [service_id],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": _FEEDBACK}}},
                "responses": {"200": {"description": "stored"}, "400": outcome,
                              "401": {"description": "bad or missing JWT"}, "404": outcome},
            }},
            "/healthz": get("process alive"),
            "/readyz": {"get": {"summary": "ready to serve",
                                "responses": {"200": {"description": "ok"},
                                              "503": {"description": "not ready"}}}},
            **_web_page_paths(),
            "/metrics": get("Prometheus metrics"),
            "/.well-known/jwks.json": get(
                "Our public keys (SMART Backend Services client assertions)", plain),
            "/.well-known/smart-configuration": {"get": {
                "summary": "How to get an OAuth access token for the FHIR endpoints",
                "responses": {"200": {"description": "SMART configuration", "content": plain},
                              "404": outcome}}},
        },
    }


def _worklist_paths() -> JSON:
    """The watch's receiver (service/watch/receiver.py) and the pharmacist worklist
    (service/web/worklist.py, issue 20)."""
    outcome = {"description": "OperationOutcome", "content": {
        "application/fhir+json": {"schema": {"type": "object"}}}}
    query = [{"name": n, "in": "query", "required": False, "schema": {"type": t}}
             for n, t in (("severity", "string"), ("rule", "string"),
                          ("older_than_h", "number"), ("newer_than_h", "number"),
                          ("page", "integer"), ("per_page", "integer"))]
    notified = {"200": outcome, "400": outcome, "401": outcome, "404": outcome,
                "413": outcome, "415": outcome, "503": outcome}
    fhir_body = {"required": False, "content": {"application/fhir+json": {"schema": {
        "type": "object"}}}}
    return {
        "/subscriptions/notify": {"post": {
            "summary": "Watch receiver: a notification (resource, history Bundle or empty "
                       "ping); WATCH_NOTIFY_TOKEN or X-Hub-Signature",
            "requestBody": fhir_body, "responses": notified}},
        "/subscriptions/notify/{type}/{id}": {m: {
            "summary": "Watch receiver: the changed resource (R4 rest-hook payload form)",
            "parameters": [{"name": n, "in": "path", "required": True,
                            "schema": {"type": "string"}} for n in ("type", "id")],
            "requestBody": fhir_body, "responses": notified} for m in ("put", "post")},
        "/worklist": {"get": {"summary": "Web page: the pharmacist worklist", "responses": {
            "200": {"description": "HTML page", "content": {"text/html": {}}}}}},
        "/worklist.json": {"get": {
            "summary": "The open findings of the watch's re-checks, ranked (JSON)",
            "parameters": query,
            "responses": {"200": {"description": "{entries, total, page, perPage}", "content": {
                "application/json": {"schema": {"type": "object"}}}},
                "400": outcome, "401": outcome, "404": outcome}}},
        "/worklist/{finding}/resolve": {"post": {
            "summary": "Resolve a worklist finding with an outcome (a :write credential)",
            "parameters": [{"name": "finding", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "properties": {
                    "outcome": {"type": "string", "enum": ["dose-changed", "stopped",
                                                           "monitoring", "not-relevant"]},
                    "comment": {"type": "string"}}, "required": ["outcome"]}}}},
            "responses": {"200": {"description": "the resolved entry", "content": {
                "application/json": {"schema": {"type": "object"}}}},
                "400": outcome, "401": outcome, "403": outcome, "404": outcome,
                "409": outcome, "415": outcome}}},
    }


def _web_page_paths() -> JSON:
    """The web page (service/web/ui.py): HTML pages, the demo patients and the alert report."""
    html = {"200": {"description": "HTML page", "content": {"text/html": {}}}}
    return {
        "/": {"get": {"summary": "Web page: try an order", "responses": html}},
        "/rules": {"get": {"summary": "Web page: the rules of the knowledge data",
                           "responses": html}},
        "/alerts": {"get": {"summary": "Web page: the alert report", "responses": html}},
        "/report": {"get": {
            "summary": "Alert report: per rule fired, accepted, overridden (JSON)",
            "responses": {"200": {"description": "the report", "content": {
                "application/json": {"schema": {"type": "object"}}}},
                "401": {"description": "no or bad credentials"}}}},
        **_worklist_paths(),
        "/demo/{name}": {"get": {
            "summary": "A bundled demo patient (FHIR Bundle, dates moved to today)",
            "parameters": [{"name": "name", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {"200": {"description": "Bundle", "content": {
                "application/fhir+json": {"schema": {"type": "object"}}}},
                "404": {"description": "no such demo patient"}}}},
    }
