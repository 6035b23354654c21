"""Galleries: named people enrolled from a few photos each (one-shot identification), versioned in the store.

Each enrolment writes the next version with a conditional create (``If-None-Match: *``): two enrolments
at once cannot overwrite each other; the loser reads the new version and tries again.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from storage import keys
from storage.errors import ObjectNotFound, PreconditionFailed, StorageError
from storage.objects import ObjectStore

ATTEMPTS = 5


class ModelMismatch(StorageError):
    """The gallery holds vectors of another model than the ones offered."""


class GalleryPerson(BaseModel):
    embeddings: list[list[float]] = Field(default_factory=list)
    photos: list[str] = Field(default_factory=list)  # keys relative to the tenant


class GalleryDoc(BaseModel):
    """One version of a gallery: its people and their vectors, all of one model."""

    id: str
    name: str
    version: int = 0
    model: str = ""
    people: dict[str, GalleryPerson] = Field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "version": self.version,
            "model": self.model or None,
            "people": [
                {"name": n, "photos": len(p.photos), "embeddings": len(p.embeddings)}
                for n, p in sorted(self.people.items())
            ],
        }


class Galleries:
    """One tenant's galleries."""

    def __init__(self, store: ObjectStore, tenant: str) -> None:
        self.store = store
        self.tenant = tenant

    def _write(self, doc: GalleryDoc) -> None:
        self.store.put_if_absent(keys.gallery(self.tenant, doc.id, doc.version), doc.model_dump_json().encode())

    def create(self, gallery_id: str, name: str) -> GalleryDoc:
        doc = GalleryDoc(id=gallery_id, name=name)
        self._write(doc)
        return doc

    def latest(self, gallery_id: str) -> GalleryDoc:
        """The newest version; raises ObjectNotFound (also for an id that is not a gallery's)."""
        try:
            prefix = keys.gallery_prefix(self.tenant, keys.safe_name(gallery_id))
        except keys.BadKey:
            raise ObjectNotFound(f"gallery {gallery_id}") from None
        versions = [o.key for o in self.store.list(prefix) if o.key.endswith(".json")]
        if not versions:
            raise ObjectNotFound(f"gallery {gallery_id}")
        return GalleryDoc.model_validate_json(self.store.get_bytes(max(versions)))

    def all(self) -> list[GalleryDoc]:
        newest: dict[str, str] = {}
        for obj in self.store.list(keys.galleries_prefix(self.tenant)):
            gallery_id = obj.key.split("/")[-2]
            newest[gallery_id] = max(newest.get(gallery_id, ""), obj.key)
        return [GalleryDoc.model_validate_json(self.store.get_bytes(k)) for k in newest.values()]

    def enrol(
        self, gallery_id: str, name: str, embeddings: list[list[float]], photos: list[str], model: str
    ) -> GalleryDoc:
        """Add `name`'s vectors and photos as the next version. Raises ModelMismatch, ObjectNotFound."""
        for _ in range(ATTEMPTS):
            doc = self.latest(gallery_id)
            if doc.model and doc.model != model:
                raise ModelMismatch(f"the gallery uses {doc.model}, the worker {model}")
            person = doc.people.setdefault(name, GalleryPerson())
            person.embeddings += embeddings
            person.photos += photos
            doc.version += 1
            doc.model = model
            try:
                self._write(doc)
                return doc
            except PreconditionFailed:
                continue  # another enrolment made this version first: start again from it
        raise StorageError(f"gallery {gallery_id} changed under every attempt; try again")
