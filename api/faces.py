"""Faces: verify (1:1) and search (the library's nearest faces, with their people).

Questions that need a model (verify, search, enrol) run on a faces worker through the queue; the API
waits up to `api.sync_timeout_s`.
"""

from __future__ import annotations

from typing import Any

from celery.exceptions import TimeoutError as CeleryTimeout
from flask import Response, jsonify, request
from flask_openapi3 import APIBlueprint
from pydantic import BaseModel, ConfigDict, Field

from api.auth import tenant
from api.context import svc
from api.errors import BadJson, InvalidRequest, UnsupportedMediaType, WorkerFailed, WorkerTimeout, coded
from api.schemas import AUTH_ERRORS, SYNC_ERRORS, Answer, read_body
from storage import keys
from storage.names import JobKind, Queue, TaskName
from storage.records import new_id

bp = APIBlueprint("faces", __name__, url_prefix="/v1", abp_responses=AUTH_ERRORS)


class FaceRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    face: str | None = Field(None, max_length=200, description="a face id from an index: <job>:<item>:<face>")
    key: str | None = Field(None, max_length=1024, description="a photo already in your storage")


class VerifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    a: FaceRef
    b: FaceRef
    threshold: float | None = Field(None, gt=0, le=2)


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    face: str | None = Field(None, max_length=200)
    key: str | None = Field(None, max_length=1024)
    k: int = Field(10, ge=1, le=1000)
    jobs: list[str] | None = Field(None, max_length=1000, description="index jobs to search (default: all)")


class VerifyForm(BaseModel):
    a: bytes
    b: bytes


class IdentifyForm(BaseModel):
    photo: bytes


def json_body(model: type[BaseModel], files: str) -> Any:
    """The JSON body as `model`; a missing or non-object body is a 400 that names both ways to ask."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadJson(f"send a JSON object ({', '.join(model.model_fields)}), or {files} as multipart/form-data")
    return model.model_validate(body)


def ask(task: TaskName, *args: Any) -> dict[str, Any]:
    """Run a question on a faces worker and wait for the answer."""
    timeout = svc().settings.api.sync_timeout_s
    # expires: a question nobody waits for any more is dropped by the worker, not answered late
    result = svc().celery.send_task(task.value, args=list(args), queue=Queue.FACES.value, expires=timeout)
    try:
        answer = result.get(timeout=timeout, propagate=True)
    except CeleryTimeout:
        raise WorkerTimeout(
            f"no faces worker answered within {timeout:.0f}s; is a faces worker "
            "running? Try again, or use a job for large inputs"
        ) from None
    except Exception as exc:
        raise WorkerFailed(f"the faces worker failed: {type(exc).__name__}") from None
    finally:
        result.forget()
    if "error" in answer:
        err = answer["error"]
        raise coded(err["code"], err["message"])
    return dict(answer)


def _require_photos(*fields: str) -> None:
    for field in fields:
        f = request.files.get(field)
        if f is None or not f.filename:
            raise InvalidRequest(f"{field}: missing photo (multipart file field '{field}')")


def _upload_photo(t: str, field: str) -> dict[str, str]:
    f = request.files.get(field)
    if f is None or not f.filename:
        raise InvalidRequest(f"{field}: missing photo (multipart file field '{field}')")
    key = keys.query_photo(t, new_id("q"), f.filename)
    svc().store.put_stream(key, f.stream, -1, f.mimetype or "application/octet-stream")
    return {"key": keys.strip_tenant(t, key)}


def _ref(t: str, ref: FaceRef | dict[str, Any], label: str) -> dict[str, str]:
    ref = ref if isinstance(ref, FaceRef) else FaceRef.model_validate(ref)
    if bool(ref.face) == bool(ref.key):
        raise InvalidRequest(f"{label}: give exactly one of 'face' or 'key'")
    if ref.key:
        keys.relative(ref.key)
        return {"key": ref.key}
    return {"face": str(ref.face)}


def _cleanup(t: str, refs: list[dict[str, str]]) -> None:
    for ref in refs:
        if ref.get("key", "").startswith(keys.QUERY_FOLDER):
            try:
                svc().store.delete(keys.tenant_key(t, ref["key"]))
            except Exception:  # best effort: tmp/ is also expired by the bucket's lifecycle
                pass


@bp.post(
    "/faces/verify",
    responses={200: Answer, **SYNC_ERRORS},
    openapi_extensions=read_body(bp, json=VerifyRequest, form=VerifyForm),
)
def verify() -> Response:
    """Are two faces the same person? Multipart files `a` and `b`, or JSON face ids / keys."""
    t = tenant()
    if request.mimetype == "multipart/form-data":
        threshold = _float_form("threshold")  # everything is checked before anything is stored
        _require_photos("a", "b")
        refs = [_upload_photo(t, "a"), _upload_photo(t, "b")]
    else:
        req = json_body(VerifyRequest, "photos a and b")
        refs, threshold = [_ref(t, req.a, "a"), _ref(t, req.b, "b")], req.threshold
    try:
        answer = ask(TaskName.VERIFY, t, refs[0], refs[1], threshold)
    finally:
        _cleanup(t, refs)
    return jsonify(answer)


def _float_form(name: str) -> float | None:
    raw = request.form.get(name)
    if raw in (None, ""):
        return None
    try:
        value = float(raw)
    except ValueError:
        raise InvalidRequest(f"{name}: must be a number") from None
    if not 0 < value <= 2:
        raise InvalidRequest(f"{name}: must be in (0, 2]")
    return value


@bp.post("/faces/search", responses={200: Answer, **SYNC_ERRORS}, openapi_extensions=read_body(bp, json=SearchRequest))
def search() -> Response:
    """The nearest faces to a query face across your indexes: multipart `photo` (+ `k`), or JSON."""
    t = tenant()
    if request.mimetype == "multipart/form-data":
        try:
            k = int(request.form.get("k") or 10)
        except ValueError:
            raise InvalidRequest("k: must be an integer") from None
        if not 1 <= k <= 1000:
            raise InvalidRequest("k: must be between 1 and 1000")
        jobs = [j for j in (request.form.get("jobs") or "").split(",") if j] or None
        for job_id in jobs or ():
            _faces_job(t, job_id)
        _require_photos("photo")
        ref = _upload_photo(t, "photo")  # stored last: a refused request leaves nothing under tmp/
    else:
        req = json_body(SearchRequest, "the field photo")
        ref, k, jobs = _ref(t, {"face": req.face, "key": req.key}, "query"), req.k, req.jobs
        for job_id in jobs or ():
            _faces_job(t, job_id)
    try:
        answer = ask(TaskName.SEARCH, t, ref, k, jobs)
    finally:
        _cleanup(t, [ref])
    store = svc().store
    for m in answer["matches"]:
        thumb = m.pop("thumb", None)
        m["thumbnail_url"] = store.presigned_get(keys.tenant_key(t, thumb)) if thumb else None
        m["photo_url"] = store.presigned_get(keys.tenant_key(t, m["photo"]))
    return jsonify(answer)


def _faces_job(t: str, job_id: str) -> None:
    job = svc().records.get_job(job_id, t)
    if job.kind != JobKind.FACES:
        raise InvalidRequest(f"job {job_id} is not a faces index job")


@bp.post("/faces/identify", responses={200: Answer, **SYNC_ERRORS}, openapi_extensions=read_body(bp, form=IdentifyForm))
def identify_photo() -> Response:
    """Who is in a photo (multipart `photo`): each face with the library person it clearly is, or nobody."""
    t = tenant()
    if request.mimetype != "multipart/form-data":
        raise UnsupportedMediaType("send multipart/form-data with a 'photo' file")
    _require_photos("photo")
    ref = _upload_photo(t, "photo")
    try:
        answer = ask(TaskName.IDENTIFY_PHOTO, t, ref)
    finally:
        _cleanup(t, [ref])
    return jsonify(answer)
