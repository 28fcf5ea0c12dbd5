"""Reading a request body as JSON in Flask: media type, size, the body's digest; the strict
parsing itself (no NaN, nesting depth) is service/jsonbody.py, shared with the CLI and the
batch."""

from __future__ import annotations

import hashlib
from typing import Any

from flask import Request, g

from ..errors import Problem, ServiceError, bad_request
from ..jsonbody import JSON_TYPES, MAX_DEPTH, parse_json_text

__all__ = ["JSON_TYPES", "MAX_DEPTH", "check_size", "media_type", "parse_json_text",
           "read_json", "require_json_type"]


def media_type(req: Request) -> str:
    return (req.mimetype or "").lower()


def require_json_type(req: Request, extra: tuple[str, ...] = ()) -> str:
    mt = media_type(req)
    if mt not in JSON_TYPES + extra:
        allowed = ", ".join(JSON_TYPES + extra)
        raise ServiceError(415, [Problem(
            f"unsupported media type {mt or '(none)'}: send {allowed}", "not-supported")])
    return mt


def check_size(req: Request, limit: int) -> None:
    if req.content_length is not None and req.content_length > limit:
        raise ServiceError(413, [Problem(
            f"the request body is {req.content_length} bytes; the limit is {limit}",
            "too-costly")])


def read_json(req: Request, limit: int) -> Any:
    require_json_type(req)
    check_size(req, limit)
    data = req.get_data(cache=False)
    if len(data) > limit:
        raise ServiceError(413, [Problem(
            f"the request body is larger than {limit} bytes", "too-costly")])
    if not data.strip():
        raise bad_request("the request body is empty")
    # what identifies a retried call with the request id or hookInstance (store.record_key)
    g.body_digest = hashlib.sha256(data).hexdigest()
    return parse_json_text(data)
