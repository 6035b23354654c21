"""The Flask intake API. Never imports torch, onnxruntime or dlib (it must start fast and small)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from flask import Flask

from storage.apikeys import ApiKeys
from storage.config import Settings, get_settings
from storage.objects import ObjectStore
from storage.records import RecordStore


@dataclass
class Services:
    """What request handlers use; built once per app."""

    settings: Settings
    records: RecordStore
    store: ObjectStore
    apikeys: ApiKeys
    celery: Any


def create_app(settings: Settings | None = None) -> Flask:
    """Application factory: one app per settings object (tests build their own)."""
    from api.auth import install_auth
    from api.errors import register_error_handlers
    from api.health import bp as health_bp
    from api.jobs import bp as jobs_bp
    from api.logs import configure_logging
    from api.models import bp as models_bp
    from api.openapi import bp as openapi_bp
    from api.styles import bp as styles_bp
    from api.uploads import bp as uploads_bp
    from workers.celery_app import create_celery

    settings = settings or get_settings()
    configure_logging()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.api.max_request_mb * 1024 * 1024
    app.config["MAX_FORM_PARTS"] = settings.api.max_files + 100
    app.json.sort_keys = False  # type: ignore[attr-defined]
    records = RecordStore(settings)
    app.extensions["nightshift"] = Services(
        settings=settings, records=records, store=ObjectStore(settings.s3),
        apikeys=ApiKeys(records.r, settings.key_prefix), celery=create_celery(settings),
    )
    register_error_handlers(app)
    install_auth(app)
    for bp in (health_bp, jobs_bp, uploads_bp, openapi_bp, styles_bp, models_bp):
        app.register_blueprint(bp)
    _register_optional(app)
    logging.getLogger("nightshift.api").debug("app created")
    return app


def _register_optional(app: Flask) -> None:
    """Blueprints of later features register here when present."""
    import importlib

    for module in ("api.faces", "api.web", "api.metrics_bp"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        app.register_blueprint(mod.bp)
