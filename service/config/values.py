"""What every settings parser shares: the error that names a setting, and JSON-object values.
Below service/config/__init__.py, service/config/auth.py and service/config/watch.py alike, so
that none of them imports another back."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


class ConfigError(ValueError):
    """A configuration value cannot be used; the message names the setting."""


def json_object(name: str, value: Any) -> dict[str, Any]:
    """A setting holding a JSON object (or given as a mapping) whose keys are non-empty
    strings."""
    if isinstance(value, Mapping):
        data: Any = dict(value)
    else:
        try:
            data = json.loads(str(value or "{}"))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{name} must be a JSON object") from exc
    if not isinstance(data, dict) or not all(isinstance(k, str) and k for k in data):
        raise ConfigError(f"{name} must be a JSON object keyed by issuer strings")
    return data
