from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import settings as hypothesis_settings

from service import config, create_app
from tests.support.checks import CLOCK, TOKEN, WRITE_TOKEN
from tests.support.services import (  # noqa: F401 - session fixtures (real services)
    Postgres,
    postgres,
    sekmet,
)

# In CI the property tests are derandomized: the same examples every run, so a landing cannot
# fail on a draw that a developer never saw. Locally they draw new examples each run (set
# HOSTILE_EXAMPLES for a longer hostile-input run).
# No property test has a deadline: a deadline is a timed test, and on a loaded machine it fails
# for the machine's sake (speed is measured by make bench, never by a test).
hypothesis_settings.register_profile("local", deadline=None)
hypothesis_settings.register_profile("ci", derandomize=True, deadline=None)
hypothesis_settings.load_profile("ci" if os.environ.get("CI") else "local")

# The tests never see the shell's settings (BACLOFEN_PROFILE=uk or API_REQUIRE_AUTH=true
# exported, say): create_app(mapping) reads only its mapping, and what a test of the CLI or of a
# server it starts needs, it sets itself (monkeypatch.setenv, the server's env).
for _name in config.NAMES:
    os.environ.pop(_name, None)

# every app the tests make spools (service/spool.py) here, not under the working directory:
# SPOOL_DIR for the CLI and the servers the tests start, and the default of the apps'
# mappings that name no SPOOL_DIR
SPOOL_DIR = tempfile.mkdtemp(prefix="baclofen-check-test-spool-")
os.environ["SPOOL_DIR"] = SPOOL_DIR
config.DEFAULT_SPOOL_DIR = SPOOL_DIR


@pytest.fixture
def app(tmp_path: Any) -> Iterator[Flask]:
    app = create_app({
        "API_REQUIRE_AUTH": True,
        "API_TOKENS": f"{TOKEN},{WRITE_TOKEN}:write",
        "CDS_REQUIRE_JWT": False,
        "DATABASE_URL": f"sqlite:///{tmp_path}/audit.sqlite3",
        "TESTING": True,
    }, clock=CLOCK)
    yield app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new database on each backend: SQLite (in a folder that does not exist yet) and
    PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/nested/dir/audit.sqlite3"
    pg: Postgres = request.getfixturevalue("postgres")
    return pg.new_database()
