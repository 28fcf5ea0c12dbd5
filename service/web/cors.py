"""CORS for browser clients: CDS Hooks and FHIR endpoints, from CORS_ORIGINS only."""

from __future__ import annotations

from flask import Flask
from flask_cors import CORS

from ..config import Settings

PATHS = (r"/cds-services", r"/cds-services/*", r"/MedicationRequest/*", r"/metadata",
         r"/OperationDefinition/*", r"/openapi.json", r"/.well-known/smart-configuration")


def register(app: Flask) -> None:
    cfg: Settings = app.config["SETTINGS"]
    if not cfg.cors_origins:
        return
    options = {
        "origins": list(cfg.cors_origins),
        "methods": ["GET", "POST", "OPTIONS"],
        "allow_headers": ["Authorization", "Content-Type", "X-Request-ID"],
        "expose_headers": ["X-Request-ID", "WWW-Authenticate"],
        "supports_credentials": False,
        "max_age": 600,
    }
    CORS(app, resources=dict.fromkeys(PATHS, options))
