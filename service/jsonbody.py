"""Strict JSON for every body the service reads, whoever reads it (the HTTP endpoints, the CLI,
the batch, the population review, the outbound FHIR and token answers): no NaN or Infinity, no
number out of range, UTF-8 only, at most MAX_DEPTH levels of nesting; and the two checks of a
body's media type and declared size, on anything shaped like a request. No Flask: the web
layer's request glue (reading, digest) is service/web/body.py; the watch's notification
receiver uses these checks too."""

from __future__ import annotations

import json
import math
from typing import Any, Protocol

from .errors import Problem, ServiceError, bad_request

JSON_TYPES = ("application/fhir+json", "application/json")
MAX_DEPTH = 100


class RequestBody(Protocol):
    """What a request says of its body (a Flask Request is one)."""

    @property
    def mimetype(self) -> str: ...

    @property
    def content_length(self) -> int | None: ...


def media_type(req: RequestBody) -> str:
    return (req.mimetype or "").lower()


def check_size(req: RequestBody, limit: int) -> None:
    """413 when the declared length is over ``limit`` bytes."""
    if req.content_length is not None and req.content_length > limit:
        raise ServiceError(413, [Problem(
            f"the request body is {req.content_length} bytes; the limit is {limit}",
            "too-costly")])


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text[:30]} is out of range")
    return value


def parse_json_text(text: str | bytes) -> Any:
    """The value of ``text``; raises ServiceError (400) naming what is wrong."""
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
