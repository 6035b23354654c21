"""Face indexing: detect, align and embed every face of a photo, and write the per-chunk outputs.

- `workers.faces.engine.FaceEngine`: detect -> align -> embed for a `FacesParams`.
- `workers.faces.detectors`: MTCNN and dlib HOG detectors, `detect_with_rotations`.
- `workers.faces.embedders`: the `Embedder` interface, dlib's ResNet, `get_embedder`.
- `workers.faces.index`: Parquet face table, ``.npy`` embeddings, JPEG thumbnails.

Importing this package (or any of those modules) imports neither torch nor dlib; models load on first use.
"""

from workers.faces.types import Face, PhotoFaces

__all__ = ["Face", "PhotoFaces"]
