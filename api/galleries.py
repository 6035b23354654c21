"""Galleries: one-shot enrolment of named people from a few photos each, versioned in the store; `identify`
jobs name the library's faces from a gallery."""

from __future__ import annotations

from flask import Response, jsonify, request
from flask_openapi3 import APIBlueprint
from pydantic import BaseModel, ConfigDict, Field

from api.auth import tenant
from api.context import svc
from api.errors import InvalidRequest, ModelMismatch, NotFound, NoUsablePhoto, UnsupportedMediaType
from api.faces import ask
from api.schemas import AUTH_ERRORS, SYNC_ERRORS, Answer, GalleryPath, errors, read_body
from storage import keys
from storage.errors import ObjectNotFound
from storage.galleries import Galleries, GalleryDoc
from storage.galleries import ModelMismatch as SpacesDiffer
from storage.names import TaskName
from storage.records import new_id

bp = APIBlueprint("galleries", __name__, url_prefix="/v1", abp_responses=AUTH_ERRORS)


class GalleryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)


class EnrolForm(BaseModel):
    name: str
    photos: list[bytes]


def galleries() -> Galleries:
    return Galleries(svc().store, tenant())


def _gallery(gallery_id: str) -> GalleryDoc:
    try:
        return galleries().latest(gallery_id)
    except ObjectNotFound:
        raise NotFound(f"gallery {gallery_id} not found") from None


@bp.post("/galleries", summary="Create a gallery", responses={201: Answer, **errors(400, 422)})
def create_gallery(body: GalleryRequest) -> tuple[Response, int]:
    return jsonify(galleries().create(new_id("g"), body.name).public()), 201


@bp.get("/galleries", summary="Your galleries", responses={200: Answer})
def list_galleries() -> Response:
    return jsonify({"galleries": [g.public() for g in galleries().all()]})


@bp.get("/galleries/<gallery_id>", summary="A gallery", responses={200: Answer, **errors(404)})
def get_gallery(path: GalleryPath) -> Response:
    return jsonify(_gallery(path.gallery_id).public())


@bp.post(
    "/galleries/<gallery_id>/people",
    responses={201: Answer, **SYNC_ERRORS},
    openapi_extensions=read_body(bp, form=EnrolForm),
)
def enroll_person(path: GalleryPath) -> tuple[Response, int]:
    """Enrol a named person from one or more photos (multipart: `name`, `photos`); a new gallery version."""
    t, gallery_id = tenant(), path.gallery_id
    _gallery(gallery_id)
    if request.mimetype != "multipart/form-data":
        raise UnsupportedMediaType("send multipart/form-data with 'name' and 'photos'")
    name = (request.form.get("name") or "").strip()
    if not name or len(name) > 200:
        raise InvalidRequest("name: give the person's name (1-200 characters)")
    files = [f for f in request.files.getlist("photos") if f.filename]
    if not 1 <= len(files) <= 20:
        raise InvalidRequest("photos: give 1 to 20 photos of this person, one face each")
    stored = []
    for f in files:
        key = keys.gallery_input(t, gallery_id, new_id("p"), f.filename or "photo")
        svc().store.put_stream(key, f.stream, -1, f.mimetype or "application/octet-stream")
        stored.append(keys.strip_tenant(t, key))
    answer = ask(TaskName.ENROLL, t, stored)
    if not answer["embeddings"]:
        raise NoUsablePhoto("none of the photos shows exactly one face", answer["errors"])
    failed = {e["photo"] for e in answer["errors"]}
    try:
        doc = galleries().enrol(
            gallery_id, name, answer["embeddings"], [k for k in stored if k not in failed], answer["model"]
        )
    except SpacesDiffer as exc:
        raise ModelMismatch(str(exc)) from None
    return jsonify({**doc.public(), "errors": answer["errors"]}), 201
