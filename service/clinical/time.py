"""Elapsed time as an exact number of days: instants in, a ``Fraction`` out (no clock: the
caller says when "now" is)."""

from __future__ import annotations

from datetime import datetime
from fractions import Fraction


def elapsed_days(start: datetime, end: datetime) -> Fraction:
    """Elapsed time in days (difference of instants / 24 h), exactly."""
    delta = end - start
    micro = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
    return Fraction(micro, 86_400_000_000)
