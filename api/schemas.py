"""Query strings and answers the API validates and documents with pydantic, like the bodies in
workers/contract.py: one model per shape, read by the route and by the OpenAPI document (api/openapi.py)."""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from flask import request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from api.context import svc
from api.errors import BadRequest, validation_details
from storage.names import ItemState, JobKind, JobState

Q = TypeVar("Q", bound="Query")


class Query(BaseModel):
    """A query string. Unknown parameters are ignored; a bad value is a 400 `bad_request` (a body's is a 422)."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


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


def parse_query(model: type[Q]) -> Q:
    """The request's query string as `model`; raises BadRequest naming the first bad parameter."""
    try:
        return model.model_validate(request.args.to_dict())
    except ValidationError as exc:
        details = validation_details(exc)
        name = str(details[0]["field"])
        expected = _expected(model, name)
        message = (
            f"query parameter '{name}' {expected}" if expected else f"query parameter '{name}': {details[0]['message']}"
        )
        raise BadRequest(message, details) from None


def _expected(model: type[Query], name: str) -> str | None:
    """What a bounded number must be ("must be between 1 and 500"), which pydantic says one bound at a time."""
    field = model.model_fields.get(name)
    lo = next((m.ge for m in field.metadata if hasattr(m, "ge")), None) if field else None
    hi = next((m.le for m in field.metadata if hasattr(m, "le")), None) if field else None
    return f"must be between {lo} and {hi}" if lo is not None and hi is not None else None


def page_of(query: PageQuery) -> tuple[int, int]:
    """(offset, limit) of a page query; raises BadRequest past the deployment's `api.page_size_max`."""
    most = svc().settings.api.page_size_max
    if query.limit > most:
        raise BadRequest(f"query parameter 'limit': at most {most}")
    return query.offset, query.limit


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None


class Error(BaseModel):
    """Every 4xx/5xx answer (api/errors.py)."""

    error: ErrorBody


class JobAnswer(BaseModel):
    """A job as the API answers it (`storage.records.Job.to_public`, plus links)."""

    id: str
    kind: str
    state: JobState
    counts: dict[str, int]
    eta_s: float | None = None
    throughput_per_s: float | None = None
