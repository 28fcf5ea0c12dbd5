"""Reading a request body as JSON in Flask: the media type, the body, its digest; the strict
parsing and the media-type and size checks are service/jsonbody.py, shared with the CLI, the
batch and the watch's receiver."""

from __future__ import annotations

import hashlib
from typing import Any

from flask import Request, g

from ..errors import Problem, ServiceError, bad_request
from ..jsonbody import JSON_TYPES, MAX_DEPTH, check_size, media_type, parse_json_text

__all__ = ["JSON_TYPES", "MAX_DEPTH", "check_size", "media_type", "parse_json_text",
           "read_json", "require_json_type"]


def require_json_type(req: Request, extra: tuple[str, ...] = ()) -> str:
    mt = media_type(req)
    if mt not in JSON_TYPES + extra:
        allowed = ", ".join(JSON_TYPES + extra)
        raise ServiceError(415, [Problem(
            f"unsupported media type {mt or '(none)'}: send {allowed}", "not-supported")])
    return mt


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
