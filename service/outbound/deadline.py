"""The one deadline of the outbound calls made while answering one request, and the typed
failure of an outbound call.

Failures are typed (``FetchFailure.reason``): ``not-allowed``, ``timeout``, ``refused``,
``http-status``, ``redirect``, ``invalid-json``, ``too-large``, ``error``, and ``auth`` (no
access token could be had, or the server refused a fresh one).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


class Deadline:
    """One budget of seconds for every outbound call made while answering one request."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.seconds = seconds
        self.ends = clock() + seconds

    def remaining(self) -> float:
        return max(0.0, self.ends - self._clock())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0


@dataclass
class FetchFailure(Exception):
    """A failed outbound call. ``url`` never carries a token; ``status`` is the HTTP status
    for ``http-status`` and ``redirect`` failures."""

    reason: str
    url: str
    message: str
    status: int | None = None

    def __str__(self) -> str:
        return self.message
