"""Synchronous face questions answered by a worker: verify two photos, search the tenant's faces,
embed enrolment photos. Plain functions returning JSON-ready dicts (errors as {"error": ...})."""

from __future__ import annotations

from typing import Any

import numpy as np

from storage import keys
from storage.errors import ObjectNotFound
from workers.context import WorkerContext
from workers.contract import FacesParams
from workers.faces.handler import engine_for
from workers.faces.spaces import comparable
from workers.imaging import ImageDecodeError, decode_image
from workers.people.calibration import thresholds_for
from workers.people.faceset import NoIndex, load_job, load_jobs, parse_face_id, tenant_index_jobs
from workers.people.search import ExactIndex


class FaceQueryError(ValueError):
    """A photo or face id cannot answer the question; `code` is the API error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _engine(ctx: WorkerContext) -> Any:
    return engine_for(FacesParams(try_rotations=True), ctx.settings.worker.device)


def embed_photo(ctx: WorkerContext, key: str, label: str) -> tuple[list[dict[str, Any]], np.ndarray, str]:
    """Every face of a stored photo: (faces with boxes, embeddings, model id)."""
    try:
        image = decode_image(ctx.store.get_bytes(key), max_pixels=ctx.settings.worker.max_pixels)
    except ObjectNotFound:
        raise FaceQueryError("not_found", f"photo {label} not found") from None
    except ImageDecodeError as exc:
        raise FaceQueryError("bad_image", f"photo {label}: {exc}") from None
    engine = _engine(ctx)
    found = engine.index_photo(image)
    faces = [
        {"box": [round(float(v), 1) for v in f.box], "score": round(float(f.score), 4), "rotation": f.rotation}
        for f in found.faces
    ]
    return faces, np.asarray(found.embeddings, np.float32), f"{found.model}@{found.model_version}"


def one_face(
    ctx: WorkerContext, tenant: str, ref: dict[str, str], label: str
) -> tuple[np.ndarray, dict[str, Any], str]:
    """The single face a reference names: {"key": photo} (must hold exactly one face) or {"face": id}."""
    if "face" in ref:
        try:
            job, _, _ = parse_face_id(ref["face"])
            faces = load_job(ctx, tenant, job)
        except (ValueError, NoIndex):
            raise FaceQueryError("not_found", f"face {ref['face']!r} not found") from None
        if ref["face"] not in faces.ids:
            raise FaceQueryError("not_found", f"face {ref['face']!r} not found")
        row = faces.ids.index(ref["face"])
        return faces.embeddings[row], {"face": ref["face"], **faces.rows[row]}, faces.model
    found, vectors, model = embed_photo(ctx, keys.tenant_key(tenant, ref["key"]), label)
    if not found:
        raise FaceQueryError(
            "no_face", f"no face found in photo {label}: use a photo where the face is visible and at least 20 px wide"
        )
    if len(found) > 1:
        raise FaceQueryError(
            "several_faces",
            f"photo {label} has {len(found)} faces: crop it to one face, or pass a face id from an index instead",
        )
    return vectors[0], found[0], model


def verify(
    ctx: WorkerContext, tenant: str, a: dict[str, str], b: dict[str, str], threshold: float | None = None
) -> dict[str, Any]:
    """Are two faces the same person? Distance, decision, the threshold used and the model."""
    try:
        va, fa, ma = one_face(ctx, tenant, a, "a")
        vb, fb, mb = one_face(ctx, tenant, b, "b")
    except FaceQueryError as exc:
        return {"error": {"code": exc.code, "message": str(exc)}}
    if not comparable(ma, mb):
        return {"error": {"code": "model_mismatch", "message": f"faces come from different models ({ma}, {mb})"}}
    t = thresholds_for(ma).verify if threshold is None else threshold
    distance = float(np.linalg.norm(va - vb))
    return {"distance": round(distance, 4), "same_person": distance < t, "threshold": t, "model": ma, "a": fa, "b": fb}


def search(
    ctx: WorkerContext, tenant: str, query: dict[str, str], k: int = 10, job_ids: list[str] | None = None
) -> dict[str, Any]:
    """The k nearest faces to a query face across the tenant's indexes (exact search)."""
    try:
        vector, face, model = one_face(ctx, tenant, query, "query") if "face" in query else _largest(ctx, tenant, query)
    except FaceQueryError as exc:
        return {"error": {"code": exc.code, "message": str(exc)}}
    try:
        faces = load_jobs(ctx, tenant, job_ids if job_ids is not None else tenant_index_jobs(ctx, tenant))
    except (NoIndex, ValueError) as exc:
        return {"error": {"code": "bad_index", "message": str(exc)}}
    if not len(faces):
        return {"query": face, "model": model, "searched": 0, "matches": []}
    if not comparable(faces.model, model):
        return {"error": {"code": "model_mismatch", "message": f"the query was embedded with {model} but the "
                          f"indexes use {faces.model}: search indexes made with the same settings"}}
    verify = thresholds_for(model).verify
    index = ExactIndex(dim=faces.embeddings.shape[1])
    index.add(faces.embeddings, faces.ids)
    hits = index.search(vector[None, :], min(k, len(faces)))[0]
    position = {fid: n for n, fid in enumerate(faces.ids)}
    matches = []
    for fid, distance in hits:
        row = faces.rows[position[fid]]
        matches.append(
            {
                "face": fid,
                "distance": round(float(distance), 4),
                "job": row["job"],
                "item": row["item"],
                "photo": row["photo_key"],
                "box": row["box"],
                "same_person": distance < verify,
            }
        )
    return {"query": face, "model": model, "searched": len(faces), "threshold": verify, "matches": matches}


def _largest(ctx: WorkerContext, tenant: str, query: dict[str, str]) -> tuple[np.ndarray, dict[str, Any], str]:
    """The largest face of a query photo (a search photo may show several people)."""
    found, vectors, model = embed_photo(ctx, keys.tenant_key(tenant, query["key"]), "query")
    if not found:
        raise FaceQueryError("no_face", "no face found in the query photo")
    sizes = [(f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]) for f in found]
    best = int(np.argmax(sizes))
    return vectors[best], {**found[best], "faces_in_photo": len(found)}, model


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
