"""Moved to service/facts/history.py. This shim stays only while tests/ (read-only until its
reorganisation lands) and rules being edited by others import from here."""

from .facts.history import (
    build_history,
    current_regimen,
    level_at,
    same_dose_since,
    time_on_therapy,
)

__all__ = ["build_history", "current_regimen", "level_at", "same_dose_since", "time_on_therapy"]
