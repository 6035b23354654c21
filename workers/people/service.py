"""Synchronous face questions answered by a worker: verify two photos, search the tenant's faces,
embed enrolment photos. Plain functions returning JSON-ready dicts (errors as {"error": ...})."""

from __future__ import annotations

from typing import Any

import numpy as np

from storage import keys
from storage.errors import ObjectNotFound
from storage.library import LibraryStore
from workers.context import WorkerContext
from workers.contract import FacesParams
from workers.faces.handler import engine_for
from workers.faces.spaces import comparable, space_of
from workers.imaging import ImageDecodeError, decode_image
from workers.library.faces import LibraryFaces, NotInLibrary, fits_library


class FaceQueryError(ValueError):
    """A photo or face id cannot answer the question; `code` is the API error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def params_for(model: str | None) -> FacesParams:
    """Index parameters whose embedder makes vectors of `model` (``<embedder>@<version>``), so a query photo is
    embedded in the library's own space; the defaults when the library is empty."""
    if not model:
        return FacesParams(try_rotations=True)
    name, _, version = model.partition("@")
    try:
        return FacesParams(try_rotations=True, embedder=name, mirror=version.endswith("+mirror"))  # type: ignore[arg-type]
    except ValueError:
        return FacesParams(try_rotations=True)


def _engine(ctx: WorkerContext, model: str | None = None) -> Any:
    return engine_for(params_for(model), ctx.settings.worker.device)


def _library(ctx: WorkerContext, tenant: str) -> LibraryFaces | None:
    return LibraryFaces.open(LibraryStore(ctx.store, ctx.records, tenant))


def embed_photo(
    ctx: WorkerContext, key: str, label: str, model: str | None = None
) -> tuple[list[dict[str, Any]], np.ndarray, str]:
    """Every face of a stored photo, embedded with `model`'s embedder: (faces with boxes, embeddings, model id)."""
    try:
        image = decode_image(ctx.store.get_bytes(key), max_pixels=ctx.settings.worker.max_pixels)
    except ObjectNotFound:
        raise FaceQueryError("not_found", f"photo {label} not found") from None
    except ImageDecodeError as exc:
        raise FaceQueryError("bad_image", f"photo {label}: {exc}") from None
    found = _engine(ctx, model).index_photo(image)
    faces = [
        {"box": [round(float(v), 1) for v in f.box], "score": round(float(f.score), 4), "rotation": f.rotation}
        for f in found.faces
    ]
    return faces, np.asarray(found.embeddings, np.float32), f"{found.model}@{found.model_version}"


def one_face(
    ctx: WorkerContext, tenant: str, ref: dict[str, str], label: str, model: str | None = None
) -> tuple[np.ndarray, dict[str, Any], str]:
    """The single face a reference names: {"key": photo} (must hold exactly one face) or {"face": id} (a face of
    the library)."""
    if "face" in ref:
        faces = _library(ctx, tenant)
        if faces is None:
            raise FaceQueryError("not_found", f"face {ref['face']!r} not found: the library is empty")
        try:
            vector, row, person = faces.face(ref["face"])
        except NotInLibrary:
            raise FaceQueryError("not_found", f"face {ref['face']!r} not found") from None
        seg = faces.head.segments[0]
        return (
            vector,
            {"face": row.face, "photo": row.photo_key, "box": list(row.box), "person": person},
            next((r.model for r in faces.head.segments if r.job == row.job), seg.model),
        )
    found, vectors, used = embed_photo(ctx, keys.tenant_key(tenant, ref["key"]), label, model)
    if not found:
        raise FaceQueryError(
            "no_face", f"no face found in photo {label}: use a photo where the face is visible and at least 20 px wide"
        )
    if len(found) > 1:
        raise FaceQueryError(
            "several_faces",
            f"photo {label} has {len(found)} faces: crop it to one face, or pass a face id from an index instead",
        )
    return vectors[0], found[0], used


def verify(
    ctx: WorkerContext, tenant: str, a: dict[str, str], b: dict[str, str], threshold: float | None = None
) -> dict[str, Any]:
    """Are two faces the same person? Distance, decision, the threshold used and the model."""
    try:
        va, fa, ma = one_face(ctx, tenant, a, "a")
        vb, fb, mb = one_face(ctx, tenant, b, "b", model=ma if "face" in a else None)
    except FaceQueryError as exc:
        return {"error": {"code": exc.code, "message": str(exc)}}
    if not comparable(ma, mb):
        return {"error": {"code": "model_mismatch", "message": f"faces come from different models ({ma}, {mb})"}}
    t = space_of(ma).thresholds.verify if threshold is None else threshold
    distance = float(np.linalg.norm(va - vb))
    return {"distance": round(distance, 4), "same_person": distance < t, "threshold": t, "model": ma, "a": fa, "b": fb}


def search(
    ctx: WorkerContext, tenant: str, query: dict[str, str], k: int = 10, job_ids: list[str] | None = None
) -> dict[str, Any]:
    """The k nearest faces to a query face across the tenant's library (exact), with their people."""
    faces = _library(ctx, tenant)
    model = next((r.model for r in faces.head.segments), None) if faces else None
    try:
        if "face" in query:
            vector, face, used = one_face(ctx, tenant, query, "query")
        else:
            vector, face, used = _largest(ctx, tenant, query, model)
    except FaceQueryError as exc:
        return {"error": {"code": exc.code, "message": str(exc)}}
    if faces is None:
        return {"query": face, "model": used, "searched": 0, "matches": []}
    if not fits_library(used, faces.space):
        return {
            "error": {
                "code": "model_mismatch",
                "message": f"the query was embedded with {used} but the library holds {faces.space} vectors",
            }
        }
    threshold = space_of(used).thresholds.verify
    matches = faces.search(vector, k, set(job_ids) if job_ids else None)
    for m in matches:
        m["same_person"] = m["distance"] < threshold
    return {
        "query": face,
        "model": used,
        "searched": faces.head.stats.get("faces", 0),
        "threshold": threshold,
        "matches": matches,
    }


def _largest(
    ctx: WorkerContext, tenant: str, query: dict[str, str], model: str | None
) -> tuple[np.ndarray, dict[str, Any], str]:
    """The largest face of a query photo (a search photo may show several people)."""
    found, vectors, used = embed_photo(ctx, keys.tenant_key(tenant, query["key"]), "query", model)
    if not found:
        raise FaceQueryError("no_face", "no face found in the query photo")
    sizes = [(f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]) for f in found]
    best = int(np.argmax(sizes))
    return vectors[best], {**found[best], "faces_in_photo": len(found)}, used


def enroll(ctx: WorkerContext, tenant: str, photo_keys: list[str]) -> dict[str, Any]:
    """Embeddings of enrolment photos (each must show exactly one face)."""
    vectors, errors, model = [], [], ""
    for n, rel in enumerate(photo_keys):
        try:
            vector, _, model = one_face(ctx, tenant, {"key": rel}, f"#{n + 1} ({rel.rsplit('/', 1)[-1]})")
            vectors.append([round(float(v), 7) for v in vector])
        except FaceQueryError as exc:
            errors.append({"photo": rel, "code": exc.code, "message": str(exc)})
    return {"embeddings": vectors, "errors": errors, "model": model}


def identify_photo(ctx: WorkerContext, tenant: str, query: dict[str, str]) -> dict[str, Any]:
    """Who is in a photo: each face with the library person it clearly is (the nightly rule: nearest exemplars
    under the space's `assign` threshold, with a margin over the runner-up), or nobody."""
    from storage.library.state import LibraryState
    from workers.library.fold import PersonIndex, choose

    lib = LibraryStore(ctx.store, ctx.records, tenant)
    head = lib.head()
    model = next((r.model for r in head.segments), None) if head else None
    try:
        faces, vectors, used = embed_photo(ctx, keys.tenant_key(tenant, query["key"]), "photo", model)
    except FaceQueryError as exc:
        return {"error": {"code": exc.code, "message": str(exc)}}
    if head is None or not faces:
        return {"model": used, "faces": [{**f, "person": None, "name": None} for f in faces]}
    if not fits_library(used, head.space):
        return {
            "error": {
                "code": "model_mismatch",
                "message": f"the photo was embedded with {used} but the library holds {head.space} vectors",
            }
        }
    index = PersonIndex.of(LibraryState(lib, head))  # compares through the library's adopted head, if any
    scores = index.scores(vectors)
    picks = choose(scores, index.people, [set()] * len(faces), space_of(used).thresholds)
    names = {p.id: p.name for p in lib.people(head).people}
    out = []
    for n, (face, pid) in enumerate(zip(faces, picks, strict=True)):
        best = float(scores[n].min()) if len(index.people) else None
        out.append(
            {
                **face,
                "person": pid,
                "name": names.get(pid) if pid else None,
                "distance": round(best, 4) if best is not None else None,
            }
        )
    return {"model": used, "faces": out}
