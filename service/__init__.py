"""baclofen-check: checks baclofen orders and answers with FHIR R4 DetectedIssues."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask

from .config import load_settings


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Application factory: settings, knowledge, blueprints. Nothing else."""
    from .knowledge import load
    from .logs import configure_logging, install_request_logging
    from .web import errors, fhir_api, ops

    settings = load_settings(config)
    app = Flask(__name__)
    app.config["SETTINGS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    load()  # fail at start, not on the first request, if the knowledge file is broken
    configure_logging()
    install_request_logging(app)
    if not settings.api_require_auth:
        logging.getLogger("baclofen_check").warning(
            "API_REQUIRE_AUTH is off: every call to the FHIR endpoints is allowed")
    from .spool import open_spooled_store

    app.extensions["store"] = open_spooled_store(settings)
    from .metrics import install as install_metrics

    install_metrics(app)
    errors.register(app)
    app.register_blueprint(fhir_api.bp)
    app.register_blueprint(ops.bp)
    from .web import wellknown

    wellknown.register(app)
    from .web import cds_hooks, cors

    cds_hooks.register(app)
    cors.register(app)
    from .web import ui

    app.register_blueprint(ui.bp)
    from . import watch

    watch.register(app)
    if not settings.cds_require_jwt:
        logging.getLogger("baclofen_check").warning(
            "CDS_REQUIRE_JWT is off: every CDS Hooks call is allowed")
    return app


__all__ = ["create_app"]
