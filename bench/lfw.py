"""LFW face verification through Nightshift's own detection -> alignment -> embedding code.

    python bench/lfw.py /work/shared/data/lfw-dev [--limit 600] [--json out.json] [--cache emb.npz]

DIR holds ``pairs.txt`` (standard format: a header "folds<TAB>n", then per fold n same-person lines
``name i j`` and n different-person lines ``name1 i name2 j``) and ``images/<name>/<name>_NNNN.jpg``.
Standard protocol: for each fold the L2 distance threshold is the one that maximises accuracy on the
other folds; we report the mean ± std of the per-fold accuracies, and the ROC AUC over all pairs.

Each image is embedded once. LFW's deep-funneled images are centred on the face: of several detected
faces the one nearest the centre is used; when none is found a centred box is used and counted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workers.contract import FacesParams  # noqa: E402
from workers.faces.engine import FaceEngine  # noqa: E402
from workers.faces.types import Face  # noqa: E402
from workers.imaging import decode_image  # noqa: E402

# Where dlib's frontal detector puts the face in a 250x250 deep-funneled LFW image, as fractions of the
# side (its mean box over LFW is about (70, 79)-(177, 186)).
FALLBACK_CENTRE = (0.49, 0.53)
FALLBACK_SIDE = 0.43


@dataclass(frozen=True)
class Pair:
    fold: int
    same: bool
    a: str  # image path relative to images/
    b: str


def image_path(name: str, number: str) -> str:
    return f"{name}/{name}_{int(number):04d}.jpg"


def read_pairs(path: Path, limit: int | None = None) -> list[Pair]:
    """The pairs of `path`; `limit` keeps about that many, equally from every fold and both classes."""
    lines = path.read_text().splitlines()
    folds, per_class = (int(v) for v in lines[0].split())
    keep = per_class if limit is None else max(1, min(per_class, limit // (2 * folds)))
    pairs = []
    body = [line.split() for line in lines[1:] if line.strip()]
    for fold in range(folds):
        block = body[fold * 2 * per_class : (fold + 1) * 2 * per_class]
        for k, fields in enumerate(block):
            same = k < per_class
            if (k % per_class) >= keep:
                continue
            if same:
                name, i, j = fields
                pairs.append(Pair(fold, True, image_path(name, i), image_path(name, j)))
            else:
                name1, i, name2, j = fields
                pairs.append(Pair(fold, False, image_path(name1, i), image_path(name2, j)))
    return pairs


def fallback_face(width: int, height: int) -> Face:
    side = FALLBACK_SIDE * min(width, height)
    cx, cy = FALLBACK_CENTRE[0] * width, FALLBACK_CENTRE[1] * height
    return Face(box=(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2), score=0.0)


def central_face(faces: list[Face], width: int, height: int) -> Face | None:
    if not faces:
        return None
    return min(faces, key=lambda f: (f.centre[0] - width / 2) ** 2 + (f.centre[1] - height / 2) ** 2)


class EmbeddingCache:
    """Per-image embeddings, optionally persisted to an .npz so an interrupted run resumes."""

    def __init__(self, path: Path | None, config: str) -> None:
        self.path = path
        self.config = config
        self.vectors: dict[str, np.ndarray] = {}
        self.fallback: set[str] = set()
        if path is not None and path.exists():
            data = np.load(path, allow_pickle=False)
            if str(data["config"]) != config:
                raise SystemExit(f"{path} holds embeddings of {data['config']}, not {config}: use another --cache")
            self.vectors = dict(zip(data["names"].tolist(), data["vectors"], strict=True))
            self.fallback = set(data["fallback"].tolist())

    def save(self) -> None:
        if self.path is None or not self.vectors:
            return
        names = sorted(self.vectors)
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, names=np.array(names), vectors=np.stack([self.vectors[n] for n in names]),
                 fallback=np.array(sorted(self.fallback), dtype=str), config=np.array(self.config))
        tmp.replace(self.path)


def embed_images(
    engine: FaceEngine, root: Path, names: list[str], cache: EmbeddingCache, batch: int
) -> tuple[float, int]:
    """Embed every image of `names` missing from `cache`; returns (seconds spent, images embedded)."""
    todo = [n for n in names if n not in cache.vectors]
    start = time.perf_counter()
    for s in range(0, len(todo), batch):
        chunk = todo[s : s + batch]
        images = [decode_image((root / n).read_bytes()) for n in chunk]
        chosen = []
        for name, image, faces in zip(chunk, images, engine.detect_batch(images), strict=True):
            face = central_face(faces, *image.size)
            if face is None:
                cache.fallback.add(name)
                face = fallback_face(*image.size)
            chosen.append([face])
        arrays = [np.asarray(image) for image in images]
        for name, vectors in zip(chunk, engine.embed_batch(arrays, chosen), strict=True):
            cache.vectors[name] = vectors[0]
        done = s + len(chunk)
        elapsed = time.perf_counter() - start
        print(f"  {done}/{len(todo)} images, {done / elapsed:.1f}/s, {len(cache.fallback)} fallbacks",
              file=sys.stderr, flush=True)
        if (s // batch) % 10 == 9:
            cache.save()
    cache.save()
    return time.perf_counter() - start, len(todo)


def best_threshold(distances: np.ndarray, same: np.ndarray) -> float:
    """The threshold (same person when distance < t) with the highest accuracy on these pairs."""
    order = np.argsort(distances)
    d, s = distances[order], same[order]
    # predicting "same" for the first k pairs: correct = same among them + different after them
    correct = np.concatenate([[0], np.cumsum(s)]) + np.concatenate([[(~s).sum()], (~s).sum() - np.cumsum(~s)])
    k = int(np.argmax(correct))
    if k == 0:
        return float(d[0])
    if k == len(d):
        return float(d[-1]) + 1e-6
    return float((d[k - 1] + d[k]) / 2)


def auc(distances: np.ndarray, same: np.ndarray) -> float:
    """ROC AUC of -distance as a same-person score (Mann-Whitney U, ties counted half)."""
    from scipy.stats import rankdata

    ranks = rankdata(-distances)
    n_pos, n_neg = int(same.sum()), int((~same).sum())
    return float((ranks[same].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def evaluate(pairs: list[Pair], vectors: dict[str, np.ndarray]) -> dict[str, object]:
    distances = np.array([np.linalg.norm(vectors[p.a] - vectors[p.b]) for p in pairs])
    same = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    per_fold = []
    for fold in np.unique(folds):
        train, test = folds != fold, folds == fold
        threshold = best_threshold(distances[train], same[train])
        accuracy = float(((distances[test] < threshold) == same[test]).mean())
        per_fold.append({"fold": int(fold) + 1, "threshold": threshold, "accuracy": accuracy, "pairs": int(test.sum())})
    accuracies = np.array([f["accuracy"] for f in per_fold])
    return {
        "pairs": len(pairs),
        "accuracy_mean": float(accuracies.mean()),
        "accuracy_std": float(accuracies.std()),
        "auc": auc(distances, same),
        "threshold_mean": float(np.mean([f["threshold"] for f in per_fold])),
        "folds": per_fold,
    }


def markdown(r: dict) -> str:
    """The result as two Markdown tables: the summary and the folds."""
    lines = [
        "| detector | embedder | pairs | images | accuracy (mean ± std) | AUC | threshold | fallback boxes | s/image |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| {r['detector']} | {r['embedder']} | {r['pairs']} | {r['images']} | "
        f"{100 * r['accuracy_mean']:.2f} % ± {100 * r['accuracy_std']:.2f} | {r['auc']:.4f} | "
        f"{r['threshold_mean']:.3f} | {r['fallbacks']} ({r['fallback_pct']:.2f} %) | {r['seconds_per_image']:.3f} |",
        "",
        "| fold | pairs | threshold | accuracy |",
        "| --- | --- | --- | --- |",
    ]
    for f in r["folds"]:
        lines.append(f"| {f['fold']} | {f['pairs']} | {f['threshold']:.3f} | {100 * f['accuracy']:.2f} % |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", type=Path, help="LFW folder with pairs.txt and images/")
    parser.add_argument("--limit", type=int, help="use about N pairs, spread over folds and classes")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--detector", choices=["mtcnn", "hog"], default="mtcnn")
    parser.add_argument("--embedder", default="dlib-resnet")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jitter", type=int, default=0)
    parser.add_argument("--no-mirror", action="store_true", help="do not average with the mirror image's embedding")
    parser.add_argument("--batch", type=int, default=32, help="images per detector/embedder batch")
    parser.add_argument("--cache", type=Path, help=".npz of per-image embeddings, reused and extended")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    pairs = read_pairs(args.dir / "pairs.txt", args.limit)
    names = sorted({p.a for p in pairs} | {p.b for p in pairs})
    params = FacesParams(detector=args.detector, embedder=args.embedder, jitter=args.jitter, mirror=not args.no_mirror)
    engine = FaceEngine(params, device=args.device)
    engine.load()
    embedder = f"{engine.embedder.name} {engine.version}"
    cache = EmbeddingCache(args.cache, f"{args.detector} {embedder} jitter={args.jitter}")
    print(f"{len(pairs)} pairs, {len(names)} images ({len(names) - len(set(names) & set(cache.vectors))} to embed)",
          file=sys.stderr)
    seconds, embedded = embed_images(engine, args.dir / "images", names, cache, args.batch)
    result = {
        "detector": args.detector,
        "embedder": embedder,
        "images": len(names),
        "fallbacks": len(set(names) & cache.fallback),
        "fallback_pct": 100 * len(set(names) & cache.fallback) / len(names),
        "seconds_per_image": seconds / embedded if embedded else float("nan"),
        **evaluate(pairs, cache.vectors),
    }
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
