"""How much a video flickers, and how far a filtered video strays from the per-frame one.

`warping_error` is Lai et al. 2018 ("Learning Blind Video Temporal Consistency", section 5): flow is
computed on the *input* frames, each output frame is compared with the previous output frame warped
along that flow, over the pixels the forward-backward check does not mark occluded, as squared error
on [0, 1] images summed over channels and averaged over those pixels, then over frame pairs.

The flow here is DIS at its most accurate preset and full resolution (the filter uses a faster
preset at a reduced size); synthetic clips pass their exact flow, so there a filter is graded by a
flow it never saw.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from workers.video.flow import consistent, to_gray, warp

FlowFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def reference_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dense flow from RGB frame a to b for grading: DIS at its medium preset, refined down to full
    resolution (finest scale 0, twice the variational refinement).

    The filter runs DIS's medium preset as it comes (finest scale 1) on frames of at most 384 px; on
    synthetic pans this flow's end-point error is below 0.01 px where Farneback's is 0.7-7 px, and
    warping error is very sensitive to flow error: a fraction of a pixel on painted strokes reads as flicker.
    """
    import cv2

    dis = cv2.DISOpticalFlow.create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    dis.setFinestScale(0)
    dis.setVariationalRefinementIterations(10)
    return np.asarray(dis.calc(to_gray(a), to_gray(b), None))  # type: ignore[call-overload]


def pair_flows(inputs: Sequence[np.ndarray], flow: FlowFn = reference_flow) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each t >= 1: (flow t -> t-1, non-occlusion mask of frame t), from the input frames."""
    out = []
    for t in range(1, len(inputs)):
        back = flow(inputs[t], inputs[t - 1])
        fwd = flow(inputs[t - 1], inputs[t])
        out.append((back, consistent(back, fwd)))
    return out


def warping_error(
    outputs: Sequence[np.ndarray], flows: Sequence[tuple[np.ndarray, np.ndarray]], skip: Sequence[int] = ()
) -> float:
    """Lai et al.'s warping error of uint8 RGB `outputs` along `flows` (from `pair_flows` on the inputs).

    `skip` lists frames t whose pair (t-1, t) straddles a scene cut.
    """
    errors = []
    for t in range(1, len(outputs)):
        if t in skip:
            continue
        back, mask = flows[t - 1]
        cur = outputs[t].astype(np.float32) / 255.0
        prev = warp(outputs[t - 1].astype(np.float32) / 255.0, back)
        sq = ((cur - prev) ** 2).sum(-1)
        n = int(mask.sum())
        errors.append(float(sq[mask].sum() / n) if n else float(sq.mean()))
    return float(np.mean(errors)) if errors else 0.0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 images, in dB (inf when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def video_psnr(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    """PSNR over whole clips (the mean squared error of all frames together)."""
    mse = float(
        np.mean([np.mean((x.astype(np.float64) - y.astype(np.float64)) ** 2) for x, y in zip(a, b, strict=True)])
    )
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def video_ssim(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    """Mean SSIM (Wang et al. 2004, scikit-image) over frames, on RGB."""
    from skimage.metrics import structural_similarity

    return float(
        np.mean([structural_similarity(x, y, channel_axis=-1, data_range=255) for x, y in zip(a, b, strict=True)])
    )
