"""The service's clock: a callable returning an aware datetime.

``create_app`` takes one (production: ``wall_clock``; tests pass ``fixed_clock(...)``) and
keeps it on the app; everything that needs "now" while answering a request (the check time of
the native and CDS endpoints, the worklist, the watch receiver and worker) takes it from there
(``app_clock``), never from ``datetime.now``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

Clock = Callable[[], datetime]
CLOCK_KEY = "baclofen_check.clock"


def wall_clock() -> datetime:
    return datetime.now(UTC)


def fixed_clock(moment: datetime) -> Clock:
    """A clock that always says ``moment`` (which must be timezone-aware)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("a fixed clock needs a timezone-aware datetime")
    return lambda: moment


def app_clock(app: Any) -> Clock:
    """The clock ``create_app`` gave this (Flask) app; the wall clock for an app made
    otherwise."""
    clock: Clock = app.extensions.get(CLOCK_KEY, wall_clock)
    return clock
