"""The nesting limit of request bodies (service/web/body.py): at most MAX_DEPTH levels.

Depth counts as in the body reader: the top value is at depth 0, each member one deeper; a
body is refused when anything (a scalar, or an empty object or list) sits deeper than
MAX_DEPTH.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.errors import ServiceError
from service.web.body import MAX_DEPTH, parse_json_text


def nested(levels: int, inner: Any, kind: str) -> str:
    value = inner
    for _ in range(levels):
        value = [value] if kind == "list" else {"a": value}
    return json.dumps(value)


@pytest.mark.parametrize(("levels", "inner", "kind", "refused"), [
    (MAX_DEPTH, 1, "list", False),
    (MAX_DEPTH, 1, "object", False),
    (MAX_DEPTH + 1, 1, "list", True),
    (MAX_DEPTH + 1, "x", "object", True),
    # an empty container at depth MAX_DEPTH + 1 is itself too deep; one at MAX_DEPTH is not
    (MAX_DEPTH, [], "list", False),
    (MAX_DEPTH + 1, [], "list", True),
    (MAX_DEPTH, {}, "object", False),
    (MAX_DEPTH + 1, {}, "object", True),
    (0, 5, "list", False),
], ids=["lists_at_limit", "objects_at_limit", "list_scalar_over", "object_scalar_over",
        "empty_list_at_limit", "empty_list_over", "empty_object_at_limit",
        "empty_object_over", "bare_scalar"])
def test_nesting_limit(levels: int, inner: Any, kind: str, refused: bool) -> None:
    text = nested(levels, inner, kind)
    if not refused:
        assert parse_json_text(text) == json.loads(text)
        return
    with pytest.raises(ServiceError) as caught:
        parse_json_text(text)
    assert caught.value.status == 400
    assert [p.message for p in caught.value.problems] == [
        f"the JSON is nested more than {MAX_DEPTH} levels deep"]


def test_deep_member_beside_shallow_ones_is_found() -> None:
    wide = {"a": [1, 2, {"b": "c"}], "deep": json.loads(nested(MAX_DEPTH, 1, "list"))}
    with pytest.raises(ServiceError) as caught:
        parse_json_text(json.dumps(wide))
    assert caught.value.status == 400
