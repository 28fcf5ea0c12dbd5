"""baclofen-check: checks baclofen orders and answers with FHIR R4 DetectedIssues."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from .clock import CLOCK_KEY, Clock, wall_clock
from .config import load_settings, settings_from


def create_app(config: Mapping[str, Any] | None = None, clock: Clock | None = None) -> Flask:
    """Application factory: settings, clock, knowledge, store, blueprints. Nothing else.

    ``config``: the settings (interfaces.md section 1); when given, the environment is not
    read at all; without it, the environment. ``clock``: what "now" is for every request
    (default: the wall clock). The start-up steps are service/startup.py's, in order."""
    # lazy (each line below): every ``import service.<module>`` (the CLI's offline check, the
    # rules) runs this file first, and must not load the web layer with it
    from . import startup, watch  # lazy: see above
    from .knowledge import load  # lazy: see above
    from .logs import install_request_logging  # lazy: see above
    from .web import cds_hooks, cors, errors, fhir_api, ops, ui, wellknown  # lazy: see above
    from .web import worklist as worklist_page  # lazy: see above
    from .web.http_metrics import install as install_metrics  # lazy: see above

    settings = load_settings() if config is None else settings_from(config)
    clock = clock or wall_clock
    app = Flask(__name__)
    app.config["SETTINGS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.extensions[CLOCK_KEY] = clock
    app.json.sort_keys = False  # type: ignore[attr-defined]
    # read and checked once, at start: a broken file fails here, naming the bad key
    app.extensions["knowledge"] = load()
    startup.configure_logging(settings)
    startup.check_clock(clock)
    install_request_logging(app)
    store = startup.open_store(settings)
    startup.migrate(store)
    startup.purge_expired(store, clock)
    startup.attach_spool(store, settings)
    app.extensions["store"] = store
    install_metrics(app)
    errors.register(app)
    app.register_blueprint(fhir_api.bp)
    app.register_blueprint(ops.bp)
    wellknown.register(app)
    cds_hooks.register(app)
    cors.register(app)
    app.register_blueprint(ui.bp)
    watch.register(app)
    app.register_blueprint(worklist_page.bp)
    return app


__all__ = ["create_app"]
