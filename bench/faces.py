"""End-to-end face indexing throughput: Nightshift's engine vs the face_recognition-style dlib pipeline.

    python bench/faces.py [DIR] [--limit 64] [--repeat 1] [--batch 8] [--json out.json]

Every pipeline runs on the same encoded photos (DIR, recursively, or synthetic ones built from
scikit-image's bundled photos when no DIR is given), from bytes to embeddings, in its own process so
its peak RSS is its own. Models load before timing, and one photo warms up untimed.

- ``nightshift``: the default pipeline: `workers.imaging.decode_image` -> `FaceEngine` with default
  `FacesParams` (YuNet at detect_size with MTCNN's landmarks, the embedder ``dlib+sface``, mirror averaging).
- ``nightshift-mtcnn``: the default with MTCNN alone as the detector (the previous default).
- ``nightshift-dlib``: the default with the dlib ResNet alone (``dlib-resnet-torch``), the previous embedder.
- ``nightshift-nomirror``: the default without combining each embedding with the mirror image's.
- ``nightshift-hog``: the default with dlib's HOG detector.
- ``classic``: what ``face_recognition.face_encodings`` does, written with dlib calls: PIL decode,
  HOG detector upsampled once, 5-point shape, ``compute_face_descriptor(image, shape)`` per face.

Parity: faces of each pipeline are matched to the classic pipeline's by box overlap; the table gives
the faces found by each and, for pipelines in dlib's embedding space, the L2 distance between the
embeddings of matched faces (same-decision at 0.6, face_recognition's threshold).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from storage.config import WorkerSettings  # noqa: E402
from workers.faces.types import iou  # noqa: E402

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".heic", ".tif", ".tiff", ".bmp"}
MATCH_IOU = 0.3  # MTCNN and HOG boxes frame a face differently; 0.3 still pairs one face with itself
SAME_PERSON = 0.6
PIPELINES = ("nightshift", "nightshift-mtcnn", "nightshift-dlib", "nightshift-nomirror", "nightshift-hog", "classic")

FaceResult = tuple[list[tuple[float, float, float, float]], np.ndarray]  # boxes, (n, dim) embeddings
Runner = Callable[[list[bytes]], list[FaceResult]]


# --- inputs ---------------------------------------------------------------------------------------


def _jpeg(image: Image.Image) -> bytes:
    sink = io.BytesIO()
    image.save(sink, format="JPEG", quality=92)
    return sink.getvalue()


def synthetic_photos() -> list[tuple[str, bytes, int]]:
    """(name, JPEG bytes, number of faces) of photos with 0 to 5 faces at several sizes, built from
    scikit-image's bundled data; group photos paste face crops into separate cells of a canvas."""
    from skimage import data

    astro = Image.fromarray(data.astronaut())
    camera = Image.fromarray(data.camera()).convert("RGB")
    astro_face = astro.crop((145, 20, 305, 215))
    camera_face = camera.crop((165, 85, 290, 225))
    photos = [
        ("astronaut", astro, 1),
        ("astronaut-1600", astro.resize((1600, 1600), Image.Resampling.BICUBIC), 1),
        ("cameraman", camera, 1),
        ("coffee", Image.fromarray(data.coffee()), 0),
        ("chelsea", Image.fromarray(data.chelsea()), 0),
        ("rocket", Image.fromarray(data.rocket()), 0),
    ]
    rng = np.random.default_rng(0)
    for n, (width, height) in enumerate([(1024, 768), (800, 600), (1280, 960), (1100, 500)]):
        canvas = Image.fromarray(data.coffee()).resize((width, height))
        count = 2 + n
        cell = width // count
        for k in range(count):
            crop = astro_face if k % 2 == 0 else camera_face
            if rng.random() < 0.5:
                crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            scale = min(rng.uniform(0.6, 1.4), 0.95 * cell / crop.width, 0.95 * height / crop.height)
            crop = crop.resize((round(crop.width * scale), round(crop.height * scale)))
            x = k * cell + int(rng.integers(0, cell - crop.width + 1))
            y = int(rng.integers(0, height - crop.height + 1))
            canvas.paste(crop, (x, y))
        photos.append((f"group-{count}-{width}x{height}", canvas, count))
    return [(name, _jpeg(image), faces) for name, image, faces in photos]


def folder_photos(root: Path, limit: int) -> list[tuple[str, bytes, int | None]]:
    """(relative path, bytes, None: faces unknown) of up to `limit` photos under `root`."""
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES)[:limit]
    return [(str(p.relative_to(root)), p.read_bytes(), None) for p in files]


# --- pipelines (each runs in a child process) -----------------------------------------------------


def _nightshift(batch: int, detect_size: int, device: str, **params: object) -> Runner:
    from workers.contract import FacesParams
    from workers.faces.engine import FaceEngine
    from workers.imaging import decode_image

    engine = FaceEngine(FacesParams.model_validate({"detect_size": detect_size, **params}), device=device)
    engine.load()

    def run(chunk: list[bytes]) -> list[FaceResult]:
        out = []
        for s in range(0, len(chunk), batch):
            results = engine.index_batch([decode_image(data) for data in chunk[s : s + batch]])
            out.extend(([f.box for f in r.faces], r.embeddings) for r in results)
        return out

    return run


def _classic() -> Runner:
    import dlib

    from workers.faces.weights import DLIB_RESNET, DLIB_SHAPE_5, weights_path

    hog = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(weights_path(DLIB_SHAPE_5)))
    model = dlib.face_recognition_model_v1(str(weights_path(DLIB_RESNET)))

    def run(chunk: list[bytes]) -> list[FaceResult]:
        out = []
        for data in chunk:
            image = np.array(Image.open(io.BytesIO(data)).convert("RGB"))  # face_recognition.load_image_file
            rects = hog(image, 1)
            vectors = [np.array(model.compute_face_descriptor(image, predictor(image, r), 0)) for r in rects]
            boxes = [(float(r.left()), float(r.top()), float(r.right() + 1), float(r.bottom() + 1)) for r in rects]
            out.append((boxes, np.array(vectors, np.float32).reshape(-1, 128)))
        return out

    return run


# FacesParams of each Nightshift pipeline: the defaults, but for these fields
VARIANTS: dict[str, dict[str, object]] = {
    "nightshift": {},
    "nightshift-mtcnn": {"detector": "mtcnn"},
    "nightshift-dlib": {"embedder": "dlib-resnet-torch"},
    "nightshift-nomirror": {"mirror": False},
    "nightshift-hog": {"detector": "hog"},
}


def run_pipeline(
    name: str, photos: list[bytes], repeat: int, batch: int, detect_size: int, threads: int | None, device: str = "cpu"
) -> dict[str, object]:
    """Load, warm up, then time `name` over `photos` (`repeat` times); runs in a fresh process."""
    if threads and name != "classic":  # dlib (classic) runs on one thread
        from workers.models.base import set_cpu_threads

        set_cpu_threads(threads)  # torch and onnxruntime, as a worker with WorkerSettings.threads does
    start = time.perf_counter()
    run = _classic() if name == "classic" else _nightshift(batch, detect_size, device, **VARIANTS[name])
    loaded = time.perf_counter() - start
    run(photos[:1])
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(repeat):
        results = run(photos)
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start  # all threads; robust to other load on a shared machine
    return {
        "load_s": loaded,
        "seconds": seconds,
        "images_per_s": repeat * len(photos) / seconds,
        "cpu_s_per_image": cpu_seconds / (repeat * len(photos)),
        "faces": sum(len(boxes) for boxes, _ in results),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "results": results,
    }


# --- parity ---------------------------------------------------------------------------------------


def parity(ours: list[FaceResult], reference: list[FaceResult]) -> dict[str, float]:
    """Greedy box matching per photo; embedding distances of matched faces."""
    matched, distances, only_ours, only_ref = 0, [], 0, 0
    for (boxes, vecs), (ref_boxes, ref_vecs) in zip(ours, reference, strict=True):
        pairs = sorted(((iou(a, b), i, j) for i, a in enumerate(boxes) for j, b in enumerate(ref_boxes)), reverse=True)
        used_i, used_j = set(), set()
        for overlap, i, j in pairs:
            if overlap < MATCH_IOU or i in used_i or j in used_j:
                continue
            used_i.add(i)
            used_j.add(j)
            if vecs.shape[1] == ref_vecs.shape[1]:  # the same space as dlib's (else only boxes compare)
                distances.append(float(np.linalg.norm(vecs[i] - ref_vecs[j])))
        matched += len(used_i)
        only_ours += len(boxes) - len(used_i)
        only_ref += len(ref_boxes) - len(used_j)
    d = np.array(distances)
    return {
        "matched": matched,
        "only_this": only_ours,
        "only_classic": only_ref,
        "distance_mean": float(d.mean()) if len(d) else float("nan"),
        "distance_max": float(d.max()) if len(d) else float("nan"),
        "same_decision": float((d < SAME_PERSON).mean()) if len(d) else float("nan"),
    }


def markdown(report: dict) -> str:
    lines = [
        f"{report['images']} photos ({report['source']}), repeat {report['repeat']}, batch {report['batch']}, "
        f"detect_size {report['detect_size']}, {os.cpu_count()} CPUs, "
        f"torch/onnxruntime threads {report['threads'] or 'default'}",
        "",
        "| pipeline | faces found | photos with the true count | load s | images/s | speed-up | CPU s/image "
        "| peak RSS MB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    base = report["pipelines"]["classic"]["images_per_s"]
    expected = report.get("expected_per_photo")
    for name, r in report["pipelines"].items():
        found = f"{r['faces']} of {sum(expected)}" if expected else str(r["faces"])
        exact = f"{sum(map(int.__eq__, r['faces_per_photo'], expected))} of {len(expected)}" if expected else "-"
        lines.append(
            f"| {name} | {found} | {exact} | {r['load_s']:.1f} | {r['images_per_s']:.2f} | "
            f"{r['images_per_s'] / base:.2f}x | {r['cpu_s_per_image']:.3f} | {r['peak_rss_mb']:.0f} |"
        )
    lines += [
        "",
        "| vs classic | matched faces | only this | only classic | embedding L2 mean / max | same decision |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, p in report["parity"].items():
        lines.append(
            f"| {name} | {p['matched']} | {p['only_this']} | {p['only_classic']} | "
            f"{p['distance_mean']:.3f} / {p['distance_max']:.3f} | {100 * p['same_decision']:.1f} % |".replace(
                "nan / nan | nan %", "- (another space) | -"
            )
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", nargs="?", type=Path, help="folder of photos (default: synthetic photos)")
    parser.add_argument("--limit", type=int, default=64, help="at most this many photos from DIR")
    parser.add_argument("--repeat", type=int, default=1, help="passes over the photos")
    parser.add_argument("--batch", type=int, default=8, help="photos per engine batch")
    parser.add_argument("--detect-size", type=int, default=1024)
    parser.add_argument(
        "--threads",
        type=int,
        default=WorkerSettings().threads,
        help="torch/onnxruntime threads of each Nightshift pipeline (default: a worker's, "
        "WorkerSettings.threads; 0: the libraries' own, every core)",
    )
    parser.add_argument("--device", default="cpu", help="device of the Nightshift pipelines: cpu, cuda, auto")
    parser.add_argument("--pipelines", default=",".join(PIPELINES), help=f"comma-separated, from {PIPELINES}")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)

    photos = folder_photos(args.dir, args.limit) if args.dir else synthetic_photos()
    if not photos:
        parser.error(f"no photos in {args.dir}")
    payloads = [data for _, data, _ in photos]
    expected = [faces for _, _, faces in photos]
    names = [n for n in args.pipelines.split(",") if n]
    if "classic" not in names:
        names.append("classic")  # the reference for speed-up and parity
    report: dict = {
        "images": len(photos),
        "source": str(args.dir or "synthetic"),
        "repeat": args.repeat,
        "threads": args.threads,
        "batch": args.batch,
        "detect_size": args.detect_size,
        "pipelines": {},
        "parity": {},
    }
    for name in names:
        # a fresh process per pipeline: peak RSS and thread pools are its own
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
            result = pool.submit(
                run_pipeline, name, payloads, args.repeat, args.batch, args.detect_size, args.threads, args.device
            ).result()
        report["pipelines"][name] = result
        print(f"{name}: {result['images_per_s']:.2f} images/s, {result['faces']} faces", file=sys.stderr)
    reference = report["pipelines"]["classic"]["results"]
    for name in names:
        if name != "classic":
            report["parity"][name] = parity(report["pipelines"][name]["results"], reference)
    for result in report["pipelines"].values():
        result["faces_per_photo"] = [len(boxes) for boxes, _ in result.pop("results")]
    report["photos"] = [n for n, _, _ in photos]
    if all(e is not None for e in expected):
        report["expected_faces"] = sum(expected)
        report["expected_per_photo"] = expected
    print(markdown(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
