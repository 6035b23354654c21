"""The `identify`, `cluster` and `adapt` job kinds: questions over the tenant's face library.

Each such job has one item (the whole computation); its outputs are JSON documents and contact sheets.
`cluster` re-clusters the library (`workers.library.recluster`); `identify` names faces from a gallery;
`adapt` learns a head from the library's decisions (`workers.library.adapt`).
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
from PIL import Image

from storage import keys
from storage.errors import ObjectNotFound
from storage.galleries import Galleries
from storage.library import LibraryStore
from storage.library.documents import Person
from storage.names import ItemErrorCode, ItemState
from storage.records import Item, Job
from workers.contract import AdaptParams, ClusterParams, IdentifyParams, ItemFailure
from workers.faces.spaces import space_of
from workers.handlers import ItemInput, ItemResult, JobHandler
from workers.library.faces import LibraryFaces
from workers.library.intake import recluster_library
from workers.people.identify import Gallery, identify
from workers.people.sheet import people_overview

OVERVIEW_PEOPLE = 40


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=88)
    return buf.getvalue()


class _LibraryQuestion(JobHandler):
    """One item computed over the tenant's library."""

    @property
    def library(self) -> LibraryStore:
        return LibraryStore(self.ctx.store, self.ctx.records, self.job.tenant)

    def put_json(self, name: str, value: Any) -> str:
        key = keys.job_artifact(self.job.tenant, self.job.id, name)
        self.ctx.store.put_bytes(key, json.dumps(value, indent=1).encode(), "application/json")
        return key

    def process_batch(self, batch: list[ItemInput], chunk_index: int) -> list[ItemResult]:
        item = batch[0]
        try:
            outputs, info = self.run()
        except ItemFailure as exc:
            return [ItemResult.failed_by(item.index, exc)]
        except ObjectNotFound as exc:  # a gallery or a library document the job reads
            return [ItemResult.failed(item.index, ItemErrorCode.INPUT_MISSING, str(exc))]
        except ValueError as exc:
            return [ItemResult.failed(item.index, ItemErrorCode.INTERNAL, str(exc))]
        return [ItemResult(item.index, ItemState.DONE, outputs, info=info)]

    def run(self) -> tuple[list[str], dict[str, Any]]:
        raise NotImplementedError

    def finalize(self, job: Job, items: list[Item]) -> dict[str, Any]:
        done = [it for it in items if it.state == ItemState.DONE]
        if not done:
            return {}
        return {"artifacts": [keys.strip_tenant(job.tenant, k) for k in done[0].outputs], **done[0].info}


class IdentifyHandler(_LibraryQuestion):
    """Every face of the library (or of some faces jobs) against an enrolled gallery: best match or `unknown`."""

    def run(self) -> tuple[list[str], dict[str, Any]]:
        params = IdentifyParams.model_validate(self.job.params)
        gallery_doc = Galleries(self.ctx.store, self.job.tenant).latest(params.gallery)
        enrolled = {
            name: np.asarray(p.embeddings, np.float32) for name, p in gallery_doc.people.items() if p.embeddings
        }
        if not enrolled:
            raise ItemFailure(f"gallery {params.gallery} has nobody enrolled yet", ItemErrorCode.INPUT_MISSING)
        library = LibraryFaces.open(self.library)
        if library is None:
            raise ItemFailure("the library has no faces yet: index some photos first", ItemErrorCode.INPUT_MISSING)
        model = gallery_doc.model
        if model and library.space and space_of(model).id != library.space:
            raise ItemFailure(
                f"the gallery was enrolled with {model} but the library holds {library.space} vectors",
                ItemErrorCode.UNSUPPORTED,
            )
        faces, vectors = library.all(set(params.index_jobs) if params.index_jobs else None)
        space = space_of(model) if model else None
        threshold = params.threshold or (space.thresholds.identify if space else 0.5)
        margin = space.thresholds.identify_margin if space else 0.03
        matches = identify(vectors, Gallery.enrol(enrolled), threshold, min_margin=margin) if faces else []
        rows: list[dict[str, Any]] = []
        photos: dict[str, set[str]] = {}
        for face, m in zip(faces, matches, strict=True):
            person = m.person or "unknown"
            rows.append(
                {
                    "face": face.face,
                    "photo": face.photo_key,
                    "box": list(face.box),
                    "person": person,
                    "distance": round(m.distance, 4),
                    "nearest": m.nearest,
                    "runner_up": m.runner_up,
                    "margin": round(m.margin, 4) if np.isfinite(m.margin) else None,
                }
            )
            photos.setdefault(person, set()).add(face.photo_key)
        table = self.put_json(
            "identify.json",
            {"gallery": params.gallery, "version": gallery_doc.version, "threshold": threshold, "faces": rows},
        )
        per_person = self.put_json("people-photos.json", {p: sorted(v) for p, v in sorted(photos.items())})
        return [table, per_person], {
            "faces": len(rows),
            "unknown": sum(r["person"] == "unknown" for r in rows),
            "photos_per_person": {p: len(v) for p, v in photos.items()},
            "threshold": threshold,
        }


class ClusterHandler(_LibraryQuestion):
    """Re-cluster the tenant's library, keeping every decision users made."""

    def run(self) -> tuple[list[str], dict[str, Any]]:
        params = ClusterParams.model_validate(self.job.params)
        summary = recluster_library(self.ctx, self.job.tenant, algorithm=params.algorithm, threshold=params.threshold)
        outputs = []
        if params.sheets:
            head = self.library.head()
            people = [p for p in self.library.people(head).people if not p.hidden][:OVERVIEW_PEOPLE]
            if people:
                key = keys.job_artifact(self.job.tenant, self.job.id, "people-overview.jpg")
                tiles = [(p.name or p.id, self._faces(p)) for p in people]
                self.ctx.store.put_bytes(key, _jpeg(people_overview(tiles)), "image/jpeg")
                outputs.append(key)
        return outputs, summary

    def _faces(self, person: Person, shown: int = 8) -> list[Image.Image]:
        out = []
        for member in self.library.members(person.members).faces[:shown]:
            try:
                data = self.ctx.store.get_bytes(keys.tenant_key(self.job.tenant, member.thumb or ""))
                out.append(Image.open(io.BytesIO(data)).convert("RGB"))
            except (ObjectNotFound, OSError, keys.BadKey):
                out.append(Image.new("RGB", (112, 112), (60, 60, 60)))
        return out


class AdaptHandler(_LibraryQuestion):
    """Learn a head from the library's names and decisions; the library adopts it only when it helps."""

    def run(self) -> tuple[list[str], dict[str, Any]]:
        import torch

        from workers.library.adapt import adapt_library
        from workers.library.triplets import resolve_device

        params = AdaptParams.model_validate(self.job.params)
        torch.set_num_threads(self.ctx.settings.worker.threads)  # the worker's share of the cores
        summary = adapt_library(
            self.library,
            params,
            device=resolve_device(self.ctx.settings.worker.device),
            min_faces=self.ctx.settings.library.min_faces,
        )
        return [self.put_json("adapter.json", summary)], summary
