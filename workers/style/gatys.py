"""Neural style transfer by optimisation (Gatys, Ecker & Bethge 2016) on VGG19 activations.

Costs follow the deeplearning.ai course formulation:

- content, on one layer: ``J_content = 1/(4 nH nW nC) * sum((a_C - a_G)^2)``
- style, per layer, on Gram matrices ``G = A A^T`` with ``A`` the ``nC x (nH nW)`` unrolled
  activations: ``J_layer = 1/(4 nC^2 (nH nW)^2) * sum((G_S - G_G)^2)``, summed with weights lambda
- total: ``J = alpha J_content + beta J_style + tv_weight TV``

The generated image is optimised in pixel space (values in [0, 1]) coarse to fine over `scales`.
This is the only module of the style engine that imports torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.models import vgg

from workers.contract import GatysParams
from workers.models.base import InferenceModel
from workers.models.registry import WeightsNotAvailable, resolve
from workers.style.vgg_weights import VGG19_FILE, VGG19_WEIGHTS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# torchvision's VGG19 configuration ("E"): output channels of each convolution, "M" for a max pool
VGG19_CONFIG = vgg.cfgs["E"]


def vgg19_layers() -> dict[str, int]:
    """Layer names conv1_1..conv5_4 -> index of that convolution in torchvision's ``vgg19().features``."""
    names, block, conv, index = {}, 1, 1, 0
    for entry in VGG19_CONFIG:
        if entry == "M":
            block, conv, index = block + 1, 1, index + 1
        else:
            names[f"conv{block}_{conv}"] = index
            conv, index = conv + 1, index + 2  # conv, relu
    return names


def vgg19_features() -> nn.Sequential:
    """torchvision's ``vgg19().features`` (same modules and state-dict keys), built by torchvision's own
    `make_layers`: ``vgg19(weights=None)`` would also build the classifier, 1.9 s and 550 MB for nothing."""
    return vgg.make_layers(VGG19_CONFIG)


def load_vgg19(weights_path: Path | None = None) -> nn.Sequential:
    """VGG19 features with ImageNet weights from `weights_path` or torchvision's cache; never downloads.

    Raises WeightsNotAvailable when the file is missing, corrupt or not a VGG19 state dict.
    """
    # torchvision's file is checked against its published checksum; a file the operator configured
    # under another name (converted, fine-tuned) is their choice and is loaded as it is
    path = resolve(VGG19_WEIGHTS, weights_path, verify=weights_path is None or weights_path.name == VGG19_FILE)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: torch raises many different types
        raise WeightsNotAvailable(VGG19_WEIGHTS, f"cannot read {path}: {exc}") from exc
    features = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")} or state
    model = vgg19_features()
    try:
        model.load_state_dict(features)
    except RuntimeError as exc:
        raise WeightsNotAvailable(VGG19_WEIGHTS, f"{path} is not a VGG19 state dict: {exc}") from exc
    return model.eval()


class VGG19Features(InferenceModel):
    """The VGG19 features the Gatys method optimises against, loaded once (`load_vgg19`) on first use."""

    name = VGG19_WEIGHTS

    def __init__(self, weights_path: Path | None = None) -> None:
        super().__init__()
        self.weights_path = weights_path
        self.features: nn.Sequential | None = None

    def _load(self) -> None:
        self.features = load_vgg19(self.weights_path)


def random_vgg19(seed: int = 0) -> nn.Sequential:
    """VGG19 features with seeded random (Kaiming) weights: tests the mechanics without real weights."""
    gen = torch.Generator().manual_seed(seed)
    model = vgg19_features()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu", generator=gen)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
    return model.eval()


class FeatureExtractor(nn.Module):
    """Activations (after ReLU) of the named VGG19 layers; the network is cut after the deepest one.

    Max pooling is replaced by average pooling, which Gatys et al. found to give smoother images.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, features: nn.Sequential, layers: Iterable[str]) -> None:
        super().__init__()
        table = vgg19_layers()
        wanted = sorted(set(layers), key=lambda n: table.get(n, -1))
        unknown = [n for n in wanted if n not in table]
        if unknown:
            raise ValueError(f"unknown VGG19 layers {unknown}: use conv1_1 .. conv5_4")
        self.taps = {table[n] + 1: n for n in wanted}  # the ReLU right after the conv
        modules = [
            nn.AvgPool2d(2, 2) if isinstance(m, nn.MaxPool2d) else m for m in list(features)[: max(self.taps) + 1]
        ]
        self.body = nn.Sequential(*[nn.ReLU(inplace=False) if isinstance(m, nn.ReLU) else m for m in modules])
        self.body.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (image - self.mean) / self.std
        out = {}
        for index, module in enumerate(self.body):
            x = module(x)
            if index in self.taps:
                out[self.taps[index]] = x
        return out


def _dims(a: torch.Tensor) -> tuple[int, int, int]:
    if a.dim() == 4:
        if a.shape[0] != 1:
            raise ValueError(f"activations must have batch 1, got shape {tuple(a.shape)}")
        a = a[0]
    n_c, n_h, n_w = a.shape
    return n_c, n_h, n_w


def content_cost(a_c: torch.Tensor, a_g: torch.Tensor) -> torch.Tensor:
    """``1/(4 nH nW nC) * sum((a_C - a_G)^2)`` for activations of shape (1, nC, nH, nW) or (nC, nH, nW)."""
    n_c, n_h, n_w = _dims(a_g)
    return ((a_c - a_g) ** 2).sum() / (4 * n_h * n_w * n_c)


def gram_matrix(a: torch.Tensor) -> torch.Tensor:
    """``G = A A^T`` for unrolled activations `a` of shape (nC, nH*nW)."""
    return a @ a.T


def unroll(a: torch.Tensor) -> torch.Tensor:
    """(1, nC, nH, nW) or (nC, nH, nW) -> (nC, nH*nW)."""
    n_c, n_h, n_w = _dims(a)
    return a.reshape(n_c, n_h * n_w)


def style_layer_cost(a_s: torch.Tensor, a_g: torch.Tensor) -> torch.Tensor:
    """``1/(4 nC^2 (nH nW)^2) * sum((G_S - G_G)^2)``.

    Each Gram matrix is divided by its own nH nW first: identical to the formula when both images
    have the same size, and still meaningful when the style image is larger or smaller.
    """
    return style_cost_from_gram(normalised_gram(a_s), a_g)


def normalised_gram(a: torch.Tensor) -> torch.Tensor:
    """Gram matrix divided by nH nW (the style target, computed once per layer)."""
    _, n_h, n_w = _dims(a)
    return gram_matrix(unroll(a)) / (n_h * n_w)


def style_cost_from_gram(gram_s: torch.Tensor, a_g: torch.Tensor) -> torch.Tensor:
    n_c = _dims(a_g)[0]
    return ((gram_s - normalised_gram(a_g)) ** 2).sum() / (4 * n_c**2)


def style_cost(
    grams_s: Mapping[str, torch.Tensor], acts_g: Mapping[str, torch.Tensor], lambdas: Mapping[str, float]
) -> torch.Tensor:
    """``sum_l lambda_l * J_style(l)`` over the style layers."""
    costs = [w * style_cost_from_gram(grams_s[name], acts_g[name]) for name, w in lambdas.items()]
    return torch.stack(costs).sum()


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of neighbouring pixels (smoothness prior; independent of image size)."""
    return ((image[..., 1:, :] - image[..., :-1, :]) ** 2).mean() + ((image[..., 1:] - image[..., :-1]) ** 2).mean()


def total_cost(j_content: torch.Tensor, j_style: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """``J = alpha J_content + beta J_style``."""
    return alpha * j_content + beta * j_style


@dataclass
class GatysResult:
    """The stylized image and the total cost J at every evaluation, one list per scale.

    Adam evaluates once per iteration; L-BFGS also evaluates inside its line search.
    """

    image: Image.Image
    history: list[list[float]] = field(default_factory=list)


def to_tensor(img: Image.Image, device: torch.device) -> torch.Tensor:
    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous().to(device)


def to_image(t: torch.Tensor) -> Image.Image:
    arr = t.detach().clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy()
    return Image.fromarray((arr * 255.0 + 0.5).astype(np.uint8))


def _fit(img: Image.Image, long_side: int) -> Image.Image:
    scale = long_side / max(img.size)
    size = (max(16, round(img.width * scale)), max(16, round(img.height * scale)))
    return img if size == img.size else img.resize(size, Image.Resampling.LANCZOS)


class GatysStylizer:
    """Runs the optimisation with one VGG19 feature network (load it once, stylize many)."""

    def __init__(self, features: nn.Sequential, params: GatysParams, device: str | torch.device = "cpu") -> None:
        self.params = params
        self.device = torch.device(device)
        layers = [params.content_layer, *params.style_layers]
        self.extractor = FeatureExtractor(features, layers).to(self.device)

    def stylize(self, content: Image.Image, style: Image.Image, *, style_scale: float = 1.0) -> GatysResult:
        """Optimise an image coarse to fine over `params.scales` (long sides); `iterations` per scale."""
        p = self.params
        gen = torch.Generator().manual_seed(p.seed)
        result = GatysResult(image=content)
        generated: torch.Tensor | None = None
        for side in p.scales:
            c = to_tensor(_fit(content, side), self.device)
            s = to_tensor(_fit(style, max(16, round(side * style_scale))), self.device)
            if generated is None:
                generated = c.clone() if p.init == "content" else torch.rand(c.shape, generator=gen).to(self.device)
            else:
                generated = F.interpolate(generated, size=c.shape[2:], mode="bilinear", align_corners=False)
            generated, history = self._optimise(c, s, generated.detach().clone())
            result.history.append(history)
        assert generated is not None  # scales has at least one entry (contract)
        result.image = to_image(generated)
        return result

    def _optimise(
        self, content: torch.Tensor, style: torch.Tensor, x: torch.Tensor
    ) -> tuple[torch.Tensor, list[float]]:
        p = self.params
        with torch.no_grad():
            target_c = self.extractor(content)[p.content_layer]
            acts_s = self.extractor(style)
            grams_s = {name: normalised_gram(acts_s[name]) for name in p.style_layers}
        x.requires_grad_(True)

        def cost() -> torch.Tensor:
            acts = self.extractor(x)
            j_content = content_cost(target_c, acts[p.content_layer])
            j = total_cost(j_content, style_cost(grams_s, acts, p.style_layers), p.content_weight, p.style_weight)
            return j + p.tv_weight * total_variation(x) if p.tv_weight else j

        with torch.no_grad():
            # the optimiser sees J / J(start): the same minimum, but well scaled for L-BFGS's line search
            # whatever alpha, beta and the network's activation magnitudes are
            unit = 1.0 / max(float(cost()), 1e-30)
        history: list[float] = []
        opt: torch.optim.Optimizer

        def closure() -> torch.Tensor:
            opt.zero_grad()
            j = cost()
            history.append(float(j.detach()))
            scaled = j * unit
            scaled.backward()
            return scaled.detach()

        if p.optimizer == "lbfgs":
            # one call runs all iterations: L-BFGS's curvature pairs stay consistent only if nothing moves x
            # between them, so the image is clamped to [0, 1] at the end (lr 1 with a line search is the
            # usual L-BFGS setting; learning_rate is Adam's)
            opt = torch.optim.LBFGS([x], lr=1.0, max_iter=p.iterations, history_size=50, line_search_fn="strong_wolfe")
            opt.step(closure)
        else:
            opt = torch.optim.Adam([x], lr=p.learning_rate)
            for _ in range(p.iterations):
                opt.step(closure)
                with torch.no_grad():
                    x.clamp_(0, 1)
        with torch.no_grad():
            x.clamp_(0, 1)
        return x.detach(), history


def stylize(
    content: Image.Image,
    style: Image.Image,
    params: GatysParams,
    *,
    features: nn.Sequential | None = None,
    weights_path: Path | None = None,
    device: str = "cpu",
    style_scale: float = 1.0,
) -> GatysResult:
    """One-shot helper: load VGG19 (unless `features` is given) and stylize; raises WeightsNotAvailable."""
    net = features if features is not None else load_vgg19(weights_path)
    return GatysStylizer(net, params, device).stylize(content, style, style_scale=style_scale)
