"""How time and memory grow with the work: face indexing at 100 / 1,000 / 10,000 photos and style
transfer at 1 / 4 / 16 / 64 MP. Prints tables and writes a PNG plot of each.

    python -m bench.scaling [--faces 100,1000,10000] [--style-mp 1,4,16,64] [--out DIR] [--json OUT]

Each point runs in its own process, so its peak RSS is its own. Face photos are synthetic (320x240,
a quarter of them with the scikit-image astronaut's face pasted at a random place), so the count is
the only thing that changes; style photos are scikit-image's coffee scaled to each size.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.common import machine, table, write_json


def face_photos(n: int, seed: int = 0) -> list[bytes]:
    from skimage import data

    rng = np.random.default_rng(seed)
    face = Image.fromarray(data.astronaut()).crop((150, 20, 310, 200)).resize((80, 90))
    out = []
    for i in range(n):
        noise = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
        img = Image.fromarray(noise).resize((320, 240), Image.Resampling.BICUBIC)
        if i % 4 == 0:
            img.paste(face, (int(rng.integers(0, 230)), int(rng.integers(0, 140))))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=85)
        out.append(buf.getvalue())
    return out


def run_faces(n: int) -> dict[str, Any]:
    from workers.contract import FacesParams
    from workers.faces.engine import FaceEngine
    from workers.imaging import decode_image

    photos = face_photos(n)
    engine = FaceEngine(FacesParams(), device="cpu")
    engine.index_batch([decode_image(photos[0])])  # load the models
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    faces = 0
    for i in range(0, n, 8):
        batch = [decode_image(b) for b in photos[i : i + 8]]
        faces += sum(len(p) for p in engine.index_batch(batch))
    seconds = time.perf_counter() - t0
    return {
        "photos": n,
        "faces": faces,
        "seconds": seconds,
        "rss_start_mb": rss0,
        "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_style(mp: float) -> dict[str, Any]:
    from skimage import data

    from workers.contract import StyleParams
    from workers.style.engine import StyleEngine

    base = Image.fromarray(data.coffee())
    scale = (mp * 1e6 / (base.width * base.height)) ** 0.5
    photo = base.resize((round(base.width * scale), round(base.height * scale)), Image.Resampling.BICUBIC)
    engine = StyleEngine(device="cpu")
    variant = engine.expand(StyleParams(method="builtin", builtin=[7]), {})[0]
    engine.render(base, variant)  # load the model
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    out = engine.render(photo, variant)
    seconds = time.perf_counter() - t0
    assert out.size == photo.size
    return {
        "megapixels": round(photo.width * photo.height / 1e6, 2),
        "size": f"{photo.width}x{photo.height}",
        "seconds": seconds,
        "rss_start_mb": rss0,
        "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _child(kind: str, value: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.scaling", "--child", kind, value], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"{kind} {value} failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def plot(path: Path, xs: list[float], seconds: list[float], rss: list[float], xlabel: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(xs, seconds, "o-", color="tab:blue", label="seconds")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("seconds", color="tab:blue")
    ax2 = ax.twinx()
    ax2.plot(xs, rss, "s--", color="tab:red", label="peak RSS (MB)")
    ax2.set_ylabel("peak RSS (MB)", color="tab:red")
    ax2.set_ylim(bottom=0)
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _section(
    out: Path, title: str, name: str, x: str, headers: list[str], cells: list[list[Any]], runs: list[dict[str, Any]]
) -> None:
    """One table (`cells` then the memory columns of `runs`) and its time-and-memory plot against `x`."""
    print(f"## Scaling: {title}\n")
    print(
        table(
            [*headers, "RSS after load (MB)", "peak RSS (MB)"],
            [[*row, r["rss_start_mb"], r["rss_peak_mb"]] for row, r in zip(cells, runs, strict=True)],
        )
    )
    if runs:
        path = out / f"scaling-{name}.png"
        plot(
            path,
            [r[x] for r in runs],
            [r["seconds"] for r in runs],
            [r["rss_peak_mb"] for r in runs],
            x,
            f"{title.split(' (')[0].capitalize()}: time and peak memory",
        )
        print(f"\n![{title.split(' (')[0]} scaling]({path.name})\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--faces", default="100,1000,10000")
    ap.add_argument("--style-mp", default="1,4,16,64")
    ap.add_argument("--out", type=Path, default=Path("bench/out"))
    ap.add_argument("--json")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        kind, value = args.child
        print(json.dumps(run_faces(int(value)) if kind == "faces" else run_style(float(value))))
        return 0

    faces = [_child("faces", n) for n in args.faces.split(",") if n]
    cells = [[r["photos"], r["faces"], r["seconds"], r["photos"] / r["seconds"]] for r in faces]
    title = "face indexing (engine, CPU, MTCNN + dlib ResNet, 320x240 photos)"
    _section(args.out, title, "faces", "photos", ["photos", "faces", "seconds", "photos/s"], cells, faces)
    style = [_child("style", mp) for mp in args.style_mp.split(",") if mp]
    cells = [[r["megapixels"], r["size"], r["seconds"], r["seconds"] / r["megapixels"]] for r in style]
    title = "style transfer (built-in style 7, tiled, CPU)"
    _section(args.out, title, "style", "megapixels", ["megapixels", "size", "seconds", "s per MP"], cells, style)
    write_json(args.json, {"machine": machine(), "faces": faces, "style": style})
    return 0


if __name__ == "__main__":
    sys.exit(main())
