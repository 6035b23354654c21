"""Faces become people: verify, search, galleries (one-shot enrolment), people and their labels.

Questions that need a model (verify, search, enrol) run on a faces worker through the queue; the API
waits up to `api.sync_timeout_s`. Labels are JSON documents in the store, changed under a lock.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery.exceptions import TimeoutError as CeleryTimeout
from flask import Blueprint, Response, current_app, jsonify, request
from flask.blueprints import BlueprintSetupState
from pydantic import BaseModel, ConfigDict, Field
from werkzeug.routing import BaseConverter

from api.auth import tenant
from api.errors import ApiError
from storage import keys
from storage.coordination import LockBusy
from storage.errors import ObjectNotFound
from storage.names import FINISHED_STATES, JobKind, Queue, TaskName
from storage.records import new_id


class PersonId(BaseConverter):
    """A person id; never `merge`, so `/people/merge` is only ever the merge endpoint (and its Allow
    header lists only POST)."""

    regex = r"(?!merge$)[A-Za-z0-9_.\-]{1,64}"


bp = Blueprint("faces", __name__, url_prefix="/v1")


@bp.record_once
def _add_converter(state: BlueprintSetupState) -> None:
    state.app.url_map.converters.setdefault("person", PersonId)
PEOPLE_NAME = "people.json"
FACES_SHOWN = 24
_ERROR_STATUS = {"no_face": 422, "several_faces": 422, "bad_image": 422, "bad_index": 422, "not_found": 404,
                 "model_mismatch": 409}


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


class GalleryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)


class NameRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=200, description="empty to clear the name")


class MergeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    into: str = Field(min_length=1, max_length=64)
    from_: str = Field(alias="from", min_length=1, max_length=64)


class RemoveFaceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    face: str = Field(min_length=1, max_length=200)


def svc() -> Any:
    return current_app.extensions["nightshift"]


def _json_body(model: type[BaseModel]) -> Any:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "bad_json", "the body must be a JSON object")
    return model.model_validate(body)


def _ask(task: TaskName, *args: Any) -> dict[str, Any]:
    """Run a question on a faces worker and wait for the answer."""
    timeout = svc().settings.api.sync_timeout_s
    # expires: a question nobody waits for any more is dropped by the worker, not answered late
    result = svc().celery.send_task(task.value, args=list(args), queue=Queue.FACES.value, expires=timeout)
    try:
        answer = result.get(timeout=timeout, propagate=True)
    except CeleryTimeout:
        raise ApiError(504, "timeout", f"no faces worker answered within {timeout:.0f}s; is a faces worker "
                       "running? Try again, or use a job for large inputs") from None
    except Exception as exc:
        raise ApiError(502, "worker_error", f"the faces worker failed: {type(exc).__name__}") from None
    finally:
        result.forget()
    if "error" in answer:
        err = answer["error"]
        raise ApiError(_ERROR_STATUS.get(err["code"], 422), err["code"], err["message"])
    return dict(answer)


def _require_photos(*fields: str) -> None:
    for field in fields:
        f = request.files.get(field)
        if f is None or not f.filename:
            raise ApiError(422, "invalid_request", f"{field}: missing photo (multipart file field '{field}')")


def _upload_photo(t: str, field: str) -> dict[str, str]:
    f = request.files.get(field)
    if f is None or not f.filename:
        raise ApiError(422, "invalid_request", f"{field}: missing photo (multipart file field '{field}')")
    key = keys.tenant_key(t, f"tmp/{new_id('q')}/{keys.safe_name(f.filename)}")
    svc().store.put_stream(key, f.stream, -1, f.mimetype or "application/octet-stream")
    return {"key": keys.strip_tenant(t, key)}


def _ref(t: str, ref: FaceRef | dict[str, Any], label: str) -> dict[str, str]:
    ref = ref if isinstance(ref, FaceRef) else FaceRef.model_validate(ref)
    if bool(ref.face) == bool(ref.key):
        raise ApiError(422, "invalid_request", f"{label}: give exactly one of 'face' or 'key'")
    if ref.key:
        keys.relative(ref.key)
        return {"key": ref.key}
    return {"face": str(ref.face)}


def _cleanup(t: str, refs: list[dict[str, str]]) -> None:
    for ref in refs:
        if ref.get("key", "").startswith("tmp/"):
            try:
                svc().store.delete(keys.tenant_key(t, ref["key"]))
            except Exception:  # best effort: tmp/ is also expired by the bucket's lifecycle
                pass


@bp.post("/faces/verify")
def verify() -> Response:
    """Are two faces the same person? Multipart files `a` and `b`, or JSON face ids / keys."""
    t = tenant()
    if request.mimetype == "multipart/form-data":
        threshold = _float_form("threshold")  # everything is checked before anything is stored
        _require_photos("a", "b")
        refs = [_upload_photo(t, "a"), _upload_photo(t, "b")]
    else:
        req = _json_body(VerifyRequest)
        refs, threshold = [_ref(t, req.a, "a"), _ref(t, req.b, "b")], req.threshold
    try:
        answer = _ask(TaskName.VERIFY, t, refs[0], refs[1], threshold)
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
        raise ApiError(422, "invalid_request", f"{name}: must be a number") from None
    if not 0 < value <= 2:
        raise ApiError(422, "invalid_request", f"{name}: must be in (0, 2]")
    return value


@bp.post("/faces/search")
def search() -> Response:
    """The nearest faces to a query face across your indexes: multipart `photo` (+ `k`), or JSON."""
    t = tenant()
    if request.mimetype == "multipart/form-data":
        try:
            k = int(request.form.get("k") or 10)
        except ValueError:
            raise ApiError(422, "invalid_request", "k: must be an integer") from None
        if not 1 <= k <= 1000:
            raise ApiError(422, "invalid_request", "k: must be between 1 and 1000")
        jobs = [j for j in (request.form.get("jobs") or "").split(",") if j] or None
        for job_id in jobs or ():
            _faces_job(t, job_id)
        _require_photos("photo")
        ref = _upload_photo(t, "photo")  # stored last: a refused request leaves nothing under tmp/
    else:
        req = _json_body(SearchRequest)
        ref, k, jobs = _ref(t, {"face": req.face, "key": req.key}, "query"), req.k, req.jobs
        for job_id in jobs or ():
            _faces_job(t, job_id)
    try:
        answer = _ask(TaskName.SEARCH, t, ref, k, jobs)
    finally:
        _cleanup(t, [ref])
    store = svc().store
    for m in answer["matches"]:
        m["thumbnail_url"] = store.presigned_get(keys.face_thumbnail_of(t, m["face"]))
    return jsonify(answer)


def _faces_job(t: str, job_id: str) -> None:
    job = svc().records.get_job(job_id, t)
    if job.kind != JobKind.FACES:
        raise ApiError(422, "invalid_request", f"job {job_id} is not a faces index job")


# -- galleries -------------------------------------------------------------------------------------

@contextmanager
def _lock(name: str) -> Iterator[None]:
    """The record's lock (redis-py's Lock, released only by its holder); 409 when it stays busy."""
    try:
        with svc().records.hold_lock(name, ttl=30, wait=10):
            yield
    except LockBusy:
        raise ApiError(409, "conflict", "another change to the same record is in progress; retry") from None


def _gallery(t: str, gallery_id: str) -> dict[str, Any]:
    versions = [o.key for o in svc().store.list(keys.gallery_prefix(t, keys.safe_name(gallery_id)))]
    if not versions:
        raise ApiError(404, "not_found", f"gallery {gallery_id} not found")
    return dict(svc().store.get_json(max(versions)))


def _gallery_public(doc: dict[str, Any]) -> dict[str, Any]:
    return {"id": doc["id"], "name": doc["name"], "version": doc["version"], "model": doc.get("model") or None,
            "people": [{"name": n, "photos": len(p["photos"]), "embeddings": len(p["embeddings"])}
                       for n, p in sorted(doc["people"].items())]}


@bp.post("/galleries")
def create_gallery() -> tuple[Response, int]:
    t = tenant()
    req = _json_body(GalleryRequest)
    gallery_id = new_id("g")
    doc = {"id": gallery_id, "name": req.name, "version": 0, "model": "", "people": {}}
    svc().store.put_json(keys.gallery(t, gallery_id, 0), doc)
    return jsonify(_gallery_public(doc)), 201


@bp.get("/galleries")
def list_galleries() -> Response:
    t = tenant()
    latest: dict[str, str] = {}
    for obj in svc().store.list(f"{keys.tenant_root(t)}galleries/"):
        gid = obj.key.split("/")[-2]
        latest[gid] = max(latest.get(gid, ""), obj.key)
    docs = [svc().store.get_json(k) for k in latest.values()]
    return jsonify({"galleries": [_gallery_public(d) for d in docs]})


@bp.get("/galleries/<gallery_id>")
def get_gallery(gallery_id: str) -> Response:
    return jsonify(_gallery_public(_gallery(tenant(), gallery_id)))


@bp.post("/galleries/<gallery_id>/people")
def enroll_person(gallery_id: str) -> tuple[Response, int]:
    """Enrol a named person from one or more photos (multipart: `name`, `photos`); a new gallery version."""
    t = tenant()
    _gallery(t, gallery_id)
    if request.mimetype != "multipart/form-data":
        raise ApiError(415, "unsupported_media_type", "send multipart/form-data with 'name' and 'photos'")
    name = (request.form.get("name") or "").strip()
    if not name or len(name) > 200:
        raise ApiError(422, "invalid_request", "name: give the person's name (1-200 characters)")
    files = [f for f in request.files.getlist("photos") if f.filename]
    if not 1 <= len(files) <= 20:
        raise ApiError(422, "invalid_request", "photos: give 1 to 20 photos of this person, one face each")
    stored = []
    for f in files:
        key = keys.tenant_key(t, f"galleries-input/{gallery_id}/{new_id('p')}-{keys.safe_name(f.filename or 'p')}")
        svc().store.put_stream(key, f.stream, -1, f.mimetype or "application/octet-stream")
        stored.append(keys.strip_tenant(t, key))
    answer = _ask(TaskName.ENROLL, t, stored)
    if not answer["embeddings"]:
        raise ApiError(422, "no_usable_photo", "none of the photos shows exactly one face", answer["errors"])
    with _lock(f"gallery:{t}:{gallery_id}"):
        doc = _gallery(t, gallery_id)
        if doc.get("model") and doc["model"] != answer["model"]:
            raise ApiError(409, "model_mismatch", f"the gallery uses {doc['model']}, the worker {answer['model']}")
        person = doc["people"].setdefault(name, {"embeddings": [], "photos": []})
        good = [k for k in stored if k not in {e["photo"] for e in answer["errors"]}]
        person["embeddings"] += answer["embeddings"]
        person["photos"] += good
        doc.update(version=doc["version"] + 1, model=answer["model"])
        svc().store.put_json(keys.gallery(t, gallery_id, doc["version"]), doc)
    return jsonify({**_gallery_public(doc), "errors": answer["errors"]}), 201


# -- people and labels ---------------------------------------------------------------------------

def _labels(t: str) -> Any:
    from workers.people.labels import Labels  # pure Python + numpy: no model library

    try:
        return Labels.from_json(svc().store.get_bytes(keys.labels(t)))
    except ObjectNotFound:
        return Labels()


def _save_labels(t: str, labels: Any) -> None:
    text = labels.to_json().encode()
    svc().store.put_bytes(keys.labels(t), text, "application/json")
    svc().store.put_bytes(f"{keys.tenant_root(t)}labels/history/v{labels.version:06d}.json", text,
                          "application/json")


def _people_doc(t: str, job_id: str) -> dict[str, Any]:
    job = svc().records.get_job(job_id, t)
    if job.kind != JobKind.CLUSTER:
        raise ApiError(422, "invalid_request", f"job {job_id} is a {job.kind} job; people come from cluster jobs")
    if job.state not in FINISHED_STATES:
        raise ApiError(409, "not_ready", f"job {job_id} is still {job.state}")
    try:
        return dict(svc().store.get_json(keys.job_artifact(t, job_id, PEOPLE_NAME)))
    except ObjectNotFound:
        raise ApiError(404, "not_found", f"job {job_id} produced no people ({job.error or 'see its items'})") from None


def _apply_labels(doc: dict[str, Any], labels: Any) -> list[dict[str, Any]]:
    """People as users see them now: names, merges and removed faces applied since the clustering."""
    merged: dict[str, dict[str, Any]] = {}
    for p in doc["people"]:
        pid = labels.resolve(p["id"])
        label = labels.label(pid)
        faces = [f for f in p["faces"] if f not in label.rejected]
        into = merged.setdefault(pid, {"id": pid, "name": label.name or p.get("name"), "faces": [],
                                       "representative": p["representative"], "photos": set()})
        into["faces"] += faces
        into["photos"] |= set(p["photos"])
    out = []
    for p in merged.values():
        p["photo_count"] = len(p.pop("photos"))
        out.append(p)
    return sorted(out, key=lambda p: (-len(p["faces"]), p["id"]))


@bp.get("/jobs/<job_id>/people")
def job_people(job_id: str) -> Response:
    t = tenant()
    doc = _people_doc(t, job_id)
    store = svc().store
    people = []
    for p in _apply_labels(doc, _labels(t)):
        faces = [{"id": f, "thumbnail_url": store.presigned_get(keys.face_thumbnail_of(t, f))}
                 for f in p["faces"][:FACES_SHOWN]]
        people.append({"id": p["id"], "name": p["name"], "face_count": len(p["faces"]), "faces": faces,
                       "photo_count": p["photo_count"], "representative": p["representative"],
                       "sheet_url": store.presigned_get(keys.job_artifact(t, job_id, f"person-{p['id']}.jpg"))})
    return jsonify({"job": job_id, "people": people})


def _person(t: str, person_id: str, labels: Any) -> Any:
    from workers.people.labels import Person

    pid = labels.resolve(person_id)
    records = svc().records
    job_id = records.person_job(t, pid) or records.person_job(t, person_id)
    if not job_id:
        raise ApiError(404, "not_found", f"person {person_id} not found")
    for person in _apply_labels(_people_doc(t, job_id), labels):
        if person["id"] == pid:
            return Person(pid, person["name"], tuple(person["faces"]), person["representative"],
                          person["photo_count"])
    raise ApiError(404, "not_found", f"person {person_id} not found")


def _person_public(person: Any) -> dict[str, Any]:
    return {"id": person.id, "name": person.name, "face_count": len(person.face_ids)}


@bp.put("/people/<person:person_id>")
def name_person(person_id: str) -> Response:
    """Name a person; the name sticks to these faces across re-clustering."""
    t = tenant()
    req = _json_body(NameRequest)
    with _lock(f"labels:{t}"):
        labels = _labels(t)
        person = _person(t, person_id, labels)
        labels = labels.name(person, req.name)
        _save_labels(t, labels)
    return jsonify({**_person_public(person), "name": req.name.strip() or None, "labels_version": labels.version})


@bp.post("/people/merge")
def merge_people() -> Response:
    t = tenant()
    req = _json_body(MergeRequest)
    with _lock(f"labels:{t}"):
        labels = _labels(t)
        a, b = _person(t, req.into, labels), _person(t, req.from_, labels)
        if a.id == b.id:
            raise ApiError(409, "conflict", "these are already the same person")
        labels = labels.merge(a, b)
        _save_labels(t, labels)
    return jsonify({"id": labels.resolve(a.id), "merged": b.id, "labels_version": labels.version})


@bp.post("/people/<person:person_id>/remove")
def remove_face(person_id: str) -> Response:
    """Move a face out of a person (it will not join them again)."""
    t = tenant()
    req = _json_body(RemoveFaceRequest)
    with _lock(f"labels:{t}"):
        labels = _labels(t)
        person = _person(t, person_id, labels)
        if req.face not in person.face_ids:
            raise ApiError(422, "invalid_request", f"face {req.face} is not in person {person_id}")
        labels = labels.move_out(req.face, person)
        _save_labels(t, labels)
    return jsonify({"id": person.id, "removed": req.face, "labels_version": labels.version})


def _spec() -> dict[str, Any]:
    """OpenAPI paths of this blueprint (merged into /openapi.json)."""
    from api.openapi import _errors, _json, _path_id, _schema

    obj = {"type": "object"}

    def body(model: type[BaseModel]) -> dict[str, Any]:
        return {"required": True, "content": {"application/json": {"schema": _schema(model)}}}

    mp = {"multipart/form-data": {"schema": {"type": "object", "properties": {
        "a": {"type": "string", "format": "binary"}, "b": {"type": "string", "format": "binary"}}}}}
    return {
        "/v1/faces/verify": {"post": {"summary": "Same person? (threshold calibrated on LFW, see docs)",
                                      "requestBody": {"required": True, "content": {
                                          **body(VerifyRequest)["content"], **mp}},
                                      "responses": {"200": _json(obj), **_errors(400, 401, 404, 409, 415, 422,
                                                                                  429, 502, 504)}}},
        "/v1/faces/search": {"post": {"summary": "Top-k nearest faces across your indexes",
                                      "requestBody": body(SearchRequest),
                                      "responses": {"200": _json(obj), **_errors(400, 401, 404, 409, 415, 422,
                                                                                  429, 502, 504)}}},
        "/v1/galleries": {"post": {"summary": "Create a gallery", "requestBody": body(GalleryRequest),
                                   "responses": {"201": _json(obj), **_errors(400, 401, 422, 429)}},
                          "get": {"summary": "Your galleries", "responses": {"200": _json(obj),
                                                                             **_errors(401, 429)}}},
        "/v1/galleries/{gallery_id}": {"get": {"summary": "A gallery", "parameters": [_path_id("gallery_id")],
                                               "responses": {"200": _json(obj), **_errors(401, 404, 429)}}},
        "/v1/jobs/{job_id}/people": {"get": {"summary": "People of a cluster job, with labels applied",
                                             "parameters": [_path_id("job_id")],
                                             "responses": {"200": _json(obj),
                                                           **_errors(401, 404, 409, 422, 429)}}},
        "/v1/people/{person_id}": {"put": {"summary": "Name a person", "parameters": [_path_id("person_id")],
                                           "requestBody": body(NameRequest),
                                           "responses": {"200": _json(obj), **_errors(400, 401, 404, 409,
                                                                                      422, 429)}}},
        "/v1/people/merge": {"post": {"summary": "Merge two people", "requestBody": body(MergeRequest),
                                      "responses": {"200": _json(obj), **_errors(400, 401, 404, 409, 422, 429)}}},
        "/v1/people/{person_id}/remove": {"post": {"summary": "Move a face out of a person",
                                                   "parameters": [_path_id("person_id")],
                                                   "requestBody": body(RemoveFaceRequest),
                                                   "responses": {"200": _json(obj),
                                                                 **_errors(400, 401, 404, 409, 422, 429)}}},
    }


def register_spec() -> None:
    from api.openapi import EXTRA_PATHS

    EXTRA_PATHS.update(_spec())


register_spec()
