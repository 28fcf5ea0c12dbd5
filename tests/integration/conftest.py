"""Fixtures of the integration tests."""

from __future__ import annotations

from tests.support.browser import browser, live, live_auth, page  # noqa: F401 - fixtures
from tests.support.smart import keys, smart, switch  # noqa: F401 - fixtures
