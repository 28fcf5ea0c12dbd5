"""CDS Hooks feedback bodies: ``{"feedback": [{card, outcome, acceptedSuggestions,
overrideReason, outcomeTimestamp}, ...]}``. Malformed feedback is a 400 naming the fault.

The override reason is read in every form clients send, whatever the card style: the CDS Hooks
``overrideReason`` (``{reason: Coding, userComment}``), Epic's ``overrideReasons`` (the same
object, or a list of them), and Epic's flat extension keys
``com.epic.cdshooks.feedback.overrideReason.*`` on the item or in its ``extension`` object
(``.code``/``.reason``, ``.display``, ``.system``, ``.userComment``/``.comment``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..errors import ServiceError, bad_request
from ..fhirjson import JSON, as_dict, as_str, parse_datetime_range

OUTCOMES = ("accepted", "overridden")
MAX_ITEMS = 1000
EPIC_PREFIX = "com.epic.cdshooks.feedback.overrideReason."
_EPIC_FIELDS = {"code": "code", "reason": "code", "display": "display", "system": "system",
                "usercomment": "comment", "comment": "comment"}


@dataclass(frozen=True)
class FeedbackItem:
    card: str
    outcome: str
    accepted_suggestions: list[str]
    override_reason: str | None     # the reason code (or its display when it has no code)
    user_comment: str | None
    outcome_time: datetime


def _item(raw: Any, n: int) -> FeedbackItem:
    where = f"feedback[{n}]"
    if not isinstance(raw, dict):
        raise bad_request(f"{where} must be an object", where, "structure")
    card = as_str(raw.get("card"))
    if card is None:
        raise bad_request(f"{where}.card is required (the uuid of the card)", f"{where}.card",
                          "required")
    outcome = raw.get("outcome")
    if outcome not in OUTCOMES:
        raise bad_request(f"{where}.outcome must be accepted or overridden", f"{where}.outcome")
    when = parse_datetime_range(raw.get("outcomeTimestamp"))
    if when is None or when.precision != "instant" or not _has_offset(raw["outcomeTimestamp"]):
        raise bad_request(f"{where}.outcomeTimestamp must be an instant with a time zone",
                          f"{where}.outcomeTimestamp", "required")
    accepted: list[str] = []
    suggestions = raw.get("acceptedSuggestions")
    if suggestions is not None:
        if not isinstance(suggestions, list):
            raise bad_request(f"{where}.acceptedSuggestions must be a list",
                              f"{where}.acceptedSuggestions")
        for i, s in enumerate(suggestions):
            sid = as_str(as_dict(s).get("id"))
            if sid is None:
                raise bad_request(f"{where}.acceptedSuggestions[{i}].id is required",
                                  f"{where}.acceptedSuggestions[{i}].id", "required")
            accepted.append(sid)
    if outcome == "overridden" and accepted:
        raise bad_request(f"{where}: an overridden card has no accepted suggestions",
                          f"{where}.acceptedSuggestions")
    reason, comment = _override(raw, where, str(outcome))
    return FeedbackItem(card, str(outcome), accepted, reason, comment, when.low)


def _reason_object(override: Any, where: str) -> tuple[str | None, str | None]:
    """``{reason: Coding, userComment: string}`` -> (code or display, comment)."""
    if not isinstance(override, dict):
        raise bad_request(f"{where} must be an object", where)
    coding = override.get("reason")
    if coding is not None and not isinstance(coding, dict):
        raise bad_request(f"{where}.reason must be a Coding", f"{where}.reason")
    reason = as_str(as_dict(coding).get("code")) or as_str(as_dict(coding).get("display"))
    text = override.get("userComment")
    if text is not None and not isinstance(text, str):
        raise bad_request(f"{where}.userComment must be a string", f"{where}.userComment")
    return reason, as_str(text)


def _epic_keys(raw: JSON, where: str) -> dict[str, str]:
    """Epic's flat ``com.epic.cdshooks.feedback.overrideReason.*`` keys, on the item or in its
    extension object."""
    found: dict[str, str] = {}
    for source in (raw, as_dict(raw.get("extension"))):
        for key, value in source.items():
            if not isinstance(key, str) or not key.startswith(EPIC_PREFIX):
                continue
            name = _EPIC_FIELDS.get(key[len(EPIC_PREFIX):].lower())
            if name is None:
                continue
            if not isinstance(value, str):
                raise bad_request(f"{where}: {key} must be a string", f"{where}.{key}")
            if value.strip():
                found.setdefault(name, value.strip())
    return found


def _override(raw: JSON, where: str, outcome: str) -> tuple[str | None, str | None]:
    """(reason code, user comment) from whichever form the client sent; the first form that
    gives a reason wins, and a comment is taken from any form."""
    forms: list[tuple[str | None, str | None]] = []
    if raw.get("overrideReason") is not None:
        forms.append(_reason_object(raw["overrideReason"], f"{where}.overrideReason"))
    plural = raw.get("overrideReasons")
    if plural is not None:
        items = plural if isinstance(plural, list) else [plural]
        forms.extend(_reason_object(o, f"{where}.overrideReasons") for o in items)
    epic = _epic_keys(raw, where)
    if epic:
        forms.append((epic.get("code") or epic.get("display"), epic.get("comment")))
    # an empty reason object (some clients send one with every item) says nothing
    forms = [(r, c) for r, c in forms if r or c]
    if forms and outcome != "overridden":
        raise bad_request(f"{where}: an override reason belongs to an overridden card",
                          f"{where}.overrideReason")
    reason = next((r for r, _ in forms if r), None)
    comments = list(dict.fromkeys(c for _, c in forms if c))
    return reason, "\n".join(comments) if comments else None


def _has_offset(text: str) -> bool:
    return text.endswith("Z") or (len(text) > 6 and text[-6] in "+-" and text[-3] == ":")


def parse_feedback(body: Any) -> list[FeedbackItem]:
    if not isinstance(body, dict):
        raise bad_request("the feedback body must be a JSON object", code="structure")
    items = body.get("feedback")
    if not isinstance(items, list) or not items:
        raise bad_request("feedback must be a non-empty list", "feedback", "required")
    if len(items) > MAX_ITEMS:
        raise ServiceError(413, bad_request(f"at most {MAX_ITEMS} feedback items").problems)
    return [_item(raw, n) for n, raw in enumerate(items)]
