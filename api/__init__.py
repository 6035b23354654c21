"""The Flask intake API. Never imports torch, onnxruntime or dlib (it must start fast and small)."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify, request
from flask.json.provider import DefaultJSONProvider
from flask_openapi3 import APIBlueprint, Info, OpenAPI
from werkzeug.routing import BaseConverter

from api.context import EXTENSION
from storage.config import Settings, get_settings
from workers.context import WorkerContext


class JobId(BaseConverter):
    """A job id as the API makes them (``j`` + 16 hex digits): anything else (``..``, ``%2E%2E``) is a 404
    before it can reach a key."""

    regex = r"j[0-9a-f]{16}"


class PersonId(BaseConverter):
    """A person id; never a word of the people routes (`merge`, `suggestions`, ...), so those URLs are only
    ever their own endpoints (and a 405's Allow header lists only their methods)."""

    regex = r"(?!(?:merge|suggestions|recluster|refresh|learn)$)[A-Za-z0-9_.\-]{1,64}"


class FaceId(BaseConverter):
    """A face id: ``<job>:<item>:<face>``."""

    regex = r"j[0-9a-f]{16}:[0-9]{1,9}:[0-9]{1,4}"


class JsonProvider(DefaultJSONProvider):
    """JSON that a hostile body cannot turn into a 500: nesting too deep is just invalid JSON."""

    sort_keys = False

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None


class Api(OpenAPI):
    """flask-openapi3's app, whose document lists each operation's errors as `api.schemas.Error` only."""

    def generate_spec_json(self) -> None:
        super().generate_spec_json()
        # the library adds its own 422 (a list of pydantic errors) wherever none is declared: our validation
        # errors are `Error`s, declared where they happen (api.schemas.validation_failed)
        for operation in (op for item in self.spec_json["paths"].values() for op in item.values()):
            if "$ref" not in operation["responses"]["422"]["content"]["application/json"]["schema"]:
                del operation["responses"]["422"]
        del self.spec_json["components"]["schemas"][self.validation_error_model.__name__]


def create_app(settings: Settings | None = None) -> Flask:
    """Application factory: one app per settings object (tests build their own)."""
    from api.auth import install_auth
    from api.errors import register_error_handlers
    from api.health import bp as health_bp
    from api.jobs import bp as jobs_bp
    from api.logs import configure_logging
    from api.models import bp as models_bp
    from api.schemas import validation_failed
    from api.styles import bp as styles_bp
    from api.uploads import bp as uploads_bp
    from workers.celery_app import create_celery

    settings = settings or get_settings()
    configure_logging()
    app = Api(
        __name__,
        info=Info(
            title="Nightshift API",
            version="1.0.0",
            description=("Submit style-transfer and face-indexing jobs, poll them, download results."),
        ),
        security_schemes={"bearer": {"type": "http", "scheme": "bearer"}},
        openapi_extensions={"security": [{"bearer": []}]},
        validation_error_callback=validation_failed,
        doc_ui=False,
    )  # no UI pages: /openapi.json only (below)
    app.json_provider_class = JsonProvider
    app.json = JsonProvider(app)
    app.url_map.converters.update(job=JobId, person=PersonId, face=FaceId)
    app.config["MAX_CONTENT_LENGTH"] = settings.api.max_request_mb * 1024 * 1024
    app.config["MAX_FORM_PARTS"] = settings.api.max_files + 100
    # the same bundle the workers use (workers.context): settings, records, store, Celery app
    app.extensions[EXTENSION] = WorkerContext.from_settings(settings, celery=create_celery(settings))
    register_error_handlers(app)
    install_auth(app)
    app.before_request(_json_bodies_are_objects)
    for bp in (health_bp, jobs_bp, uploads_bp, styles_bp, models_bp):
        app.register_api(bp)
    _register_optional(app)
    app.add_url_rule("/openapi.json", "openapi", lambda: jsonify(app.api_doc))
    logging.getLogger("nightshift.api").debug("app created")
    return app


def _json_bodies_are_objects() -> None:
    """Every JSON body this API takes is an object. A JSON string is refused like any other non-object, before
    flask-openapi3 would parse the string again as a document of its own."""
    if request.mimetype == "application/json" and isinstance(request.get_json(silent=True), str):
        from api.errors import BadJson

        raise BadJson("the body must be a JSON object")


def _register_optional(app: OpenAPI) -> None:
    """Blueprints of later features register here when present."""
    import importlib

    for module in ("api.faces", "api.galleries", "api.people", "api.web", "api.metrics_bp"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        if isinstance(mod.bp, APIBlueprint):
            app.register_api(mod.bp)  # its operations join the OpenAPI document
        else:
            app.register_blueprint(mod.bp)
