"""CDS Hooks feedback bodies: ``{"feedback": [{card, outcome, acceptedSuggestions,
overrideReason, outcomeTimestamp}, ...]}``. Malformed feedback is a 400 naming the fault."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..errors import ServiceError, bad_request
from ..fhirjson import as_dict, as_str, parse_datetime_range

OUTCOMES = ("accepted", "overridden")
MAX_ITEMS = 1000


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
    reason = None
    comment = None
    override = raw.get("overrideReason")
    if override is not None:
        if outcome != "overridden" or not isinstance(override, dict):
            raise bad_request(f"{where}.overrideReason belongs to an overridden card and must be "
                              "an object", f"{where}.overrideReason")
        coding = override.get("reason")
        if coding is not None and not isinstance(coding, dict):
            raise bad_request(f"{where}.overrideReason.reason must be a Coding",
                              f"{where}.overrideReason.reason")
        reason = as_str(as_dict(coding).get("code")) or as_str(as_dict(coding).get("display"))
        text = override.get("userComment")
        if text is not None and not isinstance(text, str):
            raise bad_request(f"{where}.overrideReason.userComment must be a string",
                              f"{where}.overrideReason.userComment")
        comment = text
    return FeedbackItem(card, str(outcome), accepted, reason, comment, when.low)


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
