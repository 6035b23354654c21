"""One JSON error shape for every 4xx/5xx: {"error": {"code", "message", "details"}}."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from storage.errors import ObjectNotFound, RecordNotFound, StorageError, StoreUnavailable
from storage.keys import BadKey
from workers.contract import validation_messages

log = logging.getLogger("nightshift.api")


class ApiError(Exception):
    """An error answered to the client as JSON."""

    def __init__(self, status: int, code: str, message: str, details: Any = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details
        self.headers = headers or {}


def error_response(status: int, code: str, message: str, details: Any = None) -> tuple[Response, int]:
    body: dict[str, Any] = {"code": code, "message": message}
    body["details"] = details if details is not None else {}
    return jsonify({"error": body}), status


def validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic errors as a list of {field, message}, without echoing large inputs back."""
    return [{"field": loc or "(body)", "message": msg} for loc, msg in validation_messages(exc)]


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> tuple[Response, int]:
        resp, status = error_response(exc.status, exc.code, exc.message, exc.details)
        resp.headers.update(exc.headers)
        return resp, status

    @app.errorhandler(ValidationError)
    def _validation(exc: ValidationError) -> tuple[Response, int]:
        details = validation_details(exc)
        first = details[0] if details else {"field": "(body)", "message": "invalid"}
        return error_response(422, "invalid_request", f"{first['field']}: {first['message']}", details)

    @app.errorhandler(BadKey)
    def _bad_key(exc: BadKey) -> tuple[Response, int]:
        return error_response(400, "bad_key", str(exc))

    @app.errorhandler(RecordNotFound)
    @app.errorhandler(ObjectNotFound)
    def _not_found(exc: StorageError) -> tuple[Response, int]:
        return error_response(404, "not_found", str(exc) or "not found")

    @app.errorhandler(StoreUnavailable)
    def _unavailable(exc: StoreUnavailable) -> tuple[Response, int]:
        log.warning("storage unavailable: %s", exc)
        resp, status = error_response(503, "unavailable", "storage is temporarily unavailable; retry shortly")
        resp.headers["Retry-After"] = "5"
        return resp, status

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> tuple[Response, int]:
        status = exc.code or 500
        code = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type",
                429: "rate_limited"}.get(status, "http_error")
        message = exc.description or exc.name
        if status == 413:
            message = "request too large: upload big archives with POST /v1/uploads (presigned PUT) instead"
        if status == 404 and message and message.startswith("The requested URL"):
            message = "no such endpoint; see /openapi.json"
        resp, status = error_response(status, code, message)
        for name, value in exc.get_headers():
            if name.lower() != "content-type":  # keep e.g. Allow on 405, drop werkzeug's HTML type
                resp.headers[name] = value
        return resp, status

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error")
        return error_response(500, "internal", "internal error; it has been logged")
