"""What a request handler takes from its app and request: the settings, the store, the app's
clock, and the request's one outbound deadline (shared by every outbound call made while
answering it: FHIR reads, JWKS)."""

from __future__ import annotations

from datetime import datetime

from flask import current_app, g

from ..clock import app_clock
from ..config import Settings
from ..knowledge import Knowledge
from ..outbound.deadline import Deadline
from ..store import Store


def settings() -> Settings:
    s: Settings = current_app.config["SETTINGS"]
    return s


def knowledge() -> Knowledge:
    """The app's knowledge, read and checked once by create_app."""
    kb: Knowledge = current_app.extensions["knowledge"]
    return kb


def store() -> Store | None:
    s: Store | None = current_app.extensions.get("store")
    return s


def now() -> datetime:
    """The app's clock (create_app's ``clock``)."""
    return app_clock(current_app)()


def outbound_deadline() -> Deadline:
    """One deadline for every outbound call made while answering this request."""
    if "outbound_deadline" not in g:
        g.outbound_deadline = Deadline(settings().outbound_timeout_s)
    deadline: Deadline = g.outbound_deadline
    return deadline
