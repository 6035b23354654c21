"""The OpenAPI 3 document of the whole API, built from the same pydantic models the API validates with."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify
from pydantic import BaseModel

from api.schemas import Error, FacesQuery, JobAnswer, JobsQuery, PageQuery, PeopleQuery, Query, ResultsQuery
from api.uploads import UploadRequest
from storage.names import JobKind
from workers.contract import ClusterParams, FacesParams, IdentifyParams, JobRequest, StyleParams

bp = Blueprint("openapi", __name__)


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema(ref_template="#/components/schemas/{model}")


def _query(model: type[Query]) -> list[dict[str, Any]]:
    """A query model's fields as OpenAPI query parameters (an optional field is one that may be left out, not
    one that may be `null`: a query string has no null)."""
    schema = _schema(model)
    params = []
    for name, prop in schema["properties"].items():
        given = [option for option in prop.get("anyOf", []) if option.get("type") != "null"]
        if len(given) == 1:
            prop = {**{k: v for k, v in prop.items() if k not in ("anyOf", "default")}, **given[0]}
        params.append({"name": name, "in": "query", "required": name in schema.get("required", []), "schema": prop})
    return params


def _errors(*codes: int) -> dict[str, Any]:
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    return {str(c): {"description": "error", "content": error} for c in codes}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _path_id(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", "maxLength": 64}}


def build_spec(extra_paths: dict[str, Any] | None = None) -> dict[str, Any]:
    """The OpenAPI document; feature modules may add their paths."""
    components: dict[str, Any] = {}
    for model in (Error, JobAnswer, JobRequest, StyleParams, FacesParams, IdentifyParams, ClusterParams, UploadRequest):
        schema = _schema(model)
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema
    job_ref = {"$ref": "#/components/schemas/JobAnswer"}
    auth_errors = (401, 429)
    paths: dict[str, Any] = {
        "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": {"200": _json({"type": "object"})}}},
        "/readyz": {
            "get": {
                "summary": "Readiness (Redis and S3 reachable)",
                "security": [],
                "responses": {"200": _json({"type": "object"}), "503": _json({"type": "object"})},
            }
        },
        "/v1/jobs": {
            "post": {
                "summary": "Submit a job (JSON referencing stored objects, or multipart with files)",
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/JobRequest"}},
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["kind"],
                                "properties": {
                                    "kind": {"type": "string", "enum": [k.value for k in JobKind]},
                                    "params": {"type": "string", "description": "JSON object"},
                                    "inputs": {"type": "string", "description": "JSON object"},
                                    "label": {"type": "string"},
                                    "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
                                    "style": {"type": "array", "items": {"type": "string", "format": "binary"}},
                                    "archive": {"type": "array", "items": {"type": "string", "format": "binary"}},
                                },
                            }
                        },
                    },
                },
                "responses": {
                    "202": _json(job_ref, "Accepted; poll the Location"),
                    **_errors(400, 413, 415, 422, *auth_errors),
                },
            },
            "get": {
                "summary": "List jobs, newest first",
                "parameters": _query(JobsQuery),
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["jobs"],
                            "properties": {"jobs": {"type": "array", "items": job_ref}},
                        }
                    ),
                    **_errors(400, *auth_errors),
                },
            },
        },
        "/v1/jobs/{job_id}": {
            "get": {
                "summary": "A job's state, counts, throughput, ETA",
                "parameters": [_path_id("job_id")],
                "responses": {"200": _json(job_ref), **_errors(404, *auth_errors)},
            }
        },
        "/v1/jobs/{job_id}/cancel": {
            "post": {
                "summary": "Cancel (cooperative, between batches)",
                "parameters": [_path_id("job_id")],
                "responses": {"202": _json(job_ref), **_errors(404, 409, *auth_errors)},
            }
        },
        "/v1/jobs/{job_id}/results": {
            "get": {
                "summary": "Items with presigned URLs of their outputs (paginated)",
                "parameters": [_path_id("job_id"), *_query(ResultsQuery)],
                "responses": {
                    "200": _json({"type": "object", "required": ["items"]}),
                    **_errors(400, 404, *auth_errors),
                },
            }
        },
        "/v1/uploads": {
            "post": {
                "summary": "Presigned PUT URLs for large uploads",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/UploadRequest"}}},
                },
                "responses": {"201": _json({"type": "object"}), **_errors(400, 422, *auth_errors)},
            }
        },
        "/v1/styles": {
            "get": {
                "summary": "The 26 built-in styles: index, name, preview URL (null until a style worker rendered them)",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["styles"],
                            "properties": {
                                "styles": {"type": "array", "items": {"type": "object", "required": ["index", "name"]}}
                            },
                        }
                    ),
                    **_errors(*auth_errors),
                },
            }
        },
        "/v1/models": {
            "get": {
                "summary": "Every model: what selects it, whether the live workers have its weights, source, licence",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["models"],
                            "properties": {
                                "models": {
                                    "type": "array",
                                    "items": {"type": "object", "required": ["id", "weights_present"]},
                                }
                            },
                        }
                    ),
                    **_errors(*auth_errors),
                },
            }
        },
    }
    paths.update(extra_paths or {})
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Nightshift API",
            "version": "1.0.0",
            "description": "Submit style-transfer and face-indexing jobs, poll them, download results.",
        },
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
    }


def _also(operation: dict[str, Any], code: str, description: str) -> dict[str, Any]:
    """`operation` with a second success answer."""
    operation["responses"][code] = _json({"type": "object"}, description)
    return operation


def people_paths() -> dict[str, Any]:
    """Faces, galleries and the library's people."""
    from api.faces import SearchRequest, VerifyRequest
    from api.galleries import GalleryRequest
    from api.people import FacePerson, MergeRequest, PersonPatch, ReclusterRequest, RollbackRequest
    from workers.contract import AdaptParams

    obj = {"type": "object"}
    person = {
        "name": "person_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"},
    }
    face = {
        "name": "face_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^j[0-9a-f]{16}:[0-9]{1,9}:[0-9]{1,4}$"},
    }

    def body(model: type) -> dict[str, Any]:
        return {"required": True, "content": {"application/json": {"schema": _schema(model)}}}

    def op(
        summary: str, ok: str = "200", codes: tuple[int, ...] = (400, 401, 404, 409, 422, 429), **extra: Any
    ) -> dict[str, Any]:
        return {"summary": summary, "responses": {ok: _json(obj), **_errors(*codes)}, **extra}

    photos = {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "a": {"type": "string", "format": "binary"},
                    "b": {"type": "string", "format": "binary"},
                },
            }
        }
    }
    enrol = {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["name", "photos"],
                "properties": {
                    "name": {"type": "string"},
                    "photos": {"type": "array", "items": {"type": "string", "format": "binary"}},
                },
            }
        }
    }
    sync = (400, 401, 404, 409, 415, 422, 429, 502, 504)
    return {
        "/v1/faces/verify": {
            "post": op(
                "Same person? (threshold calibrated per embedding space)",
                codes=sync,
                requestBody={"required": True, "content": {**body(VerifyRequest)["content"], **photos}},
            )
        },
        "/v1/faces/search": {
            "post": op(
                "The library's nearest faces, with their person and name", codes=sync, requestBody=body(SearchRequest)
            )
        },
        "/v1/faces/identify": {
            "post": op(
                "Who is in a photo: each face with its library person, or nobody",
                codes=sync,
                requestBody={
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "properties": {"photo": {"type": "string", "format": "binary"}},
                            }
                        }
                    },
                },
            )
        },
        "/v1/faces": {
            "get": op("Faces that belong to nobody yet", codes=(400, 401, 429), parameters=_query(FacesQuery))
        },
        "/v1/faces/{face_id}/person": {
            "post": op(
                "Say who a face is (null: not the person it is with)", parameters=[face], requestBody=body(FacePerson)
            )
        },
        "/v1/galleries": {
            "post": op("Create a gallery", "201", (400, 401, 422, 429), requestBody=body(GalleryRequest)),
            "get": op("Your galleries", codes=(401, 429)),
        },
        "/v1/galleries/{gallery_id}": {
            "get": op("A gallery", codes=(401, 404, 429), parameters=[_path_id("gallery_id")])
        },
        "/v1/galleries/{gallery_id}/people": {
            "post": op(
                "Enrol a named person from 1-20 photos",
                "201",
                sync,
                parameters=[_path_id("gallery_id")],
                requestBody={"required": True, "content": enrol},
            )
        },
        "/v1/library": {"get": op("The library in numbers", codes=(401, 429))},
        "/v1/people": {
            "get": op(
                "The library's people: named first, then by faces",
                codes=(400, 401, 429),
                parameters=_query(PeopleQuery),
            )
        },
        "/v1/people/{person_id}": {
            "get": op(
                "A person and their photos, newest first",
                codes=(400, 401, 404, 429),
                parameters=[person, *_query(PageQuery)],
            ),
            "patch": op(
                "Name, hide or choose the cover of a person", parameters=[person], requestBody=body(PersonPatch)
            ),
        },
        "/v1/people/merge": {"post": op("Two people are one", requestBody=body(MergeRequest))},
        "/v1/people/suggestions": {"get": op("People who may be one person, closest first", codes=(401, 429))},
        "/v1/people/recluster": {
            "post": op(
                "Re-cluster the library (a job); no decision is undone",
                "202",
                requestBody={"required": False, "content": {"application/json": {"schema": _schema(ReclusterRequest)}}},
            )
        },
        "/v1/people/refresh": {"post": op("Fold waiting faces into the library now", "202", (401, 429))},
        "/v1/people/learn": {
            "post": op(
                "Learn a head from your names and decisions (a job); used only when it measurably helps",
                "202",
                (400, 401, 422, 429),
                requestBody={"required": False, "content": {"application/json": {"schema": _schema(AdaptParams)}}},
            ),
            "get": op("What was learnt: each head with its figures and verdict, and the one in use", codes=(401, 429)),
        },
        "/v1/people/learn/rollback": {
            "post": _also(
                op(
                    "Use the head before the one in use (or none) again",
                    codes=(400, 401, 409, 422, 429),
                    requestBody={
                        "required": False,
                        "content": {"application/json": {"schema": _schema(RollbackRequest)}},
                    },
                ),
                "202",
                "saved: the library is busy and the rollback applies when that ends",
            )
        },
    }


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(build_spec(people_paths()))
