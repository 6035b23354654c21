"""Benchmark verification, identification and search: ``python -m bench.search [DIR] [--json OUT]``.

With DIR (an LFW-style folder, see `bench.cluster`; lfw-dev adds its ``pairs.txt``):
- verification: the LFW protocol over the folds of ``pairs.txt`` (threshold chosen on the other folds), AUC;
- identification: one enrolled photo per person (people with one photo are enrolled too, as distractors,
  except every other one, kept back as strangers who should come out "unknown"); queries are the other
  photos. Top-1 accuracy, and at thresholds and margins around the defaults how answers split into right,
  wrong and unknown. Then "min" against "mean" prototypes with two and three enrolled photos per person.
Always: search latency of `ExactIndex` against a naive numpy scan at 10k / 100k / 1M synthetic unit vectors.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.calibration import choose_threshold, kfold_verification, pair_distances, read_lfw_pairs
from bench.cluster import DEFAULT_CACHE, Faces, lfw_faces
from bench.common import table
from workers.people.calibration import IDENTIFY_MIN_MARGIN, IDENTIFY_THRESHOLD, thresholds_for
from workers.people.identify import Gallery, Prototype, identify, person_distances
from workers.people.search import ExactIndex


def verification(folder: Path, faces: Faces) -> dict[str, object] | None:
    """The LFW k-fold protocol on ``pairs.txt``; None when the folder has none."""
    pairs_file = folder / "pairs.txt"
    if not pairs_file.exists():
        return None
    row = {f: k for k, f in enumerate(faces.files)}
    pairs = [p for p in read_lfw_pairs(pairs_file.read_text()) if all(f in row for f in p.files())]
    d = pair_distances(pairs, lambda f: faces.embeddings[row[f]])
    same = np.array([p.same for p in pairs])
    report = kfold_verification(d, same, [p.fold for p in pairs])
    overall = choose_threshold(d, same)
    return {
        "pairs": len(pairs),
        "accuracy_mean": report.mean,
        "accuracy_std": report.std,
        "fold_thresholds": list(report.thresholds),
        "auc": report.auc,
        "threshold_all_pairs": overall.threshold,
        "accuracy_all_pairs": overall.accuracy,
    }


def _split(faces: Faces, enrolled_per_person: int) -> tuple[dict[str, np.ndarray], list[int], list[int]]:
    """Enrolment (first photos of each person), known queries (their other photos), stranger queries."""
    by_person: dict[str, list[int]] = {}
    for k, person in enumerate(faces.people.tolist()):
        by_person.setdefault(person, []).append(k)
    enrolment, known, strangers = {}, [], []
    singles = 0
    for person, rows in sorted(by_person.items()):
        if len(rows) > enrolled_per_person:
            enrolment[person] = faces.embeddings[rows[:enrolled_per_person]]
            known.extend(rows[enrolled_per_person:])
        elif len(rows) == 1:
            singles += 1
            if singles % 2:
                enrolment[person] = faces.embeddings[rows]
            else:
                strangers.extend(rows)
    return enrolment, known, strangers


def identification(faces: Faces, thresholds: Sequence[float], margins: Sequence[float]) -> dict[str, object]:
    enrolment, known, strangers = _split(faces, 1)
    gallery = Gallery.enrol(enrolment)
    start = time.perf_counter()
    matches = identify(faces.embeddings[known], gallery, threshold=float("inf"), min_margin=0.0)
    seconds = time.perf_counter() - start
    others = identify(faces.embeddings[strangers], gallery, threshold=float("inf"), min_margin=0.0)
    right = np.array([m.nearest == t for m, t in zip(matches, faces.people[known], strict=True)])
    known_d, known_margin = np.array([m.distance for m in matches]), np.array([m.margin for m in matches])
    stranger_d, stranger_margin = np.array([m.distance for m in others]), np.array([m.margin for m in others])
    sweep = []
    for t in thresholds:
        for margin in margins:
            answered = (known_d < t) & (known_margin >= margin)
            sweep.append(
                {
                    "threshold": t,
                    "min_margin": margin,
                    "known_right": float((answered & right).mean()),
                    "known_wrong": float((answered & ~right).mean()),
                    "known_unknown": float((~answered).mean()),
                    "strangers_named": float(((stranger_d < t) & (stranger_margin >= margin)).mean()),
                }
            )
    return {
        "gallery_people": len(gallery),
        "queries": len(known),
        "strangers": len(strangers),
        "top1": float(right.mean()),
        "ms_per_query": 1000 * seconds / max(1, len(known)),
        "sweep": sweep,
        "prototypes": [prototypes(faces, n) for n in (2, 3)],
    }


def prototypes(faces: Faces, enrolled: int, stranger_rate: float = 0.02) -> dict[str, float]:
    """Compare the "min" and "mean" prototypes with `enrolled` photos per person: top-1, and the share of
    queries named right at the threshold where `stranger_rate` of strangers get a name."""
    enrolment, known, strangers = _split(faces, enrolled)
    gallery = Gallery.enrol(enrolment)
    truth = np.array([gallery.people.index(p) for p in faces.people[known]])
    out = {"enrolled": float(enrolled), "people": float(len(gallery)), "queries": float(len(known))}
    kinds: tuple[Prototype, ...] = ("min", "mean")
    for prototype in kinds:
        d = person_distances(faces.embeddings[known], gallery, prototype)
        right = d.argmin(axis=1) == truth
        nearest_stranger = person_distances(faces.embeddings[strangers], gallery, prototype).min(axis=1)
        t = float(np.quantile(nearest_stranger, stranger_rate))
        out[f"{prototype}_top1"] = float(right.mean())
        out[f"{prototype}_named_right"] = float(((d.min(axis=1) < t) & right).mean())
        out[f"{prototype}_threshold"] = t
    return out


def naive_search(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """The baseline: every distance with np.linalg.norm, then a full argsort."""
    return np.argsort(np.linalg.norm(x - q, axis=1))[:k]


def latency(sizes: Sequence[int], k: int = 10, batch: int = 100, seed: int = 0) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    rows = []
    for n in sizes:
        x = rng.normal(size=(n, 128)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        q = rng.normal(size=(batch, 128)).astype(np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        index = ExactIndex(128)
        start = time.perf_counter()
        index.add(x, [str(i) for i in range(n)])
        index.search(q[:1], k)  # the first search pays for consolidating the matrix
        build = time.perf_counter() - start
        start = time.perf_counter()
        hits = index.search(q, k)
        batched = (time.perf_counter() - start) / batch
        singles = q[: max(3, min(20, 10_000_000 // n))]
        start = time.perf_counter()
        for one in singles:
            index.search(one, k)
        single = (time.perf_counter() - start) / len(singles)
        start = time.perf_counter()
        naive = [naive_search(x, one, k) for one in singles]
        naive_s = (time.perf_counter() - start) / len(singles)
        agree = all([int(h[0]) for h in hits[i]] == naive[i].tolist() for i in range(len(singles)))
        rows.append(
            {
                "n": n,
                "build_s": build,
                "exact_batched_ms": 1000 * batched,
                "exact_single_ms": 1000 * single,
                "naive_ms": 1000 * naive_s,
                "same_results": agree,
            }
        )
        del index, x
    return rows


def markdown(report: dict[str, object]) -> str:
    lines = []
    verify = report.get("verification")
    if isinstance(verify, dict):
        lines += [
            f"Verification ({verify['pairs']} pairs, {len(verify['fold_thresholds'])}-fold protocol): accuracy "
            f"{100 * verify['accuracy_mean']:.2f} % ± {100 * verify['accuracy_std']:.2f}, AUC {verify['auc']:.4f}, "
            f"fold thresholds {', '.join(f'{t:.3f}' for t in verify['fold_thresholds'])}; best on all pairs "
            f"{verify['threshold_all_pairs']:.3f} ({100 * verify['accuracy_all_pairs']:.2f} %)",
            "",
        ]
    ident = report.get("identification")
    if isinstance(ident, dict):
        lines += [
            f"Identification: {ident['gallery_people']} enrolled people (one photo each), {ident['queries']} "
            f"queries, top-1 {100 * ident['top1']:.2f} % ({ident['ms_per_query']:.3f} ms/query); "
            f"{ident['strangers']} strangers (not enrolled)",
            "",
            table(
                ["threshold", "min margin", "known: right", "known: wrong", "known: unknown", "strangers named"],
                [
                    [
                        f"{s['threshold']:.3f}",
                        f"{s['min_margin']:.3f}",
                        *(
                            f"{100 * s[k]:.2f} %"
                            for k in ("known_right", "known_wrong", "known_unknown", "strangers_named")
                        ),
                    ]
                    for s in ident["sweep"]
                ],
                "---:",
            ),
            "",
            table(
                [
                    "enrolled",
                    "people",
                    "queries",
                    "top-1 min",
                    "top-1 mean",
                    "named right at 2 % strangers: min",
                    "mean",
                ],
                [
                    [
                        int(p["enrolled"]),
                        int(p["people"]),
                        int(p["queries"]),
                        f"{100 * p['min_top1']:.2f} %",
                        f"{100 * p['mean_top1']:.2f} %",
                        f"{100 * p['min_named_right']:.2f} % (t {p['min_threshold']:.3f})",
                        f"{100 * p['mean_named_right']:.2f} % (t {p['mean_threshold']:.3f})",
                    ]
                    for p in ident["prototypes"]
                ],
                "---:",
            ),
            "",
        ]
    rows: list[dict[str, float]] = report["latency"]  # type: ignore[assignment]
    lines.append(
        table(
            ["faces", "ExactIndex batched ms/query", "ExactIndex single ms", "naive ms", "build s", "same top-k"],
            [
                [
                    f"{r['n']:,}",
                    f"{r['exact_batched_ms']:.3f}",
                    f"{r['exact_single_ms']:.2f}",
                    f"{r['naive_ms']:.2f}",
                    f"{r['build_s']:.2f}",
                    "yes" if r["same_results"] else "NO",
                ]
                for r in rows
            ],
            "---:",
        )
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, help="LFW-style folder (identification needs it)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="embedding cache (.npz)")
    parser.add_argument("--sizes", default="10000,100000,1000000", help="index sizes for the latency table")
    parser.add_argument(
        "--thresholds",
        help="identification thresholds (default: the calibrated one of the "
        f"vectors' space and 10 % either side; {IDENTIFY_THRESHOLD:.2f} for dlib descriptors)",
    )
    parser.add_argument(
        "--margins",
        help=f"minimum margins (default: 0, the calibrated one, twice it; {IDENTIFY_MIN_MARGIN:.2f} for dlib)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    report: dict[str, object] = {}
    if args.folder:
        faces = lfw_faces(args.folder, args.cache)
        report["verification"] = verification(args.folder, faces)
        calibrated = thresholds_for(faces.model)
        t, m = calibrated.identify, calibrated.identify_margin
        thresholds = sorted(
            {float(v) for v in args.thresholds.split(",")}
            if args.thresholds
            else {round(t * f, 3) for f in (0.9, 1.0, 1.1)}
        )
        margins = sorted({float(v) for v in args.margins.split(",")} if args.margins else {0.0, m, round(2 * m, 3)})
        report["identification"] = identification(faces, thresholds, margins)
    report["latency"] = latency([int(s) for s in args.sizes.split(",")])
    print(markdown(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
