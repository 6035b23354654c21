"""Galleries: one-shot enrolment of named people from a few photos each, versioned in the store; `identify`
jobs name the library's faces from a gallery."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel, ConfigDict, Field

from api.auth import tenant
from api.errors import ApiError
from api.faces import ask, json_body, svc
from storage import keys
from storage.coordination import LockBusy
from storage.names import TaskName
from storage.records import new_id

bp = Blueprint("galleries", __name__, url_prefix="/v1")


class GalleryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)


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
    req = json_body(GalleryRequest)
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
    answer = ask(TaskName.ENROLL, t, stored)
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
