"""The library's documents: one pydantic model per stored JSON document, shared by every writer and reader."""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from typing import Any, Literal, overload

from pydantic import BaseModel, ConfigDict, Field

FORMAT = "nightshift.library.v1"


class SegmentFace(BaseModel):
    """One face of a segment, as stored in its faces.json.gz (row n has embedding row n)."""

    model_config = ConfigDict(extra="ignore")

    face: str  # <job>:<item>:<face>
    job: str
    item: int
    photo: str  # sha256 of the photo's bytes
    photo_key: str  # the photo's key, relative to the tenant
    thumb: str | None = None  # the face thumbnail's key, relative to the tenant
    box: tuple[float, float, float, float]
    score: float
    taken: float | None = None  # EXIF date taken, epoch seconds
    width: int = 0
    height: int = 0
    name: str | None = None  # the photo's name in its job: the path under the folder the user gave


_COLUMNS = ("face", "item", "photo", "photo_key", "thumb", "box", "score", "taken", "width", "height", "name")


class FaceRows(Sequence[SegmentFace]):
    """A segment's faces as a sequence, made row by row from columns (a million faces are a few lists, not a
    million objects)."""

    def __init__(self, job: str, columns: dict[str, list[Any]]) -> None:
        self.job = job
        self.columns = columns

    def __len__(self) -> int:
        return len(self.columns["face"])

    @overload
    def __getitem__(self, row: int) -> SegmentFace: ...

    @overload
    def __getitem__(self, row: slice) -> list[SegmentFace]: ...

    def __getitem__(self, row: int | slice) -> SegmentFace | list[SegmentFace]:
        if isinstance(row, slice):
            return [self[r] for r in range(*row.indices(len(self)))]
        c = self.columns
        return SegmentFace.model_construct(
            face=c["face"][row],
            job=self.job,
            item=c["item"][row],
            photo=c["photo"][row],
            photo_key=c["photo_key"][row],
            thumb=c["thumb"][row],
            box=tuple(c["box"][row]),
            score=c["score"][row],
            taken=c["taken"][row],
            width=c["width"][row],
            height=c["height"][row],
            name=c["name"][row] if "name" in c else None,  # segments written before names were kept lack it
        )

    def column(self, name: str) -> list[Any]:
        """One field of every face, in row order (e.g. "photo")."""
        return self.columns[name]


class SegmentDoc(BaseModel):
    """faces.json.gz of a segment: its faces in embedding-row order (stored as columns), and every photo the
    job saw."""

    segment: str
    job: str
    model: str  # <embedder>@<version>
    dim: int
    columns: dict[str, list[Any]] = Field(default_factory=lambda: {c: [] for c in _COLUMNS})
    photos: dict[str, str] = Field(default_factory=dict)  # sha256 -> photo key (photos without faces too)

    @classmethod
    def of(
        cls,
        segment: str,
        job: str,
        model: str,
        dim: int,
        faces: Sequence[SegmentFace],
        photos: dict[str, str] | None = None,
    ) -> SegmentDoc:
        columns = {c: [getattr(f, c) for f in faces] for c in _COLUMNS}
        columns["box"] = [list(b) for b in columns["box"]]
        return cls(segment=segment, job=job, model=model, dim=dim, columns=columns, photos=photos or {})

    @property
    def faces(self) -> FaceRows:
        return FaceRows(self.job, self.columns)


class SegmentRef(BaseModel):
    """A segment as a head lists it, with the object that says who its faces are in this version."""

    id: str
    job: str
    model: str
    dim: int
    faces: int
    photos: int
    assign: str | None = None  # key of its AssignDoc in this version
    unassigned: int = 0  # faces no person holds (duplicates of photos already in the library excluded)
    skipped: int = 0  # faces of photos the library already had from another segment
    new_photos: int | None = None  # its photos the library did not have before (None: admitted before this count)


class AssignDoc(BaseModel):
    """Who each face of one segment is: ``person[row]`` (None: unassigned), which rows a user confirmed,
    and the people a face was moved out of (it never joins them again)."""

    person: list[str | None]
    confirmed: list[int] = Field(default_factory=list)
    rejected: dict[str, list[str]] = Field(default_factory=dict)  # str(row) -> person ids
    skip: list[int] = Field(default_factory=list)  # faces of photos the library already had (left out)

    def unassigned(self) -> int:
        skipped = set(self.skip)
        return sum(1 for n, p in enumerate(self.person) if p is None and n not in skipped)


class Member(BaseModel):
    """A face as a person's page (or the unassigned list) shows it."""

    face: str
    segment: str
    row: int
    photo: str
    photo_key: str
    thumb: str | None = None
    box: tuple[float, float, float, float]
    score: float
    taken: float | None = None
    confirmed: bool = False
    name: str | None = None  # the photo's name in the job that brought it

    @classmethod
    def of(cls, segment: str, row: int, face: SegmentFace, confirmed: bool = False) -> Member:
        return cls(segment=segment, row=row, confirmed=confirmed, **{k: getattr(face, k) for k in _SHOWN})


# what a member shows of its segment face
_SHOWN = ("face", "photo", "photo_key", "thumb", "box", "score", "taken", "name")


class MembersDoc(BaseModel):
    faces: list[Member]


class Person(BaseModel):
    """One person of the library."""

    id: str
    name: str | None = None
    hidden: bool = False
    cover: str | None = None  # the face a user chose for the cover
    auto_cover: str | None = None  # else this one: the best face (score and size)
    faces: int = 0
    photos: int = 0
    latest: float | None = None  # date taken of the newest photo
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)
    members: str | None = None  # key of the MembersDoc

    @property
    def cover_face(self) -> str | None:
        return self.cover or self.auto_cover


def may_be_one(a: Person, b: Person) -> bool:
    """Whether two people may be suggested as one: not once a user gave them different names (a decision);
    two people given the same name are (the user named one person twice)."""
    return not (a.name and b.name and a.name.strip().casefold() != b.name.strip().casefold())


class PeopleDoc(BaseModel):
    people: list[Person] = Field(default_factory=list)
    merged: dict[str, str] = Field(default_factory=dict)  # merged-away id -> the id it went into
    exemplars: dict[str, str] = Field(default_factory=dict)  # shard -> key of its packed vectors


def resolve_merged(merged: dict[str, str], person_id: str) -> str:
    """The id a person has now, following merges (`merged`: merged-away id -> the id it went into)."""
    seen = set()
    while person_id in merged and person_id not in seen:
        seen.add(person_id)
        person_id = merged[person_id]
    return person_id


class Suggestion(BaseModel):
    a: str
    b: str
    distance: float


class Head(BaseModel):
    """One version of a tenant's library: everything a reader needs, by key."""

    format: str = FORMAT
    version: int
    created_at: float = Field(default_factory=time.time)
    writer: str = ""
    space: str | None = None  # the embedding space every face of this library shares
    segments: list[SegmentRef] = Field(default_factory=list)
    people: str | None = None  # key of the PeopleDoc
    suggestions: list[Suggestion] = Field(default_factory=list)
    decisions_applied: list[str] = Field(default_factory=list)  # recent decision ids (newest last)
    stats: dict[str, int] = Field(default_factory=dict)
    adapter: str | None = None  # key of the adopted AdapterDoc: faces are compared through its head


DecisionKind = Literal["name", "hide", "cover", "merge", "move_out", "assign", "confirm", "adapter"]


def decision_id() -> str:
    """Time-ordered, unique: milliseconds then randomness (the log lists in the order decisions were made)."""
    return f"{int(time.time() * 1000):013d}-{secrets.token_hex(4)}"


class Decision(BaseModel):
    """One thing a user said about people. Written to the log before anything changes, never rewritten."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=decision_id)
    at: float = Field(default_factory=time.time)
    kind: DecisionKind
    person: str | None = None
    other: str | None = None  # merge: the person merged into `person`
    face: str | None = None
    faces: list[str] = Field(default_factory=list)
    name: str | None = None
    hidden: bool | None = None
    adapter: str | None = None  # kind "adapter": the adapter to use from now on (None: none, raw vectors)


class Figures(BaseModel):
    """How one way of comparing faces does on the held-out labelled faces (at the space's thresholds)."""

    genuine_pairs: int = 0
    impostor_pairs: int = 0
    tar: float = 0.0  # genuine pairs under `verify`
    far: float = 0.0  # impostor pairs under `verify`
    verification: float = 0.0  # balanced accuracy: (tar + 1 - far) / 2
    faces: int = 0  # held-out faces assigned by the nightly rule
    right: int = 0
    wrong: int = 0  # to another person, or to someone the face was moved out of
    waiting: int = 0


class Validation(BaseModel):
    """The evidence an adapter was judged on: before (the comparison in use) and after (with it)."""

    held_out: int = 0
    people: int = 0  # labelled people with held-out faces
    before: Figures = Field(default_factory=Figures)
    after: Figures = Field(default_factory=Figures)
    unlabelled_people: int = 0  # people nobody named or confirmed, whose faces were scored both ways
    unlabelled_faces: int = 0
    changed_people: int = 0  # of them, people with a face that would go to a different person
    changed_limit: int = 0


class AdapterDoc(BaseModel):
    """One learnt head (``adapters/v<n>.json``): how it was trained, the validation and its verdict. Written
    once, before the library adopts it (or not)."""

    version: int
    space: str
    dim: int
    weights: str  # key of the packed (dim, dim) matrix M: a face is compared as x @ M
    created_at: float = Field(default_factory=time.time)
    library_version: int = 0  # the library version it learnt from
    previous: str | None = None  # the adapter in use when it was trained (a rollback returns to it)
    accepted: bool = False  # the validation's verdict; whether it is in use is the head's `adapter`
    reason: str = ""
    params: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, float] = Field(default_factory=dict)
    validation: Validation = Field(default_factory=Validation)

    def figures(self) -> dict[str, Any]:
        """What the validation measured and what training took, as the API and the job's summary show them."""
        shown = {"held_out", "before", "after", "unlabelled_people", "changed_people"}
        return {**self.validation.model_dump(include=shown), "training": self.training}


class PersonVideo(BaseModel):
    """A video a person appears in, with when (written by a faces job when a track of the video joins
    the person; read by the person's page). One document per person and video item."""

    model_config = ConfigDict(extra="ignore")

    job: str
    item: int
    name: str  # the video's name in its job
    video_key: str  # the original, relative to the tenant
    ranges: list[tuple[float, float]]  # seconds on screen
    tracks: list[int]  # rows of the video's tracks table
    thumb: str | None = None  # the best track's thumbnail, relative to the tenant
    duration_s: float = 0.0
    distance: float = 0.0  # of the closest track to the person
