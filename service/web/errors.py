"""The one place that turns exceptions into wire errors (OperationOutcome with a status)."""

from __future__ import annotations

import logging

from flask import Flask, Response, json, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from ..errors import Problem, ServiceError
from ..output.fhir import operation_outcome

log = logging.getLogger("baclofen_check.errors")

FHIR_JSON = "application/fhir+json"

_HTTP_CODES = {
    400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported",
    406: "not-supported", 408: "timeout", 413: "too-costly", 415: "not-supported",
    422: "processing", 429: "throttled", 502: "transient", 504: "timeout",
}


def outcome_response(status: int, problems: list[Problem], headers: dict[str, str] | None = None
                     ) -> Response:
    body = json.dumps(operation_outcome(problems))
    resp = Response(body, status=status, mimetype=FHIR_JSON)
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def register(app: Flask) -> None:
    @app.errorhandler(ServiceError)
    def _service_error(err: ServiceError) -> Response:
        if request.path.startswith("/cds-services") and err.status == 401:
            return Response(status=401)
        return outcome_response(err.status, err.problems, err.headers)

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException) -> Response:
        status = err.code or 500
        message = {
            404: f"no such endpoint: {request.method} {request.path}",
            405: f"method {request.method} is not allowed on {request.path}",
            413: "the request body is larger than MAX_REQUEST_BYTES",
        }.get(status, err.description or err.name)
        resp = outcome_response(status, [Problem(message, _HTTP_CODES.get(status, "exception"))])
        if status == 405:
            allowed = getattr(err, "valid_methods", None)
            if allowed:
                resp.headers["Allow"] = ", ".join(allowed)
        return resp

    @app.errorhandler(SQLAlchemyError)
    def _store_unavailable(err: SQLAlchemyError) -> Response:
        # a call that needs the store (feedback, a JWT's jti, write-back) while it is down or
        # not answering within DB_STATEMENT_TIMEOUT_S: a 503 to retry, not a 500
        log.error("store unavailable", extra={"event": "store-unavailable",
                                              "error_type": type(err).__name__})
        return outcome_response(503, [Problem("the store is not available; try again",
                                              "transient")], {"Retry-After": "5"})

    @app.errorhandler(Exception)
    def _unexpected(err: Exception) -> Response:
        log.exception("unexpected error", extra={"error_type": type(err).__name__})
        return outcome_response(500, [Problem("internal error; the request was not checked",
                                              "exception")])
