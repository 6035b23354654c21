"""The OpenAPI 3 document of the whole API, built from the same pydantic models the API validates with."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from api.uploads import UploadRequest
from storage.names import ItemState, JobKind, JobState
from workers.contract import ClusterParams, FacesParams, IdentifyParams, JobRequest, StyleParams

bp = Blueprint("openapi", __name__)
JOB_STATES = [s.value for s in JobState]
JOB_KINDS = [k.value for k in JobKind]
ITEM_STATES = [s.value for s in ItemState]

ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["code", "message"],
    "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "details": {}}}}}
JOB = {"type": "object", "required": ["id", "kind", "state", "counts"], "properties": {
    "id": {"type": "string"}, "kind": {"type": "string"},
    "state": {"type": "string", "enum": [s.value for s in JobState]},
    "counts": {"type": "object"}, "eta_s": {"type": ["number", "null"]},
    "throughput_per_s": {"type": ["number", "null"]}}}


def _schema(model: Any) -> dict[str, Any]:
    return model.model_json_schema(ref_template="#/components/schemas/{model}")  # type: ignore[no-any-return]


def _errors(*codes: int) -> dict[str, Any]:
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    return {str(c): {"description": "error", "content": error} for c in codes}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _path_id(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", "maxLength": 64}}


def build_spec(extra_paths: dict[str, Any] | None = None) -> dict[str, Any]:
    """The OpenAPI document; feature modules may add their paths."""
    components: dict[str, Any] = {"Error": ERROR, "Job": JOB}
    for model in (JobRequest, StyleParams, FacesParams, IdentifyParams, ClusterParams, UploadRequest):
        schema = _schema(model)
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema
    job_ref = {"$ref": "#/components/schemas/Job"}
    auth_errors = (401, 429)
    paths: dict[str, Any] = {
        "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": {"200": _json({"type": "object"})}}},
        "/readyz": {"get": {"summary": "Readiness (Redis and S3 reachable)", "security": [],
                            "responses": {"200": _json({"type": "object"}), "503": _json({"type": "object"})}}},
        "/v1/jobs": {
            "post": {
                "summary": "Submit a job (JSON referencing stored objects, or multipart with files)",
                "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                                "schema": {"type": "string", "minLength": 1, "maxLength": 200}}],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/JobRequest"}},
                    "multipart/form-data": {"schema": {"type": "object", "required": ["kind"], "properties": {
                        "kind": {"type": "string", "enum": [k.value for k in JobKind]},
                        "params": {"type": "string", "description": "JSON object"},
                        "inputs": {"type": "string", "description": "JSON object"},
                        "label": {"type": "string"},
                        "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
                        "style": {"type": "array", "items": {"type": "string", "format": "binary"}},
                        "archive": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}},
                "responses": {"202": _json(job_ref, "Accepted; poll the Location"),
                              **_errors(400, 413, 415, 422, *auth_errors)},
            },
            "get": {
                "summary": "List jobs, newest first",
                "parameters": [
                    {"name": "state", "in": "query", "schema": {"type": "string", "enum": JOB_STATES}},
                    {"name": "kind", "in": "query", "schema": {"type": "string", "enum": JOB_KINDS}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                    {"name": "before", "in": "query", "schema": {"type": "number"}}],
                "responses": {"200": _json({"type": "object", "required": ["jobs"], "properties": {
                    "jobs": {"type": "array", "items": job_ref}}}), **_errors(400, *auth_errors)},
            },
        },
        "/v1/jobs/{job_id}": {"get": {"summary": "A job's state, counts, throughput, ETA",
                                      "parameters": [_path_id("job_id")],
                                      "responses": {"200": _json(job_ref), **_errors(404, *auth_errors)}}},
        "/v1/jobs/{job_id}/cancel": {"post": {"summary": "Cancel (cooperative, between batches)",
                                              "parameters": [_path_id("job_id")],
                                              "responses": {"202": _json(job_ref), **_errors(404, 409, *auth_errors)}}},
        "/v1/jobs/{job_id}/results": {"get": {
            "summary": "Items with presigned URLs of their outputs (paginated)",
            "parameters": [_path_id("job_id"),
                           {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                           {"name": "limit", "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                           {"name": "state", "in": "query", "schema": {"type": "string", "enum": ITEM_STATES}}],
            "responses": {"200": _json({"type": "object", "required": ["items"]}), **_errors(400, 404, *auth_errors)}}},
        "/v1/uploads": {"post": {
            "summary": "Presigned PUT URLs for large uploads",
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/UploadRequest"}}}},
            "responses": {"201": _json({"type": "object"}), **_errors(400, 422, *auth_errors)}}},
        "/v1/styles": {"get": {
            "summary": "The 26 built-in styles: index, name, preview URL (null until a style worker rendered them)",
            "responses": {"200": _json({"type": "object", "required": ["styles"], "properties": {
                "styles": {"type": "array", "items": {"type": "object", "required": ["index", "name"]}}}}),
                **_errors(*auth_errors)}}},
        "/v1/models": {"get": {
            "summary": "Every model: what selects it, whether the live workers have its weights, source, licence",
            "responses": {"200": _json({"type": "object", "required": ["models"], "properties": {
                "models": {"type": "array", "items": {"type": "object", "required": ["id", "weights_present"]}}}}),
                **_errors(*auth_errors)}}},
    }
    paths.update(extra_paths or {})
    return {
        "openapi": "3.1.0",
        "info": {"title": "Nightshift API", "version": "1.0.0",
                 "description": "Submit style-transfer and face-indexing jobs, poll them, download results."},
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
    }


EXTRA_PATHS: dict[str, Any] = {}


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(build_spec(EXTRA_PATHS))
