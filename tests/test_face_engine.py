"""The face engine: detection, rotation, batching, alignment/embedding parity with dlib, and chunk outputs.

Images come from scikit-image's bundled data (astronaut: Eileen Collins; camera: the cameraman), so
the tests need no evaluation data. Model tests are marked slow; models load once per module.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.conftest import fresh_python, heavy_imports
from workers.contract import FacesParams
from workers.faces.detectors import pad_groups
from workers.faces.index import (
    FACE_SCHEMA,
    PhotoRecord,
    chunk_outputs,
    content_hash,
    face_thumbnail,
    read_embeddings,
    read_table,
)
from workers.faces.types import Face, PhotoFaces, rotate_box, rotate_points, rotated_size

skdata = pytest.importorskip("skimage.data")

ASTRONAUT_BOX = (181.0, 62.0, 268.0, 172.0)  # MTCNN's box, rounded
SAME_PERSON = 0.6  # dlib's documented decision threshold


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def astronaut() -> Image.Image:
    return Image.fromarray(skdata.astronaut())


def cameraman() -> Image.Image:
    return Image.fromarray(skdata.camera()).convert("RGB")


def group_photo() -> tuple[Image.Image, list[tuple[int, int, int, int]]]:
    """Four faces of two people pasted on a grey canvas, and the regions they were pasted into."""
    astro = astronaut().crop((145, 20, 305, 215))
    camera = cameraman().crop((165, 85, 290, 225))
    canvas = Image.new("RGB", (900, 520), (128, 128, 128))
    regions = []
    for crop, (x, y), scale in (
        (astro, (20, 40), 1.0),
        (camera, (230, 260), 1.4),
        (astro.transpose(Image.Transpose.FLIP_LEFT_RIGHT), (480, 30), 0.8),
        (camera, (680, 200), 1.0),
    ):
        crop = crop.resize((round(crop.width * scale), round(crop.height * scale)), Image.Resampling.BICUBIC)
        canvas.paste(crop, (x, y))
        regions.append((x, y, x + crop.width, y + crop.height))
    return canvas, regions


# --- geometry and outputs (no models) -------------------------------------------------------------


def test_rotation_maps_points_like_numpy_rot90() -> None:
    image = np.zeros((30, 50), np.uint8)  # height 30, width 50
    image[5, 40] = 1  # the pixel whose centre is (40.5, 5.5)
    for angle in (90, 180, 270):
        turned = np.rot90(image, angle // 90)
        y, x = np.argwhere(turned == 1)[0]
        mapped = rotate_points(np.array([[40.5, 5.5]]), angle, (50, 30))[0]
        assert np.allclose(mapped, (x + 0.5, y + 0.5))
        assert rotated_size((50, 30), angle) == (turned.shape[1], turned.shape[0])


def test_face_rotated_round_trip_and_upright() -> None:
    landmarks = np.arange(10, dtype=np.float32).reshape(5, 2) + 20
    face = Face(box=(10.0, 20.0, 40.0, 60.0), score=0.99, landmarks=landmarks)
    turned = face.rotated(90, (100, 80))
    assert turned.rotation == 270
    assert turned.box == rotate_box(face.box, 90, (100, 80))
    back = turned.rotated(270, (80, 100))
    assert back.rotation == 0
    assert np.allclose(back.box, face.box)
    assert np.allclose(back.landmarks, landmarks)


def test_face_mirrored_swaps_sides() -> None:
    landmarks = np.array([[30, 40], [60, 40], [45, 55], [35, 70], [55, 70]], dtype=np.float32)
    face = Face(box=(20.0, 30.0, 70.0, 90.0), score=0.9, landmarks=landmarks, rotation=90)
    mirrored = face.mirrored(100)
    assert mirrored.box == (30.0, 30.0, 80.0, 90.0)
    assert mirrored.rotation == 270
    assert np.allclose(mirrored.landmarks[0], (40, 40))  # the original right eye, now on the image left
    assert mirrored.landmarks[0, 0] < mirrored.landmarks[1, 0]
    again = mirrored.mirrored(100)
    assert again.box == face.box and again.rotation == 90 and np.allclose(again.landmarks, landmarks)


def test_pad_groups_batches_similar_sizes_and_separates_others() -> None:
    groups = pad_groups([(512, 512), (500, 510), (300, 900), (512, 512), (100, 100)], max_pad_ratio=1.3)
    assert sorted(map(sorted, groups)) == [[0, 1, 3], [2], [4]]
    assert sorted(pad_groups([(10, 10), (10, 11)], max_pad_ratio=1.0)) == [[0], [1]]


def _record(key: str, faces: list[Face], dim: int = 128) -> PhotoRecord:
    rng = np.random.default_rng(len(key))
    photo = PhotoFaces(
        faces=faces,
        embeddings=rng.normal(size=(len(faces), dim)).astype(np.float32),
        size=(640, 480),
        model="dlib-resnet",
        model_version="v1",
    )
    return PhotoRecord(photo_key=key, item_id=f"item-{key}", photo_sha256=content_hash(key.encode()), faces=photo)


def test_parquet_and_npy_round_trip() -> None:
    lm = np.arange(10, dtype=np.float32).reshape(5, 2)
    records = [
        _record("a.jpg", [Face((1.0, 2.0, 30.0, 40.0), 0.99, lm), Face((50.0, 60.0, 90.0, 99.5), 0.95, lm + 1)]),
        _record("empty.jpg", []),
        _record("b.jpg", [Face((5.0, 6.0, 70.0, 80.0), 1.5, None, rotation=90)]),
    ]
    table_data, npy_data = chunk_outputs(records)
    table = read_table(table_data)
    matrix = read_embeddings(npy_data)

    assert table.schema.equals(FACE_SCHEMA, check_metadata=True)
    rows = table.to_pylist()
    assert [r["photo_key"] for r in rows] == ["a.jpg", "a.jpg", "b.jpg"]
    assert [r["face_index"] for r in rows] == [0, 1, 0]
    assert [r["embedding_row"] for r in rows] == [0, 1, 2]
    assert rows[1]["x2"] == pytest.approx(90.0) and rows[1]["y2"] == pytest.approx(99.5)
    assert rows[0]["landmarks"] == pytest.approx(lm.reshape(-1).tolist())
    assert rows[2]["landmarks"] is None and rows[2]["rotation"] == 90
    assert rows[0]["photo_sha256"] == content_hash(b"a.jpg") and rows[0]["model_version"] == "v1"
    expected = np.concatenate([r.faces.embeddings for r in records])
    assert matrix.dtype == np.float32 and np.array_equal(matrix, expected)


def test_empty_chunk_round_trips() -> None:
    table_data, npy_data = chunk_outputs([_record("none.jpg", [])])
    assert read_table(table_data).num_rows == 0
    assert read_embeddings(npy_data).shape == (0, 128)


def test_thumbnail_is_an_upright_square_jpeg() -> None:
    image = astronaut()
    face = Face(ASTRONAUT_BOX, 0.99)
    upright = Image.open(io.BytesIO(face_thumbnail(image, face)))
    assert upright.format == "JPEG" and upright.size == (112, 112)

    turned_image = image.transpose(Image.Transpose.ROTATE_90)
    turned_face = face.rotated(90, image.size)
    turned = Image.open(io.BytesIO(face_thumbnail(turned_image, turned_face)))
    diff = np.abs(np.asarray(turned, np.int16) - np.asarray(upright, np.int16)).mean()
    assert diff < 8  # the same pixels, up to JPEG noise


def test_package_import_is_light() -> None:
    assert (
        heavy_imports(
            "workers.faces, workers.faces.engine, workers.faces.index, workers.faces.detectors, "
            "workers.faces.embedders, workers.faces.weights, workers.faces.sface, workers.faces.fused, "
            "workers.faces.torch_embedder, workers.faces.spaces, workers.models.onnx_session"
        )
        == []
    )


# --- models ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_dlib_only_pipeline_never_imports_torch() -> None:
    code = (
        "import sys; from skimage import data; from PIL import Image; "
        "from workers.contract import FacesParams; from workers.faces.engine import FaceEngine; "
        "engine = FaceEngine(FacesParams(detector='hog', embedder='dlib-resnet')); "
        "result = engine.index_photo(Image.fromarray(data.astronaut())); "
        "print(len(result) > 0, 'torch' in sys.modules)"
    )
    assert fresh_python(code).split() == ["True", "False"]


@pytest.fixture(scope="module")
def engine():
    from workers.faces.engine import FaceEngine

    # MTCNN and the dlib ResNet (torch port) alone: these tests compare with MTCNN's boxes and dlib itself
    engine = FaceEngine(FacesParams(detector="mtcnn", embedder="dlib-resnet-torch"), device="cpu")
    engine.load()
    return engine


@pytest.fixture(scope="module")
def astronaut_faces(engine) -> PhotoFaces:
    return engine.index_photo(astronaut())


@pytest.mark.slow
def test_astronaut_has_one_face(astronaut_faces: PhotoFaces) -> None:
    assert len(astronaut_faces) == 1
    face = astronaut_faces.faces[0]
    assert _iou(face.box, ASTRONAUT_BOX) > 0.9
    assert face.score > 0.99 and face.landmarks is not None and face.landmarks.shape == (5, 2)
    left_eye, right_eye = face.landmarks[0], face.landmarks[1]
    assert left_eye[0] < right_eye[0]  # MTCNN order: image-left eye first
    assert astronaut_faces.embeddings.shape == (1, 128) and astronaut_faces.embeddings.dtype == np.float32
    assert (astronaut_faces.model, astronaut_faces.size) == ("dlib-resnet-torch", (512, 512))


@pytest.mark.slow
def test_group_photo_finds_every_face(engine) -> None:
    canvas, regions = group_photo()
    result = engine.index_photo(canvas)
    assert len(result) == len(regions)
    for x1, y1, x2, y2 in regions:
        inside = [f for f in result.faces if x1 <= f.centre[0] <= x2 and y1 <= f.centre[1] <= y2]
        assert len(inside) == 1
    # faces of the same person are close, of different people far
    by_region = [next(i for i, f in enumerate(result.faces) if x1 <= f.centre[0] <= x2) for x1, _, x2, _ in regions]
    vec = result.embeddings[by_region]
    assert np.linalg.norm(vec[0] - vec[2]) < SAME_PERSON  # astronaut and her mirror image
    assert np.linalg.norm(vec[1] - vec[3]) < SAME_PERSON  # cameraman at two scales
    assert np.linalg.norm(vec[0] - vec[1]) > SAME_PERSON


@pytest.mark.slow
def test_blank_and_tiny_images_have_no_faces(engine) -> None:
    blank = Image.new("RGB", (320, 240), (200, 200, 200))
    tiny = Image.new("RGB", (5, 7), (0, 0, 0))
    results = engine.index_batch([blank, tiny])
    assert [len(r) for r in results] == [0, 0]
    assert all(r.embeddings.shape == (0, 128) for r in results)
    assert engine.index_batch([]) == []


@pytest.mark.slow
def test_rotated_photo_needs_try_rotations_and_maps_back(engine, astronaut_faces: PhotoFaces) -> None:
    from workers.faces.engine import FaceEngine

    turned = Image.fromarray(np.ascontiguousarray(np.rot90(skdata.astronaut())))  # no EXIF to undo it
    assert len(engine.index_photo(turned)) == 0

    rotating = FaceEngine(FacesParams(try_rotations=True), detector=engine.detector, embedder=engine.embedder)
    result = rotating.index_photo(turned)
    assert len(result) == 1
    face = result.faces[0]
    assert face.rotation == 270  # turning the photo a further 270 degrees makes the face upright
    expected = rotate_box(astronaut_faces.faces[0].box, 90, (512, 512))
    assert _iou(face.box, expected) > 0.95
    assert np.linalg.norm(result.embeddings[0] - astronaut_faces.embeddings[0]) < 0.05


@pytest.mark.slow
def test_mtcnn_batches_images_of_different_sizes(engine) -> None:
    from workers.faces.detectors import MTCNNDetector

    canvas, _ = group_photo()
    images = [
        astronaut(),
        cameraman().resize((400, 400)),
        astronaut().crop((100, 0, 400, 300)),
        Image.new("RGB", (300, 200)),
        canvas,
        astronaut().crop((0, 0, 500, 510)),
    ]
    detector = MTCNNDetector(max_batch_size=4)
    batched = detector.detect_batch(images)
    single = [detector.detect(image) for image in images]
    assert [len(fs) for fs in batched] == [1, 1, 1, 0, 4, 1]
    for got, want in zip(batched, single, strict=True):
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert _iou(g.box, w.box) > 0.9


@pytest.mark.slow
def test_embedding_matches_dlib_on_the_same_chip(engine, astronaut_faces: PhotoFaces) -> None:
    import dlib

    from workers.faces.engine import FaceEngine
    from workers.faces.weights import DLIB_RESNET, DLIB_SHAPE_5, weights_path

    image = skdata.astronaut()
    faces = astronaut_faces.faces
    model = dlib.face_recognition_model_v1(str(weights_path(DLIB_RESNET)))
    chip = engine.embedder.align(image, faces)[0]
    direct = np.asarray(model.compute_face_descriptor(chip))
    assert np.linalg.norm(direct - engine.embedder.embed_chips(chip[None])[0]) < 1e-3  # the network: dlib's
    assert np.linalg.norm(direct - engine.embedder.embed(image, faces)[0]) < 0.01  # chips may differ by 1 level

    # the engine averages with the same face in the mirror image, aligned there afresh
    mirror = np.ascontiguousarray(image[:, ::-1])
    mirror_chip = engine.embedder.align(mirror, [f.mirrored(image.shape[1]) for f in faces])[0]
    both = (direct + np.asarray(model.compute_face_descriptor(mirror_chip))) / 2
    assert np.linalg.norm(both - astronaut_faces.embeddings[0]) < 0.01
    assert astronaut_faces.model_version == "v1+mirror"
    plain = FaceEngine(FacesParams(mirror=False), detector=engine.detector, embedder=engine.embedder)
    result = plain.index_photo(astronaut())
    assert result.model_version == "v1" and np.linalg.norm(result.embeddings[0] - direct) < 0.01

    # and stays close to face_recognition's own pipeline (HOG box, 5 landmarks, descriptor on the image)
    rect = dlib.get_frontal_face_detector()(image, 1)[0]
    shape = dlib.shape_predictor(str(weights_path(DLIB_SHAPE_5)))(image, rect)
    classic = np.asarray(model.compute_face_descriptor(image, shape))
    assert np.linalg.norm(classic - astronaut_faces.embeddings[0]) < 0.15


@pytest.mark.slow
def test_same_face_resized_is_close_other_face_far(engine, astronaut_faces: PhotoFaces) -> None:
    small, gray, other = engine.index_batch([astronaut().resize((300, 300)), astronaut().convert("L"), cameraman()])
    ref = astronaut_faces.embeddings[0]
    assert _iou(small.faces[0].box, tuple(v * 300 / 512 for v in ASTRONAUT_BOX)) > 0.8
    assert np.linalg.norm(small.embeddings[0] - ref) < SAME_PERSON
    assert np.linalg.norm(gray.embeddings[0] - ref) < SAME_PERSON
    assert np.linalg.norm(other.embeddings[0] - ref) > SAME_PERSON


@pytest.mark.slow
def test_detect_size_scales_boxes_back(engine, astronaut_faces: PhotoFaces) -> None:
    from workers.faces.engine import FaceEngine

    big = astronaut().resize((1024, 1024), Image.Resampling.BICUBIC)
    shrinking = FaceEngine(FacesParams(detect_size=256), detector=engine.detector, embedder=engine.embedder)
    result = shrinking.index_photo(big)
    assert len(result) == 1
    assert _iou(result.faces[0].box, tuple(v * 2 for v in ASTRONAUT_BOX)) > 0.8
    assert np.linalg.norm(result.embeddings[0] - astronaut_faces.embeddings[0]) < SAME_PERSON


@pytest.mark.slow
def test_hog_detector_and_engine(engine, astronaut_faces: PhotoFaces) -> None:
    from workers.faces.detectors import HOGDetector
    from workers.faces.engine import FaceEngine

    faces = HOGDetector().detect(astronaut())
    assert faces and _iou(faces[0].box, ASTRONAUT_BOX) > 0.5 and faces[0].landmarks is None

    hog = FaceEngine(FacesParams(detector="hog"), embedder=engine.embedder)
    result = hog.index_photo(astronaut())
    best = result.faces.index(max(result.faces, key=lambda f: f.score))
    assert np.linalg.norm(result.embeddings[best] - astronaut_faces.embeddings[0]) < 0.15


@pytest.mark.slow
def test_embedder_registry_and_plug_in(monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.faces import embedders
    from workers.faces.engine import FaceEngine

    assert embedders.DEFAULT_EMBEDDER == "dlib+sface"  # chosen by measurement: docs/benchmarks.md
    assert type(embedders.get_embedder("auto", "cpu")) is embedders.EMBEDDERS[embedders.DEFAULT_EMBEDDER]
    assert isinstance(embedders.get_embedder("dlib-resnet", "auto"), embedders.DlibEmbedder)
    with pytest.raises(ValueError, match="unknown or unavailable embedder"):
        embedders.get_embedder("no-such-model", "cpu")

    class MeanColour(embedders.Embedder):
        """A stand-in model: proves a new embedder needs only `embed_chips`."""

        name, version, space, dim = "mean-colour", "0", "test", 3

        def _load(self) -> None:
            pass

        def embed_chips(self, chips: np.ndarray, jitter: int = 0) -> np.ndarray:
            return chips.reshape(len(chips), -1, 3).mean(axis=1).astype(np.float32)

    monkeypatch.setitem(embedders.EMBEDDERS, "mean-colour", MeanColour)
    custom = embedders.get_embedder("mean-colour", "cpu")
    result = FaceEngine(FacesParams(), device="cpu", embedder=custom).index_photo(astronaut())
    assert result.model == "mean-colour" and result.embeddings.shape == (1, 3)


@pytest.mark.slow
def test_yunet_finds_the_faces_mtcnn_finds_with_landmarks_in_the_same_order(astronaut_faces: PhotoFaces) -> None:
    from workers.faces.detectors import YuNetDetector, detect_with_rotations
    from workers.models import WeightsNotAvailable

    detector = YuNetDetector()
    try:
        detector.load()
    except WeightsNotAvailable as exc:
        pytest.skip(str(exc))
    face = detector.detect(astronaut())[0]
    reference = astronaut_faces.faces[0]
    assert _iou(face.box, reference.box) > 0.7 and face.landmarks is not None
    eyes = np.linalg.norm(reference.landmarks[1] - reference.landmarks[0])
    assert np.linalg.norm(face.landmarks - reference.landmarks, axis=1).max() < 0.25 * eyes
    canvas, regions = group_photo()
    found = detector.detect(canvas)
    assert sorted(
        len([f for f in found if x1 <= f.centre[0] <= x2 and y1 <= f.centre[1] <= y2]) for x1, y1, x2, y2 in regions
    ) == [1, 1, 1, 1]
    # a face on its side: found as it lies (its landmarks say which way) or on a retry turned upright
    for transpose, rotation in ((Image.Transpose.ROTATE_90, 270), (Image.Transpose.ROTATE_270, 90)):
        again = detect_with_rotations(detector, [astronaut().transpose(transpose)])[0]
        assert len(again) == 1 and again[0].rotation == rotation
    assert detector.detect(Image.new("RGB", (5, 7))) == [] and detector.detect(Image.new("RGB", (320, 240))) == []
