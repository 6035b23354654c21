"""Face descriptor throughput: dlib (dlib-bin, CPU) against the torch port, from image + landmarks.

    python -m bench.embed [--data DIR] [--faces 128] [--batches 1,32,128] [--device cpu] [--fp16] [--threads N]

Both paths start from the same decoded images and the same dlib 5-point shapes (landmark detection is
excluded: both paths run the same dlib predictor) and produce 128-D descriptors:

- dlib: ``compute_face_descriptor(img, shape)`` for batch 1, else the batched
  ``compute_face_descriptor(batch_img, batch_faces)`` (chips + network in dlib);
- torch: `extract_chips` (on the device) + `embed_chips`, `batch` faces per call.

Faces: the first ``--faces`` images under DIR (default: the LFW dev set when present), one face each
(dlib's HOG detector; the centre box when it finds none), or synthetic faces from scikit-image's
astronaut. Prints a Markdown table (faces/s, ratio to dlib at the same batch) and the largest L2
distances to dlib's descriptors: the torch network on dlib's own chips, and on the torch chips. With
``--device cuda`` it prints fp32 rows, and fp16 rows with ``--fp16`` plus the fp16 deviation from fp32.

Then SFace on ArcFace chips of the same faces (landmarks estimated from the same dlib shapes): the int8 graph
as shipped against the float32 copy dequantised at load (faces/s and the largest L2 between their unit
vectors), and with ``--device cuda`` the same on onnxruntime's CUDA provider, fp16 included with ``--fp16``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

LFW_DEV = Path("/work/shared/data/lfw-dev/images")


@dataclass
class Faces:
    images: list[np.ndarray]
    shapes: list[object]  # dlib.full_object_detection, one face per image
    points: np.ndarray  # (n, 5, 2)
    source: str


def _synthetic(count: int) -> list[np.ndarray]:
    from PIL import Image
    from skimage import data

    astro = Image.fromarray(data.astronaut())
    out = []
    for i in range(count):
        scale = 0.6 + 0.2 * (i % 8)  # 0.6 .. 2.0: small faces and pyramid-sized ones
        image = astro.resize((round(512 * scale), round(512 * scale)), Image.Resampling.BILINEAR)
        if i % 2:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out.append(np.asarray(image.rotate((i % 5 - 2) * 6)))
    return out


def load_faces(data_dir: Path | None, count: int) -> Faces:
    """`count` images with one face each and their dlib 5-point shapes."""
    import dlib
    from PIL import Image

    from workers.faces.weights import DLIB_SHAPE_5, weights_path

    predictor = dlib.shape_predictor(str(weights_path(DLIB_SHAPE_5)))
    detector = dlib.get_frontal_face_detector()
    if data_dir is not None and data_dir.is_dir():
        paths = sorted(data_dir.rglob("*.jpg"))[:count]
        images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
        source = f"{len(images)} images from {data_dir}"
    else:
        images = _synthetic(count)
        source = f"{count} synthetic astronaut faces (scaled 0.6-2.0x, mirrored, rotated)"
    shapes = []
    for image in images:
        found = sorted(detector(image, 0), key=lambda r: r.area(), reverse=True)
        height, width = image.shape[:2]
        side = min(height, width) * 0.45  # LFW faces sit in the centre, about this big
        box = (
            found[0]
            if found
            else dlib.rectangle(
                round(width / 2 - side / 2),
                round(height / 2 - side / 2),
                round(width / 2 + side / 2),
                round(height / 2 + side / 2),
            )
        )
        shapes.append(predictor(image, box))
    points = np.array([[[p.x, p.y] for p in s.parts()] for s in shapes], dtype=np.float64)
    return Faces(images, shapes, points, source)


def _timed(
    run: Callable[[Faces], np.ndarray], faces: Faces, warm: int, sync: Callable[[], None]
) -> tuple[float, np.ndarray]:
    """(faces per second, descriptors) of `run` over all faces, after an untimed pass over `warm` faces
    (allocator, oneDNN primitives, cuDNN algorithm choice)."""
    run(Faces(faces.images[:warm], faces.shapes[:warm], faces.points[:warm], faces.source))
    sync()
    start = time.perf_counter()
    out = run(faces)
    sync()
    return len(faces.images) / (time.perf_counter() - start), out


def _no_sync() -> None:
    pass


def _groups(n: int, size: int) -> list[range]:
    return [range(s, min(s + size, n)) for s in range(0, n, size)]


def dlib_descriptors(recognizer: object, faces: Faces, batch: int) -> np.ndarray:
    import dlib

    out = []
    for group in _groups(len(faces.images), batch):
        if batch == 1:
            i = group[0]
            out.append(np.array(recognizer.compute_face_descriptor(faces.images[i], faces.shapes[i])))  # type: ignore[attr-defined]
            continue
        batch_faces = []
        for i in group:
            shapes = dlib.full_object_detections()
            shapes.append(faces.shapes[i])
            batch_faces.append(shapes)
        per_image = recognizer.compute_face_descriptor([faces.images[i] for i in group], batch_faces)  # type: ignore[attr-defined]
        out.extend(np.array(vectors[0]) for vectors in per_image)
    return np.array(out, dtype=np.float32).reshape(-1, 128)


def torch_descriptors(model: object, faces: Faces, batch: int, device: str) -> np.ndarray:
    from workers.faces.chips import extract_chips
    from workers.faces.dlib_resnet import embed_chips

    out = []
    for group in _groups(len(faces.images), batch):
        chips = extract_chips([faces.images[i] for i in group], faces.points[list(group)], device=device)
        out.append(embed_chips(model, chips, batch))  # type: ignore[arg-type]
    return np.concatenate([v.cpu().numpy() for v in out])


def _max_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b, axis=1).max())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=LFW_DEV, help="folder of face photos (default: LFW dev set)")
    parser.add_argument("--faces", type=int, default=128)
    parser.add_argument("--batches", default="1,32,128", help="comma-separated batch sizes")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, auto")
    parser.add_argument("--fp16", action="store_true", help="also time half precision (CUDA)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)

    import dlib
    import torch

    from workers.faces.dlib_resnet import embed_chips, load_face_resnet
    from workers.faces.embedders import resolve_device
    from workers.faces.weights import DLIB_RESNET, weights_path

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    batches = [int(b) for b in args.batches.split(",")]
    faces = load_faces(args.data, args.faces)
    recognizer = dlib.face_recognition_model_v1(str(weights_path(DLIB_RESNET)))
    fp32 = load_face_resnet(weights_path(DLIB_RESNET), device)
    models = {"fp32": fp32}
    if args.fp16 and device.startswith("cuda"):
        models["fp16"] = load_face_resnet(weights_path(DLIB_RESNET), device, fp16=True)

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    rows: list[str] = []
    results: dict[str, np.ndarray] = {}
    for batch in batches:
        dlib_rate, results["dlib"] = _timed(partial(dlib_descriptors, recognizer, batch=batch), faces, 1, _no_sync)
        rows.append(f"| dlib-bin (CPU) | {batch} | {dlib_rate:.1f} | 1.00 |")
        for label, model in models.items():
            run = partial(torch_descriptors, model, batch=batch, device=device)
            rate, results[label] = _timed(run, faces, batch, sync)
            rows.append(f"| torch {device} {label} | {batch} | {rate:.1f} | {rate / dlib_rate:.2f} |")

    reference, own = results["dlib"], results["fp32"]
    dlib_chips = np.stack(
        [dlib.get_face_chip(img, shape) for img, shape in zip(faces.images, faces.shapes, strict=True)]
    )
    same_chips = embed_chips(fp32, torch.from_numpy(dlib_chips).permute(0, 3, 1, 2).to(device)).cpu().numpy()
    threads = torch.get_num_threads()
    print(f"Faces: {faces.source}; torch {torch.__version__} ({threads} CPU threads), dlib {dlib.__version__}")
    print()
    print("| embedder | batch | faces/s | vs dlib |")
    print("| --- | ---: | ---: | ---: |")
    print("\n".join(rows))
    print()
    print(f"max L2 to dlib, torch on dlib's chips: {_max_l2(same_chips, reference):.2e}")
    print(f"max L2 to dlib, torch on its own chips: {_max_l2(own, reference):.2e}")
    if "fp16" in models:
        print(f"max L2 fp16 to fp32: {_max_l2(results['fp16'], own):.2e}")
    print()
    print(sface_table(faces, batches, device, args.fp16, args.threads or None))
    return 0


def sface_table(faces: Faces, batches: list[int], device: str, fp16: bool, threads: int | None) -> str:
    """SFace variants on the same faces: faces/s per batch size, and the largest L2 to the float32 CPU vectors."""
    import onnxruntime as ort
    from PIL import Image

    from workers.faces.sface import ARCFACE_SIZE, SFaceModel, arcface_matrix, landmarks_from_dlib, warp_chip
    from workers.models.onnx_session import CPU_PROVIDER, CUDA_PROVIDER

    points = landmarks_from_dlib(faces.points)
    chips = np.stack(
        [warp_chip(Image.fromarray(img), arcface_matrix(p)) for img, p in zip(faces.images, points, strict=True)]
    )
    variants = {
        "cpu int8 (as shipped)": SFaceModel([CPU_PROVIDER], threads=threads, int8=True),
        "cpu fp32 (dequantised at load)": SFaceModel([CPU_PROVIDER], threads=threads),
    }
    if device.startswith("cuda") and CUDA_PROVIDER in ort.get_available_providers():
        variants["cuda fp32"] = SFaceModel([CUDA_PROVIDER, CPU_PROVIDER])
        if fp16:
            variants["cuda fp16"] = SFaceModel([CUDA_PROVIDER, CPU_PROVIDER], fp16=True)
    rows, vectors = [], {}
    for label, model in variants.items():
        for batch in batches:
            model.max_batch_size = batch
            model.embed(chips[:batch])  # warm-up: session creation, allocator
            start = time.perf_counter()
            out = model.embed(chips)
            rate = len(chips) / (time.perf_counter() - start)
            vectors[label] = out / np.linalg.norm(out, axis=1, keepdims=True)
            rows.append(f"| SFace {label} | {batch} | {rate:.1f} |")
    reference = vectors["cpu fp32 (dequantised at load)"]
    lines = [
        f"SFace on {len(chips)} ArcFace chips ({ARCFACE_SIZE} px)",
        "",
        "| embedder | batch | faces/s |",
        "| --- | ---: | ---: |",
        *rows,
        "",
    ]
    lines += [
        f"max L2 of unit vectors, {label} to cpu fp32: {_max_l2(v, reference):.2e}"
        for label, v in vectors.items()
        if v is not reference
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
