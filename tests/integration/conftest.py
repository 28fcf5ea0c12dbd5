"""Fixtures of the integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.browser import browser, live, live_auth, page  # noqa: F401 - fixtures
from tests.support.services import Postgres
from tests.support.smart import keys, smart, switch  # noqa: F401 - fixtures


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/nested/dir/audit.sqlite3"
    pg: Postgres = request.getfixturevalue("postgres")
    return pg.new_database()
