"""One JSON error shape for every 4xx/5xx: {"error": {"code", "message", "details"}}.

Handlers raise an `HttpError` subclass that carries its status and code (`raise NotFound(f"job {id} not found")`),
so a code is spelled once, here, and a caller catches by meaning. Storage's own exceptions and werkzeug's map
onto the same shape below. (The client's `api.client.ApiError` is the other end: what a client sees.)
"""

from __future__ import annotations

import logging
import re
from typing import Any, ClassVar

from flask import Flask, Response, jsonify, request
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from storage.errors import ObjectNotFound, RecordNotFound, StorageError, StoreUnavailable
from storage.keys import BadKey
from workers.contract import validation_messages

log = logging.getLogger("nightshift.api")


class HttpError(Exception):
    """An error answered to the client as JSON with the class's status and code.

    `code` may refine the class's code for answers whose code comes from elsewhere (a worker's `no_face`, a
    decision's `invalid`); the status stays the class's.
    """

    status: ClassVar[int] = 500
    code: str = "internal"
    headers: dict[str, str]

    def __init__(
        self, message: str, details: Any = None, *, code: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message, self.details = message, details
        if code is not None:
            self.code = code
        self.headers = headers or {}


class BadRequest(HttpError):
    """400: a query parameter or header out of range, an unknown form field."""

    status, code = 400, "bad_request"


class BadJson(BadRequest):
    """400: the body (or a JSON form field) is not the JSON object the route takes."""

    code = "bad_json"


class Unauthorized(HttpError):
    """401: no API key, or one the server does not know."""

    status, code = 401, "unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(HttpError):
    status, code = 403, "forbidden"


class NotFound(HttpError):
    status, code = 404, "not_found"


class Conflict(HttpError):
    """409: the resource is not in a state that allows this (a finished job, a face already out)."""

    status, code = 409, "conflict"


class ModelMismatch(Conflict):
    """409: vectors of two embedding spaces would be compared."""

    code = "model_mismatch"


class PayloadTooLarge(HttpError):
    status, code = 413, "too_large"


class TooManyFiles(PayloadTooLarge):
    code = "too_many_files"


class UnsupportedMediaType(HttpError):
    status, code = 415, "unsupported_media_type"


class InvalidRequest(HttpError):
    """422: well-formed, but a value the route cannot use (its message starts with the field)."""

    status, code = 422, "invalid_request"


class IdempotencyMismatch(InvalidRequest):
    code = "idempotency_mismatch"


class ModelUnavailable(InvalidRequest):
    """422: the job needs a model no live worker can run."""

    code = "model_unavailable"


class NoUsablePhoto(InvalidRequest):
    code = "no_usable_photo"


class RateLimited(HttpError):
    status, code = 429, "rate_limited"


class WorkerFailed(HttpError):
    """502: a faces worker raised while answering a synchronous question."""

    status, code = 502, "worker_error"


class Unavailable(HttpError):
    status, code = 503, "unavailable"


class WorkerTimeout(HttpError):
    """504: no faces worker answered a synchronous question in time."""

    status, code = 504, "timeout"


# codes that come from elsewhere (a faces worker's answer, a refused library decision) with their own status
_STATUS_OF_CODE: dict[str, type[HttpError]] = {
    "not_found": NotFound,
    "conflict": Conflict,
    "model_mismatch": ModelMismatch,
}


def coded(code: str, message: str) -> HttpError:
    """The error for a code another layer gave: its own class where one has that status, else a 422 keeping
    the code (a worker's `no_face`, a decision's `same_person`)."""
    return _STATUS_OF_CODE.get(code, InvalidRequest)(message, code=code)


def error_response(status: int, code: str, message: str, details: Any = None) -> tuple[Response, int]:
    body: dict[str, Any] = {"code": code, "message": message}
    body["details"] = details if details is not None else {}
    return jsonify({"error": body}), status


def answer(exc: HttpError) -> tuple[Response, int]:
    """The JSON answer of an HttpError, with its headers."""
    resp, status = error_response(exc.status, exc.code, exc.message, exc.details)
    resp.headers.update(exc.headers)
    return resp, status


def validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic errors as a list of {field, message}, without echoing large inputs back."""
    return [{"field": loc or "(body)", "message": msg} for loc, msg in validation_messages(exc)]


# werkzeug's own answers (routing, body size, form parsing) in the same vocabulary
_WERKZEUG_CODES = {
    400: BadRequest.code,
    401: Unauthorized.code,
    403: Forbidden.code,
    404: NotFound.code,
    405: "method_not_allowed",
    413: PayloadTooLarge.code,
    415: UnsupportedMediaType.code,
    429: RateLimited.code,
}


# URLs whose id has a shape the converters refuse (api.JobId, ...): a mistyped id is "not found", not a
# missing endpoint
_ID_PATHS = (
    (re.compile(r"^/v1/jobs/([^/]+)(/(cancel|results))?$"), "job", "j and 16 hex digits, as `nightshift jobs` lists"),
    (re.compile(r"^/v1/faces/([^/]+)/person$"), "face", "<job>:<item>:<face>, as a person's page lists"),
    (re.compile(r"^/v1/people/([^/]+)$"), "person", "p and 12 hex digits, as `nightshift people` lists"),
)


def _unmatched(path: str) -> str:
    for pattern, what, shape in _ID_PATHS:
        m = pattern.match(path)
        if m:
            return f"{what} {m.group(1)!r} not found ({what} ids look like {shape})"
    return "no such endpoint; see /openapi.json"


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(HttpError, answer)

    @app.errorhandler(ValidationError)
    def _validation(exc: ValidationError) -> tuple[Response, int]:
        details = validation_details(exc)
        first = details[0] if details else {"field": "(body)", "message": "invalid"}
        return answer(InvalidRequest(f"{first['field']}: {first['message']}", details))

    @app.errorhandler(BadKey)
    def _bad_key(exc: BadKey) -> tuple[Response, int]:
        return answer(BadRequest(str(exc), code="bad_key"))

    @app.errorhandler(RecordNotFound)
    @app.errorhandler(ObjectNotFound)
    def _not_found(exc: StorageError) -> tuple[Response, int]:
        return answer(NotFound(str(exc) or "not found"))

    @app.errorhandler(StoreUnavailable)
    def _unavailable(exc: StoreUnavailable) -> tuple[Response, int]:
        log.warning("storage unavailable: %s", exc)
        return answer(Unavailable("storage is temporarily unavailable; retry shortly", headers={"Retry-After": "5"}))

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> tuple[Response, int]:
        status = exc.code or 500
        message = exc.description or exc.name
        if status == 413:
            message = "request too large: upload big archives with POST /v1/uploads (presigned PUT) instead"
        if status == 404 and message and message.startswith("The requested URL"):
            message = _unmatched(request.path)
        if status == 405:
            allow = dict(exc.get_headers()).get("Allow", "")
            # the methods a user would send (HEAD and OPTIONS come with every route), in a stable order
            allowed = sorted(m.strip() for m in allow.split(",") if m.strip() not in ("", "HEAD", "OPTIONS"))
            message = f"{request.method} is not allowed on {request.path}; it takes {', '.join(allowed)}"
        resp, status = error_response(status, _WERKZEUG_CODES.get(status, "http_error"), message)
        for name, value in exc.get_headers():
            if name.lower() != "content-type":  # keep e.g. Allow on 405, drop werkzeug's HTML type
                resp.headers[name] = value
        return resp, status

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error")
        return answer(HttpError("internal error; it has been logged"))
