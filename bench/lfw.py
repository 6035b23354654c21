"""LFW face verification through Nightshift's own detection -> alignment -> embedding code, per embedder.

    python bench/lfw.py /work/shared/data/lfw-dev [--embedders auto] [--no-mirror] [--out bench/out] [--json F]
    python bench/lfw.py /work/shared/data/lfw-dev --embedders sface,dlib-resnet-torch --fuse   # fusion weights

DIR holds ``pairs.txt`` (standard format: a header "folds<TAB>n", then per fold n same-person lines
``name i j`` and n different-person lines ``name1 i name2 j``) and ``images/<name>/<name>_NNNN.jpg``.
Standard protocol: for each fold the L2 distance threshold is the one that maximises accuracy on the
other folds; we report the mean ± std of the per-fold accuracies and the ROC AUC over all pairs. TAR at
FAR 1e-2 / 1e-3 is measured on every pair of the images (all same-person pairs against all different-person
pairs, millions of them: the 1,500 different pairs of ``pairs.txt`` cannot resolve a rate of 1e-3).

Every figure comes from two caches under ``--out`` (default bench/out, git-ignored): the detected faces
(``<data>-<detector>-<size>.npz``) and per model id the vectors (``<data>-<detector>-<size>-<model>.npz``,
in the format ``bench.cluster`` and ``bench.search`` read with ``--cache``). Each is computed once.
LFW's deep-funneled images are centred on the face: of several detected faces the one nearest the centre
is used; when none is found a centred box is used and counted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.calibration import (  # noqa: E402
    Pair,
    choose_threshold,
    kfold_verification,
    pair_distances,
    read_lfw_pairs,
)
from workers.contract import FacesParams  # noqa: E402
from workers.faces.engine import FaceEngine  # noqa: E402
from workers.faces.types import Face  # noqa: E402
from workers.imaging import decode_image  # noqa: E402

# Where dlib's frontal detector puts the face in a 250x250 deep-funneled LFW image, as fractions of the
# side (its mean box over LFW is about (70, 79)-(177, 186)).
FALLBACK_CENTRE = (0.49, 0.53)
FALLBACK_SIDE = 0.43
FARS = (1e-2, 1e-3)


def fallback_face(width: int, height: int) -> Face:
    side = FALLBACK_SIDE * min(width, height)
    cx, cy = FALLBACK_CENTRE[0] * width, FALLBACK_CENTRE[1] * height
    return Face(box=(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2), score=0.0)


def central_face(faces: list[Face], width: int, height: int) -> Face | None:
    if not faces:
        return None
    return min(faces, key=lambda f: (f.centre[0] - width / 2) ** 2 + (f.centre[1] - height / 2) ** 2)


# --- caches -----------------------------------------------------------------------------------------


def detect_faces(engine: FaceEngine, root: Path, names: list[str], cache: Path, batch: int) -> dict[str, Face]:
    """The central face of each image (a centred box without landmarks when none is found), cached."""
    if cache.exists():
        with np.load(cache, allow_pickle=False) as data:
            if data["names"].tolist() == names:
                return {
                    n: Face(box=tuple(box), score=float(score), landmarks=None if np.isnan(pts).any() else pts)
                    for n, box, score, pts in zip(
                        names, data["boxes"].tolist(), data["scores"], data["landmarks"], strict=True
                    )
                }
    faces: dict[str, Face] = {}
    start = time.perf_counter()
    for s in range(0, len(names), batch):
        chunk = names[s : s + batch]
        images = [decode_image((root / n).read_bytes()) for n in chunk]
        for name, image, found in zip(chunk, images, engine.detect_batch(images), strict=True):
            faces[name] = central_face(found, *image.size) or fallback_face(*image.size)
        done = s + len(chunk)
        print(f"  detect {done}/{len(names)}, {done / (time.perf_counter() - start):.1f}/s", file=sys.stderr)
    no_points = np.full((5, 2), np.nan, np.float32)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        cache,
        names=np.array(names),
        boxes=np.array([faces[n].box for n in names]),
        scores=np.array([faces[n].score for n in names]),
        landmarks=np.stack([no_points if faces[n].landmarks is None else faces[n].landmarks for n in names]),
    )
    return faces


def embed_faces(
    engine: FaceEngine, root: Path, faces: dict[str, Face], cache: Path, batch: int
) -> tuple[dict[str, np.ndarray], float]:
    """Per image the vector of its face through `engine.embed_batch` (the production path), cached in the
    format of ``bench.cluster``'s cache; returns (vectors, seconds per face spent now, NaN when cached)."""
    names = sorted(faces)
    if cache.exists():
        with np.load(cache, allow_pickle=False) as data:
            cached = [f"{p}/{f}" for p, f in zip(data["names"].tolist(), data["files"].tolist(), strict=True)]
            if cached == names and str(data["model"]) == engine.model_id:
                return dict(zip(names, data["embeddings"], strict=True)), float("nan")
    vectors: dict[str, np.ndarray] = {}
    spent = 0.0
    for s in range(0, len(names), batch):
        chunk = names[s : s + batch]
        arrays = [np.asarray(decode_image((root / n).read_bytes())) for n in chunk]
        start = time.perf_counter()
        out = engine.embed_batch(arrays, [[faces[n]] for n in chunk])
        spent += time.perf_counter() - start
        vectors.update((n, v[0]) for n, v in zip(chunk, out, strict=True))
        if (s // batch) % 20 == 0:
            print(
                f"  {engine.model_id} {len(vectors)}/{len(names)}, {len(vectors) / spent:.1f} faces/s", file=sys.stderr
            )
    people, files = zip(*(n.split("/", 1) for n in names), strict=True)
    np.savez(
        cache,
        embeddings=np.stack([vectors[n] for n in names]).astype(np.float32),
        names=np.array(people),
        files=np.array(files),
        model=np.array(engine.model_id),
    )
    return vectors, spent / len(names)


# --- figures ----------------------------------------------------------------------------------------


def tar_at_far(vectors: np.ndarray, people: np.ndarray, fars: tuple[float, ...] = FARS) -> dict[str, float]:
    """True-accept rate at each false-accept rate over every pair of `vectors` (row i is a face of people[i])."""
    from scipy.spatial.distance import pdist

    _, ids = np.unique(people, return_inverse=True)
    distances = pdist(vectors.astype(np.float32))
    i, j = np.triu_indices(len(vectors), k=1)
    same = ids[i] == ids[j]
    impostor = np.sort(distances[~same])
    genuine = distances[same]
    out = {}
    for far in fars:
        threshold = impostor[max(0, int(far * len(impostor)) - 1)]  # at most far of impostors below it
        out[f"tar@{far:g}"] = float((genuine < threshold).mean())
        out[f"threshold@{far:g}"] = float(threshold)
    return out


def evaluate(pairs: list[Pair], vectors: dict[str, np.ndarray]) -> dict[str, object]:
    """The LFW protocol over the folds of `pairs`, the AUC, TAR at FAR over all pairs of the images."""
    d = pair_distances(pairs, vectors.__getitem__)
    same = np.array([p.same for p in pairs])
    report = kfold_verification(d, same, [p.fold for p in pairs])
    names = sorted(vectors)
    people = np.array([n.split("/", 1)[0] for n in names])
    return {
        "pairs": len(pairs),
        "accuracy_mean": report.mean,
        "accuracy_std": report.std,
        "auc": report.auc,
        "fold_thresholds": list(report.thresholds),
        "threshold_all_pairs": choose_threshold(d, same).threshold,
        **tar_at_far(np.stack([vectors[n] for n in names]), people),
    }


def markdown(rows: list[dict]) -> str:
    """One row per embedder."""
    lines = [
        "| embedder (model id) | accuracy (mean ± std) | AUC | TAR@FAR 1e-2 | TAR@FAR 1e-3 | threshold | s/face |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        speed = "cached" if np.isnan(r["seconds_per_face"]) else f"{r['seconds_per_face']:.4f}"
        lines.append(
            f"| {r['model']} | {100 * r['accuracy_mean']:.2f} % ± {100 * r['accuracy_std']:.2f} | {r['auc']:.4f} | "
            f"{100 * r['tar@0.01']:.1f} % | {100 * r['tar@0.001']:.1f} % | {r['threshold_all_pairs']:.3f} | {speed} |"
        )
    return "\n".join(lines)


def compose_fused(engine: FaceEngine, stem: Path, cache: Path) -> bool:
    """Write the ``dlib+sface`` cache from its parts' caches when both exist (the same arithmetic as
    `FusedEmbedder.embed_many`: [a * dlib, b * sface]); returns whether it did."""
    from workers.faces.fused import FusedEmbedder

    embedder = engine.embedder
    if not isinstance(embedder, FusedEmbedder) or cache.exists():
        return False
    parts = [
        stem.with_name(f"{stem.name}-{part.model_id(engine.mirror)}.npz") for part in (embedder.dlib, embedder.sface)
    ]
    if not all(p.exists() for p in parts):
        return False
    with np.load(parts[0], allow_pickle=False) as dlib, np.load(parts[1], allow_pickle=False) as sface:
        if dlib["files"].tolist() != sface["files"].tolist() or dlib["names"].tolist() != sface["names"].tolist():
            return False
        a, b = embedder.weights
        vectors = np.concatenate([a * dlib["embeddings"], b * sface["embeddings"]], axis=1).astype(np.float32)
        np.savez(cache, embeddings=vectors, names=dlib["names"], files=dlib["files"], model=np.array(engine.model_id))
    print(f"  {engine.model_id}: composed from the cached vectors of its parts", file=sys.stderr)
    return True


def fusion_table(
    pairs: list[Pair], dlib: dict[str, np.ndarray], sface: dict[str, np.ndarray], weights: list[float]
) -> list[dict]:
    """The fused vector [dlib, w * sface] for each weight w (dlib's weight 1): what `FusedEmbedder` makes."""
    rows = []
    for w in weights:
        fused = {n: np.concatenate([dlib[n], w * sface[n]]) for n in dlib}
        rows.append({"model": f"dlib + {w:g} x sface", "seconds_per_face": float("nan"), **evaluate(pairs, fused)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", type=Path, help="LFW folder with pairs.txt and images/")
    parser.add_argument("--embedders", default="auto", help="comma-separated embedder names (default: auto)")
    parser.add_argument("--limit", type=int, help="use about N pairs, spread over folds and classes")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--detector", choices=["mtcnn", "yunet", "hog"], default=FacesParams().detector)
    parser.add_argument("--detect-size", type=int, default=FacesParams().detect_size)
    parser.add_argument("--score-threshold", type=float, help="detector score threshold (default: the detector's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jitter", type=int, default=0)
    parser.add_argument("--no-mirror", action="store_true", help="do not combine with the mirror image's embedding")
    parser.add_argument("--batch", type=int, default=32, help="images per detector/embedder batch")
    parser.add_argument("--out", type=Path, default=Path("bench/out"), help="cache folder")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch and onnxruntime")
    parser.add_argument(
        "--compose",
        action="store_true",
        help="build dlib+sface vectors from its parts' caches "
        "when they exist (equal to running it: tests/test_embedders.py) instead of embedding again",
    )
    parser.add_argument(
        "--fuse",
        default="",
        help="with dlib-resnet-torch and sface among --embedders: fused "
        "figures at these comma-separated SFace weights (dlib's is 1)",
    )
    args = parser.parse_args(argv)

    from workers.models.base import set_cpu_threads

    set_cpu_threads(args.threads)
    pairs = read_lfw_pairs((args.dir / "pairs.txt").read_text(), args.limit)
    names = sorted({name for p in pairs for name in p.files()})
    root = args.dir / "images"
    stem = (
        f"{args.dir.name}-{args.detector}-{args.detect_size}"
        + (f"-{len(names)}" if args.limit else "")
        + (f"-score{args.score_threshold:g}" if args.score_threshold is not None else "")
    )
    base = FacesParams(
        detector=args.detector,
        detect_size=args.detect_size,
        jitter=args.jitter,
        mirror=not args.no_mirror,
        score_threshold=args.score_threshold,
    )
    faces = detect_faces(FaceEngine(base, device=args.device), root, names, args.out / f"{stem}.npz", args.batch)
    fallbacks = sum(f.score == 0.0 for f in faces.values())
    print(f"{len(pairs)} pairs, {len(names)} images, {fallbacks} without a detected face", file=sys.stderr)
    rows, by_name = [], {}
    for name in [n for n in args.embedders.split(",") if n]:
        engine = FaceEngine(base.model_copy(update={"embedder": name}), device=args.device)
        cache = args.out / f"{stem}-{engine.model_id}.npz"
        if args.compose:
            compose_fused(engine, args.out / stem, cache)
        vectors, seconds = embed_faces(engine, root, faces, cache, args.batch)
        by_name[engine.embedder.name] = vectors
        rows.append(
            {"model": engine.model_id, "embedder": name, "seconds_per_face": seconds, **evaluate(pairs, vectors)}
        )
    if args.fuse and {"dlib-resnet-torch", "sface"} <= set(by_name):
        weights = [float(w) for w in args.fuse.split(",")]
        rows += fusion_table(pairs, by_name["dlib-resnet-torch"], by_name["sface"], weights)
    print(
        f"{args.dir.name}: {len(pairs)} pairs, {len(names)} images, detector {args.detector} at "
        f"{args.detect_size}, {fallbacks} centred fallback boxes, {args.threads} thread(s)\n"
    )
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps({"fallbacks": fallbacks, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
