"""The Gatys method: costs against hand-computed values, Gram matrices, optimisation, weights handling."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from workers.contract import GatysParams
from workers.models import WeightsChecksumError, WeightsNotAvailable, register, resolve, spec
from workers.models.registry import sha256_file
from workers.style import gatys
from workers.style.engine import StyleEngine, StyleVariant


def small(name: str, side: int = 96) -> Image.Image:
    img = Image.fromarray(getattr(data, name)()).convert("RGB")
    img.thumbnail((side, side))
    return img


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    # the tensors here are tiny: extra threads only spin, and on a shared 2-core runner that costs 20x
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def vgg() -> torch.nn.Sequential:
    return gatys.random_vgg19(seed=0)


@pytest.fixture
def no_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub directory, so no real VGG19 file on this machine is found."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


# --- costs --------------------------------------------------------------------------------------


def test_content_cost_by_hand() -> None:
    a_c = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 1.0], [0.0, 1.0]]]).unsqueeze(0)  # 1 x 2 x 2 x 2
    a_g = torch.zeros_like(a_c)
    # sum of squares = 1 + 4 + 9 + 16 + 0 + 1 + 0 + 1 = 32; 4 * nH * nW * nC = 4 * 2 * 2 * 2 = 32
    assert gatys.content_cost(a_c, a_g).item() == pytest.approx(1.0)
    assert gatys.content_cost(a_c, a_c).item() == 0.0


def test_gram_matrix_by_hand_and_its_properties() -> None:
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert gatys.gram_matrix(a).tolist() == [[5.0, 11.0], [11.0, 25.0]]
    acts = torch.randn(1, 16, 7, 9, generator=torch.Generator().manual_seed(0))
    g = gatys.gram_matrix(gatys.unroll(acts))
    assert g.shape == (16, 16)
    assert torch.allclose(g, g.T)
    assert torch.linalg.eigvalsh(g.double()).min().item() > -1e-6  # positive semi-definite


def test_style_layer_cost_by_hand() -> None:
    a_s = torch.tensor([1.0, 2.0]).view(1, 1, 1, 2)  # nC = 1, nH * nW = 2: G_S = [[5]]
    a_g = torch.zeros_like(a_s)
    # (5 - 0)^2 / (4 * 1^2 * 2^2) = 25 / 16
    assert gatys.style_layer_cost(a_s, a_g).item() == pytest.approx(25 / 16)


def test_style_layer_cost_is_the_course_formula() -> None:
    gen = torch.Generator().manual_seed(1)
    a_s, a_g = torch.randn(1, 3, 4, 5, generator=gen), torch.randn(1, 3, 4, 5, generator=gen)
    s, g = a_s[0].reshape(3, 20).numpy().astype(np.float64), a_g[0].reshape(3, 20).numpy().astype(np.float64)
    expected = ((s @ s.T - g @ g.T) ** 2).sum() / (4 * 3**2 * 20**2)
    assert gatys.style_layer_cost(a_s, a_g).item() == pytest.approx(expected, rel=1e-5)


def test_weighted_style_cost_and_total_cost() -> None:
    gen = torch.Generator().manual_seed(2)
    acts_s = {n: torch.randn(1, 4, 3, 3, generator=gen) for n in ("conv1_1", "conv2_1")}
    acts_g = {n: torch.randn(1, 4, 3, 3, generator=gen) for n in acts_s}
    grams = {n: gatys.normalised_gram(a) for n, a in acts_s.items()}
    lambdas = {"conv1_1": 0.3, "conv2_1": 0.7}
    expected = sum(w * gatys.style_layer_cost(acts_s[n], acts_g[n]) for n, w in lambdas.items())
    assert gatys.style_cost(grams, acts_g, lambdas).item() == pytest.approx(float(expected), rel=1e-6)
    assert gatys.total_cost(torch.tensor(1.0), torch.tensor(2.0), 10, 40).item() == 90.0


# --- network ------------------------------------------------------------------------------------


def test_layer_names_match_torchvision_vgg19() -> None:
    import torchvision

    layers = gatys.vgg19_layers()
    assert (layers["conv1_1"], layers["conv2_1"], layers["conv3_1"]) == (0, 5, 10)
    assert (layers["conv4_1"], layers["conv4_2"], layers["conv5_1"], layers["conv5_4"]) == (19, 21, 28, 34)
    with torch.device("meta"):
        reference = torchvision.models.vgg19(weights=None).features
    ours = gatys.vgg19_features().state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in reference.state_dict().items()}
    assert all(isinstance(reference[i], torch.nn.Conv2d) for i in layers.values())


def test_feature_extractor_cuts_after_the_deepest_layer(vgg: torch.nn.Sequential) -> None:
    extractor = gatys.FeatureExtractor(vgg, ["conv1_1", "conv3_1"])
    acts = extractor(torch.rand(1, 3, 32, 48))
    assert set(acts) == {"conv1_1", "conv3_1"}
    assert acts["conv1_1"].shape == (1, 64, 32, 48) and acts["conv3_1"].shape == (1, 256, 8, 12)
    assert len(extractor.body) == gatys.vgg19_layers()["conv3_1"] + 2
    with pytest.raises(ValueError, match="unknown VGG19 layers"):
        gatys.FeatureExtractor(vgg, ["conv6_1"])


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_total_cost_decreases(vgg: torch.nn.Sequential, optimizer: str) -> None:
    params = GatysParams(iterations=6, optimizer=optimizer, learning_rate=0.05, scales=[48, 64], tv_weight=1.0)
    result = gatys.GatysStylizer(vgg, params).stylize(small("chelsea"), small("immunohistochemistry"))
    assert len(result.history) == 2 and result.image.size == (64, 43)
    for history in result.history:
        assert history[-1] < 0.9 * history[0]


@pytest.mark.slow
def test_noise_init_is_seeded(vgg: torch.nn.Sequential) -> None:
    params = GatysParams(iterations=2, optimizer="adam", init="noise", scales=[32], seed=7)
    stylizer = gatys.GatysStylizer(vgg, params)
    a = stylizer.stylize(small("coffee"), small("rocket")).image
    b = stylizer.stylize(small("coffee"), small("rocket")).image
    assert np.array_equal(np.asarray(a), np.asarray(b))


# --- weights ------------------------------------------------------------------------------------


def test_missing_weights_say_where_to_put_them(no_hub_cache: Path) -> None:
    with pytest.raises(WeightsNotAvailable) as err:
        gatys.load_vgg19()
    message = str(err.value)
    assert message.startswith("weights not available: vgg19: VGG19_Weights.IMAGENET1K_V1")
    assert f"put vgg19-dcbb9e9d.pth in {no_hub_cache}" in message
    assert "NIGHTSHIFT_WORKER__VGG19_WEIGHTS" in message
    with pytest.raises(WeightsNotAvailable, match="looked for /nowhere/vgg19.pth"):
        gatys.load_vgg19(Path("/nowhere/vgg19.pth"))


def test_a_file_that_is_not_the_release_fails_its_checksum(tmp_path: Path) -> None:
    path = tmp_path / "vgg19-dcbb9e9d.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, path)
    with pytest.raises(WeightsChecksumError, match="checksum mismatch"):
        gatys.load_vgg19(path)


def test_loads_a_torchvision_state_dict(tmp_path: Path, vgg: torch.nn.Sequential) -> None:
    path = tmp_path / "vgg19.pth"
    torch.save({f"features.{k}": v for k, v in vgg.state_dict().items()} | {"classifier.0.bias": torch.zeros(3)}, path)
    original = spec(gatys.VGG19_WEIGHTS)
    # stand in for the real release: same record, this file's checksum
    register(dataclasses.replace(original, sha256=sha256_file(path)), replace=True)
    try:
        loaded = gatys.load_vgg19(path)
    finally:
        register(original, replace=True)
    assert torch.equal(loaded.state_dict()["34.weight"], vgg.state_dict()["34.weight"])
    assert resolve(gatys.VGG19_WEIGHTS, path, verify=False) == path


@pytest.mark.slow
def test_engine_renders_gatys_variants(monkeypatch: pytest.MonkeyPatch, no_hub_cache: Path) -> None:
    content, style = small("astronaut", 80), small("immunohistochemistry")
    variant = StyleVariant(
        "gatys",
        style_key="s.png",
        style_image=style,
        size=100,
        gatys=GatysParams(iterations=3, optimizer="adam", scales=[40]),
    )
    with pytest.raises(WeightsNotAvailable, match="vgg19"):
        StyleEngine(device="cpu").render(content, variant)
    monkeypatch.setattr(gatys, "load_vgg19", lambda weights_path=None: gatys.random_vgg19(0))
    engine = StyleEngine(device="cpu")
    out = engine.render(content, variant)
    assert out.size == (100, 100)
    faded = engine.render(content, dataclasses.replace(variant, strength=0.0))
    assert np.array_equal(np.asarray(faded), np.asarray(content.resize((100, 100), Image.Resampling.LANCZOS)))
