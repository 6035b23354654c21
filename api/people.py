"""People: the tenant's library of people, which every faces job feeds, and the decisions users make.

Reads come from the library's newest version in the object store. A decision (name, hide, cover, merge,
a face moved out or assigned) is checked against the library, written to the decision log, then
committed; when the library is busy (a re-cluster, a night's faces being added) the answer is 202: the
decision is saved and applies when that ends.
"""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, request, url_for
from flask_openapi3 import APIBlueprint
from pydantic import BaseModel, ConfigDict, Field

from api.auth import tenant
from api.context import svc
from api.errors import BadJson, BadRequest, Conflict, InvalidRequest, NotFound, coded
from api.schemas import (
    AUTH_ERRORS,
    DECISION_ERRORS,
    Answer,
    FacePath,
    FacesQuery,
    PageQuery,
    PeopleQuery,
    PersonPath,
    errors,
    page_of,
    read_body,
)
from storage import keys
from storage.errors import ObjectNotFound
from storage.library import Decision, DecisionInvalid, Head, LibraryBusy, LibraryState, LibraryStore, Person
from storage.library.adapters import Adapters
from storage.library.decisions import check_decision
from storage.library.documents import AdapterDoc, Member, PersonVideo, may_be_one, resolve_merged
from storage.names import JobKind, Queue, TaskName
from workers.contract import AdaptParams

bp = APIBlueprint("people", __name__, url_prefix="/v1", abp_responses=AUTH_ERRORS)


class PersonPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, max_length=200, description="the person's name; empty or null clears it")
    hidden: bool | None = None
    cover: str | None = Field(None, max_length=200, description="a face id of this person for the cover")


class MergeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    into: str = Field(min_length=1, max_length=64)
    from_: str = Field(alias="from", min_length=1, max_length=64)


class FacePerson(BaseModel):
    model_config = ConfigDict(extra="forbid")
    person: str | None = Field(description="the person this face is (null: not the person it is with now)")


class ReclusterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    algorithm: str = Field("average", pattern="^(average|complete|chinese_whispers)$")
    threshold: float | None = Field(None, gt=0, le=2)


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    recluster: bool = Field(False, description="then re-cluster the library (a job) with what is in use again")


def library() -> LibraryStore:
    return LibraryStore(svc().store, svc().records, tenant())


def _object() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadJson("the body must be a JSON object")
    return body


def thumbnail_url(face_id: str | None) -> str | None:
    if not face_id:
        return None
    try:
        return str(svc().store.presigned_get(keys.face_thumbnail_of(tenant(), face_id)))
    except (ValueError, keys.BadKey):
        return None


def person_view(p: Person) -> dict[str, Any]:
    return {
        "id": p.id,
        "name": p.name,
        "hidden": p.hidden,
        "faces": p.faces,
        "photos": p.photos,
        "latest": p.latest,
        "created_at": p.created_at,
        "updated_at": p.updated_at,
        "cover": {"face": p.cover_face, "chosen": p.cover is not None, "thumbnail_url": thumbnail_url(p.cover_face)},
        "links": {"self": url_for("people.get_person", person_id=p.id)},
    }


def face_view(m: Member) -> dict[str, Any]:
    return {
        "face": m.face,
        "box": list(m.box),
        "score": m.score,
        "confirmed": m.confirmed,
        "photo": m.photo,
        "photo_key": m.photo_key,
        "photo_name": m.name,
        "taken": m.taken,
        "thumbnail_url": str(svc().store.presigned_get(keys.tenant_key(tenant(), m.thumb))) if m.thumb else None,
    }


def _people(head: Head | None) -> tuple[dict[str, Person], dict[str, str]]:
    doc = library().people(head)
    return {p.id: p for p in doc.people}, doc.merged


def _resolve(person_id: str, merged: dict[str, str]) -> str:
    return resolve_merged(merged, person_id)


def decide(*decisions: Decision) -> tuple[Head | None, int]:
    """Check, log and commit decisions; (the new head, 200) or (None, 202) when the library is busy."""
    lib = library()
    trial = LibraryState(lib, lib.head())
    try:
        for d in decisions:
            check_decision(trial, d)
    except DecisionInvalid as exc:
        raise coded(exc.code, str(exc)) from None
    for d in decisions:
        lib.log_decision(d)
    try:
        head, refused = lib.commit(lambda state: [state.refused.get(d.id) for d in decisions], wait=10)
    except LibraryBusy:
        return None, 202
    reasons = [r for r in refused if r]
    if reasons:
        raise Conflict(f"the library changed meanwhile: {reasons[0]}")
    return head, 200


def _busy() -> tuple[Response, int]:
    return jsonify(
        {
            "pending": True,
            "message": "saved: the library is busy (a re-cluster or a night's faces "
            "are being added); your change applies when that ends",
        }
    ), 202


# -- reading --------------------------------------------------------------------------------------------


@bp.get("/library", responses={200: Answer})
def library_summary() -> Response:
    """The library in numbers: faces, photos, people (named, hidden), unassigned faces, its version."""
    lib = library()
    head = lib.head()
    waiting = len(lib.waiting())
    if head is None:
        return jsonify({"version": 0, "space": None, "stats": {}, "waiting_jobs": waiting})
    stats = {k: v for k, v in head.stats.items() if ":" not in k}
    return jsonify(
        {
            "version": head.version,
            "space": head.space,
            "stats": stats,
            "waiting_jobs": waiting,
            "segments": len(head.segments),
            "updated_at": head.created_at,
        }
    )


@bp.get("/people", summary="The library's people: named first, then by faces", responses={200: Answer, **errors(400)})
def list_people(query: PeopleQuery) -> Response:
    """The library's people: named first, then by number of faces; paginated; filter visible (default),
    all, named, unnamed or hidden."""
    which, (offset, limit) = query.filter, page_of(query)
    people = list(library().people(library().head()).people)
    keep = {
        "visible": lambda p: not p.hidden,
        "all": lambda p: True,
        "named": lambda p: bool(p.name) and not p.hidden,
        "unnamed": lambda p: not p.name and not p.hidden,
        "hidden": lambda p: p.hidden,
    }[which]
    chosen = [p for p in people if keep(p)]
    page = chosen[offset : offset + limit]
    end = offset + len(page)
    return jsonify(
        {
            "people": [person_view(p) for p in page],
            "total": len(chosen),
            "offset": offset,
            "limit": limit,
            "next_offset": end if end < len(chosen) else None,
        }
    )


@bp.get("/people/<person:person_id>", responses={200: Answer, **errors(400, 404)})
def get_person(path: PersonPath, query: PageQuery) -> Response:
    """A person and their photos, newest first (paginated by photo), each with this person's face in it."""
    person_id, (offset, limit) = path.person_id, page_of(query)
    lib = library()
    head = lib.head()
    people, merged = _people(head)
    pid = _resolve(person_id, merged)
    if pid not in people:
        raise NotFound(f"person {person_id} not found")
    person = people[pid]
    photos: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    for m in lib.members(person.members).faces:
        if m.photo not in index:
            index[m.photo] = len(photos)
            photos.append({"photo": m.photo, "key": m.photo_key, "name": m.name, "taken": m.taken, "faces": []})
        photos[index[m.photo]]["faces"].append(face_view(m))
    page = photos[offset : offset + limit]
    for p in page:
        p["url"] = svc().store.presigned_get(keys.tenant_key(tenant(), p["key"]))
    end = offset + len(page)
    return jsonify(
        {
            "person": person_view(person),
            "photos": page,
            "total_photos": len(photos),
            "offset": offset,
            "limit": limit,
            "next_offset": end if end < len(photos) else None,
            "videos": _videos(pid, merged) if offset == 0 else [],
            **({"merged_into": pid} if pid != person_id else {}),
        }
    )


def _videos(pid: str, merged: dict[str, str]) -> list[dict[str, Any]]:
    """The videos a person appears in (theirs and those of the people merged into them), with when."""
    t = tenant()
    store = svc().store
    out = []
    for owner in [pid] + sorted(x for x in merged if _resolve(x, merged) == pid):
        for obj in store.list(keys.library_person_videos(t, owner)):
            try:
                doc = PersonVideo.model_validate_json(store.get_bytes(obj.key))
            except ObjectNotFound:
                continue
            out.append(
                {
                    **doc.model_dump(mode="json"),
                    "url": store.presigned_get(keys.tenant_key(t, doc.video_key)),
                    "thumbnail_url": store.presigned_get(keys.tenant_key(t, doc.thumb)) if doc.thumb else None,
                }
            )
    return sorted(out, key=lambda v: (v["job"], v["item"]))


@bp.get("/people/suggestions", responses={200: Answer})
def merge_suggestions() -> Response:
    """Pairs of people who may be one person, closest first (merge them, or leave them)."""
    head = library().head()
    people, _ = _people(head)
    out = [
        {"a": person_view(people[s.a]), "b": person_view(people[s.b]), "distance": s.distance}
        for s in (head.suggestions if head else [])
        if s.a in people
        and s.b in people
        and not (people[s.a].hidden or people[s.b].hidden)
        and may_be_one(people[s.a], people[s.b])  # named apart since the last fold
    ]
    return jsonify({"suggestions": out})


@bp.get("/faces", responses={200: Answer, **errors(400)})
def list_faces(query: FacesQuery) -> Response:
    """Faces of the library that belong to nobody yet (`unassigned=true`), newest jobs first; paginated."""
    if not query.unassigned:
        raise BadRequest("only unassigned=true is listed here; a person's faces are at /v1/people/{id}")
    offset, limit = page_of(query)
    lib = library()
    head = lib.head()
    out: list[dict[str, Any]] = []
    seen = 0
    total = sum(r.unassigned for r in head.segments) if head else 0
    for ref in reversed(head.segments if head else []):
        if seen + ref.unassigned <= offset:
            seen += ref.unassigned
            continue
        doc = lib.assignments(ref)
        skip = set(doc.skip)
        faces = lib.segment(ref).faces
        for row, pid in enumerate(doc.person):
            if pid is not None or row in skip:
                continue
            if seen >= offset and len(out) < limit:
                out.append({**face_view(Member.of(ref.id, row, faces[row])), "not": doc.rejected.get(str(row), [])})
            seen += 1
        if len(out) >= limit:
            break
    end = offset + len(out)
    return jsonify(
        {"faces": out, "total": total, "offset": offset, "limit": limit, "next_offset": end if end < total else None}
    )


# -- deciding ------------------------------------------------------------------------------------------


@bp.patch("/people/<person:person_id>", responses={200: Answer, **DECISION_ERRORS})
def patch_person(path: PersonPath, body: PersonPatch) -> tuple[Response, int]:
    """Name, hide or unhide a person, or choose their cover face. Names and choices survive re-clustering."""
    person_id, req = path.person_id, body
    fields = req.model_fields_set
    if not fields:
        raise InvalidRequest("give at least one of name, hidden, cover")
    decisions = []
    if "name" in fields:
        decisions.append(Decision(kind="name", person=person_id, name=req.name))
    if "hidden" in fields:
        if req.hidden is None:
            raise InvalidRequest("hidden: true or false")
        decisions.append(Decision(kind="hide", person=person_id, hidden=req.hidden))
    if "cover" in fields:
        decisions.append(Decision(kind="cover", person=person_id, face=req.cover))
    head, status = decide(*decisions)
    if head is None:
        return _busy()
    people, merged = _people(head)
    return jsonify({"person": person_view(people[_resolve(person_id, merged)]), "version": head.version}), 200


@bp.post("/people/merge", responses={200: Answer, **DECISION_ERRORS})
def merge_people(body: MergeRequest) -> tuple[Response, int]:
    """`from` is the same person as `into`: one person, `into`'s id (its name, else `from`'s)."""
    req = body
    if req.into == req.from_:
        raise InvalidRequest("into and from are the same person")
    head, _ = decide(Decision(kind="merge", person=req.into, other=req.from_))
    if head is None:
        return _busy()
    people, merged = _people(head)
    return jsonify(
        {"person": person_view(people[_resolve(req.into, merged)]), "merged": req.from_, "version": head.version}
    ), 200


@bp.post(
    "/faces/<face:face_id>/person",
    summary="Say who a face is (null: not the person it is with)",
    responses={200: Answer, **DECISION_ERRORS},
)
def set_face_person(path: FacePath, body: FacePerson) -> tuple[Response, int]:
    """Say who a face is: `{"person": id}` assigns it (confirmed), `{"person": null}` moves it out of the
    person it is with (it never joins them again)."""
    face_id, req = path.face_id, body
    if req.person is None:
        lib = library()
        state = LibraryState(lib, lib.head())
        try:
            segment, row = state.locate(face_id)
        except DecisionInvalid as exc:
            raise NotFound(str(exc)) from None
        current = state.person_of(segment, row)
        if current is None:
            raise Conflict(f"face {face_id} belongs to nobody already")
        decision = Decision(kind="move_out", person=current, face=face_id)
    else:
        decision = Decision(kind="assign", person=req.person, face=face_id)
    head, _ = decide(decision)
    if head is None:
        return _busy()
    return jsonify({"face": face_id, "person": decision.person if req.person else None, "version": head.version}), 200


@bp.post(
    "/people/recluster",
    summary="Re-cluster the library (a job); no decision is undone",
    responses={202: Answer, **DECISION_ERRORS},
    openapi_extensions=read_body(bp, json=ReclusterRequest, required=False),
)
def recluster() -> tuple[Response, int]:
    """Re-cluster the whole library (a job): people keep their ids, and every name, merge, move, hidden flag
    and cover stays as users left it."""
    from api.jobs import submit_internal

    req = ReclusterRequest.model_validate(_object()) if request.content_length else ReclusterRequest()
    return submit_internal(JobKind.CLUSTER, req.model_dump(exclude_none=True), label="re-cluster the library")


@bp.post("/people/refresh", summary="Fold waiting faces into the library now", responses={202: Answer})
def refresh() -> tuple[Response, int]:
    """Fold faces of finished jobs that are still waiting into the library now (it happens on its own when a
    faces job ends; this is for a library that was busy then)."""
    svc().celery.send_task(TaskName.LIBRARY_FOLD.value, args=[tenant()], queue=Queue.FACES.value)
    return jsonify({"queued": True, "waiting_jobs": len(library().waiting())}), 202


# -- learning from decisions ----------------------------------------------------------------------------


def adapter_view(doc: AdapterDoc, in_use: int | None) -> dict[str, Any]:
    return {
        "version": doc.version,
        "created_at": doc.created_at,
        "accepted": doc.accepted,
        "in_use": in_use == doc.version,
        "reason": doc.reason,
        "space": doc.space,
        "library_version": doc.library_version,
        **doc.figures(),
    }


@bp.post(
    "/people/learn",
    summary="Learn a head from your names and decisions (a job); used only when it measurably helps",
    responses={202: Answer, **errors(400, 422)},
    openapi_extensions=read_body(bp, json=AdaptParams, required=False),
)
def learn() -> tuple[Response, int]:
    """Learn a head for the library from its names and decisions (a job); it is used only when it does better
    on labelled faces held out of training and leaves unlabelled people as they were."""
    from api.jobs import submit_internal

    # strict: a job that trains for minutes starts only from exactly what was asked ("false" is not false)
    req = AdaptParams.model_validate(_object(), strict=True) if request.content_length else AdaptParams()
    return submit_internal(JobKind.ADAPT, req.model_dump(), label="learn from your names")


@bp.get("/people/learn", responses={200: Answer})
def learned() -> Response:
    """What was learnt: every head (newest first) with its figures and verdict, and which one is in use."""
    adapters = Adapters(library())
    head = adapters.lib.head()
    in_use = adapters.version(head.adapter if head else None)
    docs = adapters.all()
    current = next((d for d in docs if d.version == in_use), None)
    return jsonify(
        {
            "in_use": in_use,
            "rollback_to": adapters.version(current.previous) if current else None,
            "can_roll_back": current is not None,
            "adapters": [adapter_view(d, in_use) for d in docs],
        }
    )


@bp.post(
    "/people/learn/rollback",
    summary="Use the head before the one in use (or none) again",
    responses={200: Answer, 202: Answer, **errors(400, 409, 422)},
    openapi_extensions=read_body(bp, json=RollbackRequest, required=False),
)
def rollback() -> tuple[Response, int]:
    """Stop using the head in use and return to the one before it (or to the raw vectors). Nothing stored is
    rewritten: faces are compared as they were before it was adopted."""
    req = RollbackRequest.model_validate(_object()) if request.content_length else RollbackRequest()
    adapters = Adapters(library())
    try:
        current, target = adapters.rollback_target(adapters.lib.head())
    except LookupError as exc:
        raise Conflict(str(exc)) from None
    except ObjectNotFound:
        raise Conflict("the head in use is missing from the store") from None
    head, _ = decide(Decision(kind="adapter", adapter=target))
    answer: dict[str, Any] = {"rolled_back": current.version, "in_use": adapters.version(target)}
    if req.recluster:
        from api.jobs import submit_internal

        job, _ = submit_internal(JobKind.CLUSTER, {}, label="re-cluster after a rollback")
        answer["job"] = job.get_json()
    if head is None:
        return jsonify({**answer, "pending": True}), 202
    return jsonify({**answer, "version": head.version}), 200
