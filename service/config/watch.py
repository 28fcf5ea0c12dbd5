"""Parsing of the watch settings (interfaces.md section 6): WATCH_NOTIFY_TOKEN,
WATCH_COALESCE_S and WATCH_CHECK_S; WATCH_NOTIFY_HMAC_SECRET and WATCH_TASK_OWNER (issue 20).
service/config/__init__.py calls ``watch_settings``; errors are ConfigError naming the setting."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .values import ConfigError

NAMES = ("WATCH_NOTIFY_TOKEN", "WATCH_COALESCE_S", "WATCH_CHECK_S",
         "WATCH_NOTIFY_HMAC_SECRET", "WATCH_TASK_OWNER")
# choice: a token shorter than this is refused: it is the only thing between the internet and
# the queue, and Subscriptions store it on the FHIR server
MIN_TOKEN_LENGTH = 16


def _seconds(name: str, value: Any, low: float, high: float) -> float:

    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be a number of seconds, not {value!r}") from exc
    if not low <= number <= high:
        raise ConfigError(f"{name} must be between {low:g} and {high:g} seconds")
    return number


def _task_owner(value: Any) -> str | None:
    """WATCH_TASK_OWNER: a relative reference, e.g. ``Organization/pharmacy`` (issue 20)."""

    text = str(value or "").strip()
    if not text:
        return None
    if not re.fullmatch(r"(Organization|Practitioner|PractitionerRole|CareTeam|HealthcareService"
                        r"|Patient|Device|RelatedPerson)/[A-Za-z0-9\-.]{1,64}", text):
        raise ConfigError("WATCH_TASK_OWNER must be a reference such as Organization/pharmacy "
                          "(Organization, Practitioner, PractitionerRole, CareTeam, "
                          "HealthcareService, Patient, Device or RelatedPerson)")
    return text


def watch_settings(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Settings fields of the watch (service/watch/)."""

    token = str(raw.get("WATCH_NOTIFY_TOKEN") or "").strip() or None
    if token is not None and (len(token) < MIN_TOKEN_LENGTH or any(
            c.isspace() or not c.isprintable() for c in token)):
        raise ConfigError(f"WATCH_NOTIFY_TOKEN must be at least {MIN_TOKEN_LENGTH} printable "
                          "characters without spaces")
    secret = str(raw.get("WATCH_NOTIFY_HMAC_SECRET") or "").strip() or None
    if secret is not None and len(secret) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"WATCH_NOTIFY_HMAC_SECRET must be at least {MIN_TOKEN_LENGTH} "
                          "characters")
    return {
        "watch_notify_token": token,
        "watch_notify_hmac_secret": secret,
        "watch_task_owner": _task_owner(raw.get("WATCH_TASK_OWNER")),
        "watch_coalesce_s": _seconds("WATCH_COALESCE_S", raw.get("WATCH_COALESCE_S", 30),
                                     0, 3600),
        "watch_check_s": _seconds("WATCH_CHECK_S", raw.get("WATCH_CHECK_S", 60), 1, 86400),
    }
