"""FHIR endpoints: $check, metadata, OperationDefinition, OpenAPI (interfaces.md section 2)."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, Response, current_app, json, request

from ..checker import check_body
from ..config import Settings
from ..errors import ServiceError
from ..knowledge import load
from .auth import authenticate
from .body import read_json
from .capability import OPDEF_ID, capability_statement, openapi, operation_definition
from .errors import FHIR_JSON

bp = Blueprint("fhir", __name__)


def settings() -> Settings:
    s: Settings = current_app.config["SETTINGS"]
    return s


def fhir_response(resource: object, status: int = 200) -> Response:
    return Response(json.dumps(resource), status=status, mimetype=FHIR_JSON)


@bp.post("/MedicationRequest/$check")
def check() -> Response:
    cfg = settings()
    authenticate(request, cfg)
    profile = request.args.get("profile", cfg.profile)
    if profile not in {"us", "uk"}:
        from ..errors import bad_request

        raise bad_request("the profile query parameter must be us or uk")
    body = read_json(request, cfg.max_request_bytes)
    bundle, _req, _outcome = check_body(body, datetime.now(UTC), profile)
    return fhir_response(bundle)


@bp.post("/MedicationRequest/<order_id>/$check")
def check_by_id(order_id: str) -> Response:
    cfg = settings()
    authenticate(request, cfg, write=request.args.get("persist") == "true")
    from ..errors import Problem

    raise ServiceError(422, [Problem(
        "checking an order by id needs FHIR_SERVER_URL, and reading orders from a FHIR server "
        "is not available in this version", "not-supported")])


@bp.get("/metadata")
def metadata() -> Response:
    cfg = settings()
    kb = load()
    return fhir_response(capability_statement(cfg.public_base_url, kb.version, "2026-11-25"))


@bp.get(f"/OperationDefinition/{OPDEF_ID}")
def opdef() -> Response:
    return fhir_response(operation_definition(settings().public_base_url))


@bp.get("/openapi.json")
def openapi_json() -> Response:
    return Response(json.dumps(openapi(settings().public_base_url, load().version)),
                    mimetype="application/json")
