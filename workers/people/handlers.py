"""The `identify` and `cluster` job kinds: questions over the faces of earlier index jobs.

Each such job has one item (the whole computation); its outputs are JSON documents and contact sheets.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
from PIL import Image

from storage import keys
from storage.errors import ObjectNotFound
from storage.names import ItemState
from storage.records import Item, Job
from workers.context import WorkerContext
from workers.contract import ClusterParams, IdentifyParams
from workers.faces.spaces import comparable
from workers.handlers import ItemInput, ItemResult, JobHandler
from workers.people.calibration import thresholds_for
from workers.people.faceset import FaceSet, NoIndex, load_jobs
from workers.people.identify import Gallery, identify
from workers.people.labels import Labels, Person, cluster_people
from workers.people.sheet import people_overview, person_sheet

PEOPLE_NAME = "people.json"
SHEET_FACES = 32


def latest_gallery(ctx: WorkerContext, tenant: str, gallery_id: str) -> dict[str, Any]:
    """The newest version of an enrolled gallery; raises ObjectNotFound."""
    versions = [o.key for o in ctx.store.list(keys.gallery_prefix(tenant, gallery_id)) if o.key.endswith(".json")]
    if not versions:
        raise ObjectNotFound(f"gallery {gallery_id}")
    return dict(ctx.store.get_json(max(versions)))


def load_labels(ctx: WorkerContext, tenant: str) -> Labels:
    try:
        return Labels.from_json(ctx.store.get_bytes(keys.labels(tenant)))
    except ObjectNotFound:
        return Labels()


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=88)
    return buf.getvalue()


class _FacesQuestion(JobHandler):
    """One item; loads the faces of the index jobs it asks about."""

    def faces(self, index_jobs: list[str]) -> FaceSet:
        return load_jobs(self.ctx, self.job.tenant, index_jobs)

    def put_json(self, name: str, value: Any) -> str:
        key = keys.job_artifact(self.job.tenant, self.job.id, name)
        self.ctx.store.put_bytes(key, json.dumps(value, indent=1).encode(), "application/json")
        return key

    def process_batch(self, batch: list[ItemInput], chunk_index: int) -> list[ItemResult]:
        item = batch[0]
        try:
            outputs, info = self.run()
        except (NoIndex, ObjectNotFound, ValueError) as exc:
            return [ItemResult.failed(item.index, str(exc))]
        return [ItemResult(item.index, ItemState.DONE, outputs, info=info)]

    def run(self) -> tuple[list[str], dict[str, Any]]:
        raise NotImplementedError

    def finalize(self, job: Job, items: list[Item]) -> dict[str, Any]:
        done = [it for it in items if it.state == ItemState.DONE]
        if not done:
            return {}
        return {"artifacts": [keys.strip_tenant(job.tenant, k) for k in done[0].outputs], **done[0].info}


class IdentifyHandler(_FacesQuestion):
    """Every face of the index jobs against an enrolled gallery: best match or `unknown`."""

    def run(self) -> tuple[list[str], dict[str, Any]]:
        params = IdentifyParams.model_validate(self.job.params)
        gallery_doc = latest_gallery(self.ctx, self.job.tenant, params.gallery)
        enrolled = {
            name: np.asarray(p["embeddings"], np.float32)
            for name, p in gallery_doc["people"].items()
            if p["embeddings"]
        }
        if not enrolled:
            raise ValueError(f"gallery {params.gallery} has nobody enrolled yet")
        faces = self.faces(params.index_jobs)
        if gallery_doc.get("model") and faces.model and not comparable(gallery_doc["model"], faces.model):
            raise ValueError(f"the gallery was enrolled with {gallery_doc['model']} but the index uses {faces.model}")
        calibrated = thresholds_for(faces.model or gallery_doc.get("model") or "")
        threshold = params.threshold or calibrated.identify
        matches = (identify(faces.embeddings, Gallery.enrol(enrolled), threshold, min_margin=calibrated.identify_margin)
                   if len(faces) else [])
        rows: list[dict[str, Any]] = []
        photos: dict[str, set[str]] = {}
        for fid, row, m in zip(faces.ids, faces.rows, matches, strict=True):
            person = m.person or "unknown"
            rows.append(
                {
                    "face": fid,
                    "photo": row["photo_key"],
                    "box": row["box"],
                    "person": person,
                    "distance": round(m.distance, 4),
                    "nearest": m.nearest,
                    "runner_up": m.runner_up,
                    "margin": round(m.margin, 4) if np.isfinite(m.margin) else None,
                }
            )
            photos.setdefault(person, set()).add(row["photo_key"])
        table = self.put_json(
            "identify.json",
            {"gallery": params.gallery, "version": gallery_doc.get("version"), "threshold": threshold, "faces": rows},
        )
        per_person = self.put_json("people-photos.json", {p: sorted(v) for p, v in sorted(photos.items())})
        counts = {p: len(v) for p, v in photos.items()}
        return [table, per_person], {
            "faces": len(rows),
            "unknown": sum(r["person"] == "unknown" for r in rows),
            "photos_per_person": counts,
            "threshold": threshold,
        }


class ClusterHandler(_FacesQuestion):
    """Group the faces of the index jobs into people, keeping human labels."""

    def run(self) -> tuple[list[str], dict[str, Any]]:
        params = ClusterParams.model_validate(self.job.params)
        faces = self.faces(params.index_jobs)
        labels = load_labels(self.ctx, self.job.tenant)
        old = self._previous_people()
        people = (
            cluster_people(
                faces.embeddings,
                faces.ids,
                faces.photos,
                labels,
                threshold=params.threshold or thresholds_for(faces.model).cluster,
                old_people=old,
                algorithm=params.algorithm,
                min_faces=params.min_faces,
            )
            if len(faces)
            else []
        )
        photo_of = dict(zip(faces.ids, (r["photo_key"] for r in faces.rows), strict=True))
        doc = [
            {
                "id": p.id,
                "name": p.name,
                "faces": list(p.face_ids),
                "representative": p.representative,
                "photo_count": p.photo_count,
                "photos": sorted({photo_of[f] for f in p.face_ids}),
            }
            for p in people
        ]
        outputs = [
            self.put_json(
                PEOPLE_NAME, {"index_jobs": params.index_jobs, "labels_version": labels.version, "people": doc}
            )
        ]
        if params.sheets and people:
            outputs += self._sheets(people)
        r = self.ctx.records.r
        pipe = r.pipeline()
        for p in people:
            pipe.hset(f"{self.ctx.records.p}:people:{self.job.tenant}", p.id, self.job.id)
        pipe.set(f"{self.ctx.records.p}:lastcluster:{self.job.tenant}", self.job.id)
        pipe.execute()
        return outputs, {"people": len(people), "faces": len(faces), "named": sum(1 for p in people if p.name)}

    def _previous_people(self) -> list[Person]:
        last = self.ctx.records.r.get(f"{self.ctx.records.p}:lastcluster:{self.job.tenant}")
        if not last or last == self.job.id:
            return []
        try:
            doc = self.ctx.store.get_json(keys.job_artifact(self.job.tenant, last, PEOPLE_NAME))
        except ObjectNotFound:
            return []
        return [
            Person(p["id"], p.get("name"), tuple(p["faces"]), p["representative"], p["photo_count"])
            for p in doc["people"]
        ]

    def _thumb(self, fid: str) -> Image.Image:
        try:
            data = self.ctx.store.get_bytes(keys.face_thumbnail_of(self.job.tenant, fid))
            return Image.open(io.BytesIO(data)).convert("RGB")
        except (ObjectNotFound, OSError):
            return Image.new("RGB", (112, 112), (60, 60, 60))

    def _sheets(self, people: list[Person]) -> list[str]:
        out = []
        overview: list[tuple[str, list[Image.Image]]] = []
        for p in people:
            faces = [p.representative] + [f for f in p.face_ids if f != p.representative][: SHEET_FACES - 1]
            thumbs = [self._thumb(f) for f in faces]
            title = f"{p.name or p.id} - {p.size} faces, {p.photo_count} photos"
            key = keys.job_artifact(self.job.tenant, self.job.id, f"person-{p.id}.jpg")
            self.ctx.store.put_bytes(key, _jpeg(person_sheet(thumbs, title)), "image/jpeg")
            out.append(key)
            if len(overview) < 40:
                overview.append((p.name or p.id, thumbs[:8]))
        key = keys.job_artifact(self.job.tenant, self.job.id, "people-overview.jpg")
        self.ctx.store.put_bytes(key, _jpeg(people_overview(overview)), "image/jpeg")
        return [key, *out]
