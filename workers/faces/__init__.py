"""Face indexing: detect, align and embed every face of a photo, and write the per-chunk outputs.

- `workers.faces.engine.FaceEngine`: detect -> align -> embed for a `FacesParams`.
- `workers.faces.detectors`: YuNet (with MTCNN's landmarks), MTCNN and dlib HOG detectors, `detect_with_rotations`.
- `workers.faces.embedders`: the `Embedder` interface, dlib's ResNet, `get_embedder`; `torch_embedder` (dlib's
  ResNet in torch), `sface` (SFace, ArcFace alignment), `fused` (``dlib+sface``, the default).
- `workers.faces.spaces`: which model ids compare, and each space's calibrated thresholds.
- `workers.faces.index`: Parquet face table, ``.npy`` embeddings, JPEG thumbnails.

Importing this package (or any of those modules) imports neither torch, onnxruntime nor dlib; models load on
first use (`workers.models.base.InferenceModel`).
"""

from workers.faces.types import Face, PhotoFaces

__all__ = ["Face", "PhotoFaces"]
