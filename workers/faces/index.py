"""The outputs of a faces chunk, as bytes ready for object storage, and their readers.

Per chunk: one Parquet table with a row per face (`FACE_SCHEMA`) and one ``.npy`` float32 matrix whose
row ``embedding_row`` belongs to that face. Per face, optionally, a JPEG thumbnail. Pure functions:
no storage, no models.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from workers.faces.types import Face, PhotoFaces

SCHEMA_VERSION = "1"

FACE_SCHEMA = pa.schema(
    [
        pa.field("photo_key", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("photo_sha256", pa.string(), nullable=False),
        pa.field("face_index", pa.int32(), nullable=False),
        pa.field("x1", pa.float32(), nullable=False),
        pa.field("y1", pa.float32(), nullable=False),
        pa.field("x2", pa.float32(), nullable=False),
        pa.field("y2", pa.float32(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
        # MTCNN order, (x, y) pairs flattened: left eye, right eye, nose, mouth left, mouth right;
        # the child is named "element" as Parquet names it, so a table read back equals this schema
        pa.field("landmarks", pa.list_(pa.field("element", pa.float32()), 10), nullable=True),
        pa.field("rotation", pa.int16(), nullable=False),
        pa.field("photo_width", pa.int32(), nullable=False),
        pa.field("photo_height", pa.int32(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("embedding_row", pa.int32(), nullable=False),
    ],
    metadata={"nightshift.faces.schema": SCHEMA_VERSION},
)


@dataclass(frozen=True)
class PhotoRecord:
    """One indexed photo of a chunk: where it came from and what the engine found."""

    photo_key: str
    item_id: str
    photo_sha256: str
    faces: PhotoFaces


def content_hash(data: bytes) -> str:
    """Hex sha256 of a photo's bytes (the table's `photo_sha256`)."""
    return hashlib.sha256(data).hexdigest()


def face_rows(records: Sequence[PhotoRecord]) -> list[dict[str, object]]:
    """The table rows of `records`, one per face, numbered by `embedding_row` in chunk order."""
    rows: list[dict[str, object]] = []
    for record in records:
        photo = record.faces
        for index, face in enumerate(photo.faces):
            x1, y1, x2, y2 = face.box
            rows.append(
                {
                    "photo_key": record.photo_key,
                    "item_id": record.item_id,
                    "photo_sha256": record.photo_sha256,
                    "face_index": index,
                    "x1": x1,
                    "y1": y1,
                    "x2": x2,
                    "y2": y2,
                    "score": face.score,
                    "landmarks": None if face.landmarks is None else np.asarray(face.landmarks).reshape(10).tolist(),
                    "rotation": face.rotation,
                    "photo_width": photo.size[0],
                    "photo_height": photo.size[1],
                    "model": photo.model,
                    "model_version": photo.model_version,
                    "embedding_row": len(rows),
                }
            )
    return rows


def table_bytes(records: Sequence[PhotoRecord]) -> bytes:
    """The chunk's face table as Parquet bytes (zstd); a chunk without faces gives an empty table."""
    table = pa.Table.from_pylist(face_rows(records), schema=FACE_SCHEMA)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def embeddings_bytes(records: Sequence[PhotoRecord], dim: int = 128) -> bytes:
    """The chunk's embeddings as one ``.npy`` float32 (n_faces, dim) matrix, rows in table order.

    Raises ValueError when photos disagree on the dimension.
    """
    parts = [np.asarray(r.faces.embeddings, dtype=np.float32) for r in records]
    if any(p.ndim != 2 for p in parts):
        raise ValueError("embeddings must be (n_faces, dim) matrices")
    dims = {p.shape[1] for p in parts if len(p)}
    if len(dims) > 1:
        raise ValueError(f"embeddings of different dimensions in one chunk: {sorted(dims)}")
    matrix = np.concatenate(parts) if dims else np.zeros((0, dim), np.float32)
    sink = io.BytesIO()
    np.save(sink, np.ascontiguousarray(matrix), allow_pickle=False)
    return sink.getvalue()


def chunk_outputs(records: Sequence[PhotoRecord], dim: int = 128) -> tuple[bytes, bytes]:
    """(Parquet table, .npy embeddings) of one chunk; `dim` is the embedder's (the width of an empty matrix)."""
    return table_bytes(records), embeddings_bytes(records, dim)


def read_table(data: bytes) -> pa.Table:
    """A face table written by `table_bytes`."""
    return pq.read_table(io.BytesIO(data))


def read_embeddings(data: bytes) -> np.ndarray:
    """An embeddings matrix written by `embeddings_bytes`: (n, dim) float32."""
    matrix = np.load(io.BytesIO(data), allow_pickle=False)
    if matrix.ndim != 2 or matrix.dtype != np.float32:
        raise ValueError(f"expected a 2-D float32 matrix, got {matrix.dtype} {matrix.shape}")
    return matrix


_TURN_UPRIGHT = {
    90: Image.Transpose.ROTATE_90,
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_270,
}


def face_thumbnail(image: Image.Image, face: Face, size: int = 112, margin: float = 0.25, quality: int = 90) -> bytes:
    """A square JPEG of the face, upright, `margin` of the box side added around it.

    Parts of the square outside the photo are black.
    """
    cx, cy = face.centre
    half = max(face.width, face.height) * (1 + 2 * margin) / 2
    box = (round(cx - half), round(cy - half), round(cx + half), round(cy + half))
    crop = image.crop(box).convert("RGB")
    if face.rotation:
        crop = crop.transpose(_TURN_UPRIGHT[face.rotation])
    crop = crop.resize((size, size), Image.Resampling.LANCZOS)
    sink = io.BytesIO()
    crop.save(sink, format="JPEG", quality=quality)
    return sink.getvalue()
