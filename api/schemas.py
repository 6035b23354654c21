"""What the API validates and documents with pydantic, like the bodies in workers/contract.py: query strings,
path and header parameters, answers. flask-openapi3 reads them (routes take `query: JobsQuery`, `path: JobPath`,
`body: UploadRequest`) to validate each request and to build /openapi.json; `validation_failed` turns its
errors into the API's own (api/errors.py)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, NoReturn

from flask_openapi3 import APIBlueprint
from flask_openapi3.models import OPENAPI3_REF_PREFIX, Schema
from flask_openapi3.types import ResponseDict
from flask_openapi3.utils import get_model_schema
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from api.context import svc
from api.errors import BadJson, BadRequest, validation_details
from storage.names import ItemState, JobKind, JobState


class Query(BaseModel):
    """A query string. Unknown parameters are ignored; a bad value is a 400 `bad_request` (a body's is a 422)."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)
    where: ClassVar[str] = "query parameter"
    by_name: ClassVar[dict[str, type[Query]]] = {}  # how `validation_failed` knows a parameter from a body

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        Query.by_name[cls.__name__] = cls

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """An optional parameter is one that may be left out, not one that may be `null` (a URL has no null)."""
        schema = super().model_json_schema(*args, **kwargs)
        for name, prop in schema["properties"].items():
            given = [option for option in prop.get("anyOf", []) if option.get("type") != "null"]
            if len(given) == 1:
                schema["properties"][name] = {
                    **{k: v for k, v in prop.items() if k not in ("anyOf", "default")},
                    **given[0],
                }
        return schema


class Path(Query):
    """Path parameters, documented: the URL converters (api.JobId, ...) answer 404 for an id of the wrong shape."""

    where = "path parameter"


class JobPath(Path):
    job_id: str = Field(max_length=64)


class PersonPath(Path):
    person_id: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")


class FacePath(Path):
    face_id: str = Field(pattern=r"^j[0-9a-f]{16}:[0-9]{1,9}:[0-9]{1,4}$")


class GalleryPath(Path):
    gallery_id: str  # any: one that is not a gallery's is a 404


class SubmitHeaders(Query):
    where = "header"
    idempotency_key: str | None = Field(
        None,
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="the same key and request answer the same job",
    )


class PageQuery(Query):
    offset: int = Field(0, ge=0, le=10**9)
    limit: int = Field(100, ge=1, le=1000, description="at most api.page_size_max")


class JobsQuery(Query):
    state: JobState | None = None
    kind: JobKind | None = None
    limit: int = Field(50, ge=1, le=500)
    before: float | None = Field(None, description="the previous page's next_before")


class ResultsQuery(PageQuery):
    state: ItemState | None = None


class PeopleQuery(PageQuery):
    filter: Literal["visible", "all", "named", "unnamed", "hidden"] = "visible"


class FacesQuery(PageQuery):
    unassigned: bool = Field(True, description="only unassigned faces are listed here")


# a body that is not a JSON object at all (flask-openapi3 validates `None` when it is not JSON)
_NOT_AN_OBJECT = ("model_type", "model_attributes_type", "json_invalid", "json_type")


def validation_failed(exc: ValidationError) -> NoReturn:
    """flask-openapi3's `validation_error_callback`: a bad parameter is a 400 `bad_request` naming it ("query
    parameter 'limit' must be between 1 and 500"), a body that is not a JSON object a 400 `bad_json`, a bad
    value in a body a 422 `invalid_request` (the app's ValidationError handler, field first)."""
    model = Query.by_name.get(exc.title)
    if model is None:
        first = exc.errors()[0]
        if not first["loc"] and first["type"] in _NOT_AN_OBJECT:
            raise BadJson("the body must be a JSON object") from None
        raise exc
    details = validation_details(exc)
    name = str(details[0]["field"])
    what, expected = name if model.where == "header" else f"{model.where} '{name}'", _expected(model, name)
    if expected and exc.errors()[0]["type"].endswith("_parsing"):  # "abc" for a number: say what it must be
        message = f"{what}: {details[0]['message'].rstrip('.').lower()}; it {expected}"
    else:
        message = f"{what} {expected}" if expected else f"{what}: {details[0]['message']}"
    raise BadRequest(message, details) from None


def _expected(model: type[Query], name: str) -> str | None:
    """What a bounded value must be ("must be between 1 and 500"), which pydantic says one bound at a time."""
    field = next((f for n, f in model.model_fields.items() if name in (n, f.alias)), None)
    bound = {
        k: getattr(m, k)
        for m in (field.metadata if field else [])
        for k in ("ge", "le", "min_length", "max_length")
        if hasattr(m, k)
    }
    if "ge" in bound and "le" in bound:
        return f"must be between {bound['ge']} and {bound['le']}"
    if "min_length" in bound and "max_length" in bound:
        return f"must be {bound['min_length']} to {bound['max_length']} characters"
    return None


def page_of(query: PageQuery) -> tuple[int, int]:
    """(offset, limit) of a page query; raises BadRequest past the deployment's `api.page_size_max`."""
    most = svc().settings.api.page_size_max
    if query.limit > most:
        raise BadRequest(f"query parameter 'limit': at most {most}")
    return query.offset, query.limit


def components(bp: APIBlueprint, *models: type[BaseModel]) -> None:
    """Document `models` as components of the OpenAPI document (with the models they use)."""
    for model in models:
        schema = get_model_schema(model)
        bp.components_schemas.update({name: Schema(**s) for name, s in schema.pop("$defs", {}).items()})
        bp.components_schemas[model.__name__] = Schema(**schema)


def read_body(
    bp: APIBlueprint, *, json: type[BaseModel] | None = None, form: type[BaseModel] | None = None, required: bool = True
) -> dict[str, Any]:
    """`openapi_extensions` of a route that reads its body itself, where flask-openapi3 cannot say what it
    takes: JSON *or* multipart, or an optional body (an absent body is the defaults, a wrong one still a 400)."""
    content = {}
    for mimetype, model in (("application/json", json), ("multipart/form-data", form)):
        if model is not None:
            components(bp, model)
            content[mimetype] = {"schema": {"$ref": f"{OPENAPI3_REF_PREFIX}/{model.__name__}"}}
    return {"requestBody": {"required": required, "content": content}}


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None


class Error(BaseModel):
    """Every 4xx/5xx answer (api/errors.py)."""

    error: ErrorBody


def errors(*codes: int) -> ResponseDict:
    """Documented error answers (`responses=`); 401 and 429 come with each blueprint (`AUTH_ERRORS`)."""
    return {code: Error for code in codes}


AUTH_ERRORS = errors(401, 429)
SYNC_ERRORS = errors(400, 404, 409, 415, 422, 502, 504)  # questions a faces worker answers
DECISION_ERRORS = errors(400, 404, 409, 422)


class Answer(BaseModel):
    """A JSON object (its fields are described by the operation)."""

    model_config = ConfigDict(extra="allow")


class JobAnswer(BaseModel):
    """A job as the API answers it (`storage.records.Job.to_public`, plus links)."""

    id: str
    kind: str
    state: JobState
    counts: dict[str, int]
    eta_s: float | None = None
    throughput_per_s: float | None = None


class JobList(BaseModel):
    jobs: list[JobAnswer]
    next_before: float | None = Field(None, description="`before` of the next page (null: the last page)")


class ResultsPage(BaseModel):
    items: list[dict[str, Any]]
    artifacts: list[dict[str, Any]] = Field(default_factory=list, description="manifest, contact sheet: job files")
    videos: list[dict[str, Any]] = Field(
        default_factory=list, description="a style job's videos: links to the original and each stylized version"
    )
    next_offset: int | None = None


class Style(BaseModel):
    index: int
    name: str


class StyleList(BaseModel):
    styles: list[Style]


class ModelEntry(BaseModel):
    id: str
    weights_present: bool | None


class ModelList(BaseModel):
    models: list[ModelEntry]
