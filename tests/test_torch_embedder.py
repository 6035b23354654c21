"""The torch port of dlib's face descriptor: reader, network, chips and embedder against dlib itself.

Faces come from scikit-image's bundled images (the astronaut, the cameraman) and transformed copies
of them: mirrored, rotated, cropped at the border, shrunk and enlarged (enlarged faces send dlib's
chip extraction through its image pyramid). Landmarks are dlib's 5-point shape predictor on a box.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from workers.faces.dlib_format import DlibFormatError, parse_dlib_net, read_dlib_net
from workers.faces.types import Face
from workers.models import WeightsNotAvailable

skdata = pytest.importorskip("skimage.data")
dlib = pytest.importorskip("dlib")
torch = pytest.importorskip("torch")

pytestmark = pytest.mark.slow

ASTRONAUT_BOX = (179, 83, 266, 170)  # dlib HOG detector, no upsampling
CAMERAMAN_BOX = (175, 95, 265, 185)  # hand-placed: HOG misses this half-profile face


def _weights(name: str) -> Path:
    from workers.faces.weights import weights_path

    try:
        return weights_path(name)
    except WeightsNotAvailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def resnet_path() -> Path:
    from workers.faces.weights import DLIB_RESNET

    return _weights(DLIB_RESNET)


@pytest.fixture(scope="module")
def predictor() -> object:
    from workers.faces.weights import DLIB_SHAPE_5

    return dlib.shape_predictor(str(_weights(DLIB_SHAPE_5)))


@pytest.fixture(scope="module")
def dlib_net(resnet_path: Path) -> object:
    return dlib.face_recognition_model_v1(str(resnet_path))


@pytest.fixture(scope="module")
def embedder(resnet_path: Path) -> object:
    from workers.faces.torch_embedder import TorchDlibEmbedder

    model = TorchDlibEmbedder(device="cpu", max_batch_size=8)
    model.load()
    return model


def _resize(image: np.ndarray, scale: float) -> np.ndarray:
    height, width = image.shape[:2]
    size = (round(width * scale), round(height * scale))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


def _scaled(box: tuple[int, int, int, int], scale: float) -> tuple[int, int, int, int]:
    return tuple(round(v * scale) for v in box)  # type: ignore[return-value]


def _side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    height = max(left.shape[0], right.shape[0])
    canvas = np.full((height, left.shape[1] + right.shape[1], 3), 128, dtype=np.uint8)
    canvas[: left.shape[0], : left.shape[1]] = left
    canvas[: right.shape[0], left.shape[1] :] = right
    return canvas


def _shifted(box: tuple[int, int, int, int], dx: int) -> tuple[int, int, int, int]:
    return box[0] + dx, box[1], box[2] + dx, box[3]


def face_scenes() -> list[tuple[str, np.ndarray, list[tuple[int, int, int, int]]]]:
    """(name, RGB image, face boxes): faces at several sizes, angles and positions."""
    astro = skdata.astronaut()
    camera = np.ascontiguousarray(np.repeat(skdata.camera()[..., None], 3, axis=2))
    width = astro.shape[1]
    x1, y1, x2, y2 = ASTRONAUT_BOX
    rotated = np.asarray(Image.fromarray(astro).rotate(25, center=((x1 + x2) / 2, (y1 + y2) / 2)))
    big_astro = _resize(astro, 5.0)[:1800, :2000]
    return [
        ("astronaut", astro, [ASTRONAUT_BOX]),
        ("mirrored", np.ascontiguousarray(astro[:, ::-1]), [(width - 1 - x2, y1, width - 1 - x1, y2)]),
        ("rotated 25", rotated, [ASTRONAUT_BOX]),
        (
            "cut at the border",
            np.ascontiguousarray(astro[y1 - 10 :, x1 + 20 :]),
            [(-20, 10, x2 - x1 - 20, y2 - y1 + 10)],
        ),
        ("shrunk", _resize(astro, 0.6), [_scaled(ASTRONAUT_BOX, 0.6)]),
        ("enlarged 3x", _resize(astro, 3.0), [_scaled(ASTRONAUT_BOX, 3.0)]),
        (
            "two faces, one enlarged",
            _side_by_side(big_astro, _resize(camera, 2.5)),
            [_scaled(ASTRONAUT_BOX, 5.0), _shifted(_scaled(CAMERAMAN_BOX, 2.5), big_astro.shape[1])],
        ),
        ("astronaut and cameraman", _side_by_side(astro, camera), [ASTRONAUT_BOX, _shifted(CAMERAMAN_BOX, width)]),
    ]


@pytest.fixture(scope="module")
def scenes(predictor: object) -> list[tuple[str, np.ndarray, object, np.ndarray]]:
    """(name, image, dlib full_object_detections, (n, 5, 2) landmarks) per scene."""
    out = []
    for name, image, boxes in face_scenes():
        shapes = dlib.full_object_detections()
        for box in boxes:
            shapes.append(predictor(image, dlib.rectangle(*(int(v) for v in box))))  # type: ignore[operator]
        points = np.array([[[p.x, p.y] for p in shape.parts()] for shape in shapes], dtype=np.float64)
        out.append((name, image, shapes, points))
    return out


def _dlib_chips(scenes: list) -> np.ndarray:
    return np.concatenate([np.stack(dlib.get_face_chips(image, shapes)) for _, image, shapes, _ in scenes])


@pytest.fixture(scope="module")
def reference(scenes: list, dlib_net: object) -> tuple[np.ndarray, np.ndarray]:
    """dlib's chips of every scene face and dlib's descriptors of them."""
    chips = _dlib_chips(scenes)
    return chips, np.array(dlib_net.compute_face_descriptor(list(chips)))  # type: ignore[attr-defined]


# ---- reader ------------------------------------------------------------------------------------


def test_reader_parses_the_layer_stack(resnet_path: Path) -> None:
    net = read_dlib_net(resnet_path)
    assert net.loss.tag == "loss_metric_2"
    assert net.loss.attrs["distance_threshold"] == pytest.approx(0.6)
    assert net.input.tag == "input_rgb_image_sized"
    assert (net.input.attrs["rows"], net.input.attrs["cols"]) == (150, 150)
    assert net.input.attrs["means"] == pytest.approx((122.782, 117.001, 104.298), abs=1e-4)
    counts = {kind: net.count(kind) for kind in ("con", "affine", "relu", "add_prev", "avg_pool", "max_pool", "fc")}
    assert counts == {"con": 29, "affine": 29, "relu": 29, "add_prev": 14, "avg_pool": 5, "max_pool": 1, "fc": 1}
    assert net.count("tag_or_skip") == 22 and len(net.layers) == 130
    stem, fc = net.layers[-1], net.layers[0]
    assert stem.attrs["filters_shape"] == (32, 3, 7, 7) and stem.params is not None and stem.params.size == 4736
    assert (fc.attrs["num_inputs"], fc.attrs["num_outputs"], fc.attrs["bias_mode"]) == (256, 128, 1)
    assert sum(layer.params.size for layer in net.layers if layer.params is not None) == 5_614_592


def test_state_dict_fits_the_torch_network(resnet_path: Path) -> None:
    from workers.faces.dlib_resnet import DlibFaceResNet, state_dict_from_dlib

    state = state_dict_from_dlib(read_dlib_net(resnet_path))
    model = DlibFaceResNet()
    assert {k: tuple(v.shape) for k, v in state.items()} == {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert state["blocks.13.conv1.weight"].shape == (256, 256, 3, 3) and state["fc.weight"].shape == (128, 256)


def test_reader_rejects_other_bytes(resnet_path: Path) -> None:
    data = resnet_path.read_bytes()
    with pytest.raises(DlibFormatError, match="end of data"):
        parse_dlib_net(data[: len(data) // 2])
    with pytest.raises(DlibFormatError):
        parse_dlib_net(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(DlibFormatError, match="trailing"):
        parse_dlib_net(data + b"\x00")


def test_missing_weights_raise_a_clear_error(tmp_path: Path) -> None:
    from workers.faces.torch_embedder import TorchDlibEmbedder

    missing = tmp_path / "nowhere.dat"
    with pytest.raises(ValueError, match="^weights not available:"):
        read_dlib_net(missing)
    with pytest.raises(WeightsNotAvailable, match="^weights not available:.*nowhere.dat"):
        TorchDlibEmbedder(device="cpu", weights=missing).load()


# ---- network -----------------------------------------------------------------------------------


def test_descriptors_match_dlib_on_the_same_chips(
    reference: tuple[np.ndarray, np.ndarray], embedder: object, resnet_path: Path
) -> None:
    from workers.faces.dlib_resnet import DlibFaceResNet, embed_chips

    chips, expected = reference
    got = embedder.embed_chips(chips)  # type: ignore[attr-defined]
    assert got.shape == (len(chips), 128) and got.dtype == np.float32
    assert np.linalg.norm(got - expected, axis=1).max() < 1e-3
    # not normalised, like dlib: the norms vary around 1
    assert np.ptp(np.linalg.norm(got, axis=1)) > 1e-3
    unfused = DlibFaceResNet.from_dlib(read_dlib_net(resnet_path))
    raw = embed_chips(unfused, torch.from_numpy(chips).permute(0, 3, 1, 2), batch_size=5).numpy()
    assert np.linalg.norm(raw - expected, axis=1).max() < 1e-3


def test_jitter_is_seeded_and_stays_near_the_plain_descriptor(
    reference: tuple[np.ndarray, np.ndarray], embedder: object
) -> None:
    chips = reference[0][:1]
    plain = embedder.embed_chips(chips)  # type: ignore[attr-defined]
    first = embedder.embed_chips(chips, jitter=2)  # type: ignore[attr-defined]
    again = embedder.embed_chips(chips, jitter=2)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(first, again)
    distance = np.linalg.norm(first - plain, axis=1)
    assert (distance > 1e-3).all() and (distance < 0.3).all()
    np.testing.assert_array_equal(embedder.embed_chips(chips, jitter=1), plain)  # type: ignore[attr-defined]


# ---- chips -------------------------------------------------------------------------------------


def test_chip_geometry_matches_dlib(scenes: list) -> None:
    from workers.faces.chips import face_chip_details

    for name, _, shapes, points in scenes:
        ours = face_chip_details(points, 150, 0.25)
        for i, shape in enumerate(shapes):
            theirs = dlib.get_face_chip_details(shape, 150, 0.25)
            rect = theirs.rect
            expected = [rect.left(), rect.top(), rect.right(), rect.bottom()]
            np.testing.assert_allclose(ours.rects[i], expected, atol=1e-8, err_msg=name)
            assert ours.angles[i] == pytest.approx(theirs.angle, abs=1e-10), name


def test_batched_chips_match_dlib(scenes: list, reference: tuple[np.ndarray, np.ndarray], embedder: object) -> None:
    from workers.faces.chips import extract_chips, face_chip_details, pyramid_depths

    depths = np.concatenate([pyramid_depths(face_chip_details(points)) for *_, points in scenes])
    assert depths.max() >= 2 and (depths == 0).any()  # the scenes exercise dlib's pyramid
    images = [image for _, image, _, _ in scenes]
    owners = [i for i, (*_, points) in enumerate(scenes) for _ in points]
    chips = extract_chips(images, np.concatenate([p for *_, p in scenes]), image_index=owners)
    ours = chips.permute(0, 2, 3, 1).numpy()
    theirs, expected = reference
    difference = np.abs(ours.astype(int) - theirs.astype(int))
    assert difference.max() <= 1 and (difference > 0).mean() < 1e-3
    assert np.linalg.norm(embedder.embed_chips(ours) - expected, axis=1).max() < 0.02  # type: ignore[attr-defined]


def test_one_face_at_a_time_matches_get_face_chip(scenes: list) -> None:
    from workers.faces.chips import extract_chips

    _, image, shapes, points = next(s for s in scenes if s[0] == "two faces, one enlarged")
    ours = extract_chips(image, points, joint=False).permute(0, 2, 3, 1).numpy()
    theirs = np.stack([dlib.get_face_chip(image, shape) for shape in shapes])
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1


# ---- embedder ----------------------------------------------------------------------------------


def test_embedder_matches_the_dlib_path(scenes: list, embedder: object) -> None:
    from workers.faces.embedders import DlibEmbedder, available_embedders, get_embedder

    assert "dlib-resnet-torch" in available_embedders()
    assert type(get_embedder("dlib-resnet-torch", device="cpu")) is type(embedder)
    reference = DlibEmbedder()
    _, image, _, _ = scenes[-1]
    faces = [
        Face(box=(float(x1), float(y1), float(x2 + 1), float(y2 + 1)), score=1.0)
        for x1, y1, x2, y2 in face_scenes()[-1][2]
    ]
    size = (image.shape[1], image.shape[0])
    turned = np.ascontiguousarray(np.rot90(image, 1))
    turned_faces = [face.rotated(90, size) for face in faces]
    ours = embedder.embed_many([image, turned, image], [faces, turned_faces, []])  # type: ignore[attr-defined]
    expected = reference.embed(image, faces)
    assert [v.shape for v in ours] == [(2, 128), (2, 128), (0, 128)]
    assert np.linalg.norm(ours[0] - expected, axis=1).max() < 1e-3
    assert np.linalg.norm(ours[1] - reference.embed(turned, turned_faces), axis=1).max() < 1e-3
    np.testing.assert_array_equal(embedder.align(image, faces), reference.align(image, faces))  # type: ignore[attr-defined]
