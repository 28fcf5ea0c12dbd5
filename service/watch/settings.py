"""Parsing of the watch settings (interfaces.md section 6): WATCH_NOTIFY_TOKEN,
WATCH_COALESCE_S and WATCH_CHECK_S. service/config.py calls ``watch_settings``; errors are
ConfigError naming the setting."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

NAMES = ("WATCH_NOTIFY_TOKEN", "WATCH_COALESCE_S", "WATCH_CHECK_S")
# choice: a token shorter than this is refused: it is the only thing between the internet and
# the queue, and Subscriptions store it on the FHIR server
MIN_TOKEN_LENGTH = 16


def _seconds(name: str, value: Any, low: float, high: float) -> float:
    from ..config import ConfigError

    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be a number of seconds, not {value!r}") from exc
    if not low <= number <= high:
        raise ConfigError(f"{name} must be between {low:g} and {high:g} seconds")
    return number


def watch_settings(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Settings fields of the watch (service/watch/)."""
    from ..config import ConfigError

    token = str(raw.get("WATCH_NOTIFY_TOKEN") or "").strip() or None
    if token is not None and (len(token) < MIN_TOKEN_LENGTH or any(
            c.isspace() or not c.isprintable() for c in token)):
        raise ConfigError(f"WATCH_NOTIFY_TOKEN must be at least {MIN_TOKEN_LENGTH} printable "
                          "characters without spaces")
    return {
        "watch_notify_token": token,
        "watch_coalesce_s": _seconds("WATCH_COALESCE_S", raw.get("WATCH_COALESCE_S", 30),
                                     0, 3600),
        "watch_check_s": _seconds("WATCH_CHECK_S", raw.get("WATCH_CHECK_S", 60), 1, 86400),
    }
