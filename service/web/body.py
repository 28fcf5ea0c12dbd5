"""Reading a request body as JSON: media type, size, strict JSON (no NaN), nesting depth."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from flask import Request, g

from ..errors import Problem, ServiceError, bad_request

JSON_TYPES = ("application/fhir+json", "application/json")
MAX_DEPTH = 100


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text[:30]} is out of range")
    return value


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


def parse_json_text(text: str | bytes) -> Any:
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError as exc:
        raise bad_request("the JSON is nested too deeply") from exc
    except UnicodeDecodeError as exc:
        raise bad_request("the body is not UTF-8 text") from exc
    except ValueError as exc:
        raise bad_request(f"malformed JSON: {exc}") from exc
    _check_depth(value)
    return value


def _check_depth(value: Any) -> None:
    """Refuse a value holding anything deeper than MAX_DEPTH levels. Only containers are
    walked: a container at ``depth`` with any member holds something at ``depth + 1``."""
    if isinstance(value, dict | list) and _too_deep(value, 0):
        raise bad_request(f"the JSON is nested more than {MAX_DEPTH} levels deep")


def _too_deep(container: Any, depth: int) -> bool:
    """Recursion no deeper than MAX_DEPTH; a value from json.loads holds only plain dicts and
    lists (exact type tests are several times faster than a walk with a stack)."""
    for member in container.values() if type(container) is dict else container:
        kind = type(member)
        if kind is dict or kind is list:
            if depth + 1 >= MAX_DEPTH:
                if member:
                    return True
            elif _too_deep(member, depth + 1):
                return True
    return False


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
