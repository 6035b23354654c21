"""Learning from names: does a head learnt from K named people help them, and leave everyone else alone?

    python -m bench adapt VECTORS.npz [--k 10,50,200] [--shots 3] [--trials 3] [--thresholds V,C,A,M]

From a file of face vectors (``embeddings``, ``names``, ``files``, ``model``, as bench/lfw.py caches them for
LFW's dev folds), each trial builds a real library (local Redis and S3) of every face except the named
people's other photos, folded by the nightly rule; then a user names K people, giving each `--shots` of their
photos (people with at least shots + 1 photos are drawn); then the `adapt` job's own code (`learn`) trains a
head, validates it on held-out named faces and on the library's unlabelled people, and says whether it would
be adopted. The head is measured whatever the verdict, on faces it never saw:

- named: the named people's other photos. Assignment by the nightly rule against every person (the named
  with their shots, everyone else with half of their photos), precision and recall per face; pairwise
  precision and recall of clustering them (average linkage at the space's `cluster` threshold, together with
  everyone else's photos); TAR at FAR 1e-3 of pairs with at least one of their other photos.
- never named: the other half of everyone else's photos assigned the same way (and people seen once, whose
  right answer is nobody: a face given to someone counts against precision); pairwise clustering scores and
  TAR at FAR 1e-3 of their pairs.

Before = the raw vectors, after = through the head. A space the registry does not know (the fused dlib+SFace
vectors before their space is registered) needs `--thresholds verify,cluster,assign,assign_margin`.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.common import table, write_json
from bench.library import local_library

FAR = 1e-3


@dataclass
class Draw:
    named: list[str]
    shots: list[int]  # rows the user labels
    others: list[int]  # the named people's other photos
    half_known: list[int]  # never-named people's photos the library holds as their person
    half_asked: list[int]  # their other photos, asked as queries
    strangers: list[int]  # people seen once


def draw(names: np.ndarray, k: int, shots: int, rng: np.random.Generator) -> Draw:
    by: dict[str, list[int]] = {}
    for n, name in enumerate(names):
        by.setdefault(str(name), []).append(n)
    eligible = sorted(p for p, rows in by.items() if len(rows) > shots)
    if k > len(eligible):
        raise SystemExit(f"only {len(eligible)} people have more than {shots} photos: lower --k or --shots")
    named = sorted(rng.choice(eligible, k, replace=False).tolist())
    d = Draw(named, [], [], [], [], [])
    for person, rows in sorted(by.items()):
        rows = [int(r) for r in rng.permutation(rows)]
        if person in named:
            d.shots += rows[:shots]
            d.others += rows[shots:]
        elif len(rows) == 1:
            d.strangers += rows
        else:
            half = len(rows) // 2
            d.half_known += rows[:half]
            d.half_asked += rows[half:]
    return d


def space_for(model: str, override: str | None) -> Any:
    from workers.faces.spaces import EmbeddingSpace, Thresholds, UnknownSpace, register_space, space_of

    if override:
        verify, cluster, assign, margin = (float(v) for v in override.split(","))
        t = Thresholds(
            verify=verify, cluster=cluster, identify=assign, identify_margin=margin, assign=assign, assign_margin=margin
        )
        return register_space(
            EmbeddingSpace(
                id=f"bench:{model}", dim=0, thresholds=t, models=(model,), calibration="bench/adapt.py --thresholds"
            )
        )
    try:
        return space_of(model)
    except UnknownSpace as exc:
        raise SystemExit(f"{exc}: give --thresholds verify,cluster,assign,assign_margin") from None


def build_library(
    lib: Any, vectors: np.ndarray, names: np.ndarray, files: np.ndarray, model: str, d: Draw
) -> dict[str, int]:
    """Every face but the named people's other photos, folded; then the named people, each made of their shots
    (what a user gets by assigning those faces to a person and naming it). Returns face id -> row."""
    from storage.library.documents import SegmentDoc, SegmentFace
    from storage.library.state import LibraryState
    from workers.library.fold import fold

    rows = sorted(set(range(len(vectors))) - set(d.others))
    job = "j" + "a" * 16
    faces = [
        SegmentFace(
            face=f"{job}:{n}:0",
            job=job,
            item=n,
            photo=hashlib.sha256(str(files[r]).encode()).hexdigest(),
            photo_key=str(files[r]),
            box=(0.0, 0.0, 100.0, 100.0),
            score=0.99,
        )
        for n, r in enumerate(rows)
    ]
    ref = lib.put_segment(
        SegmentDoc.of(f"{job}-000", job, model, vectors.shape[1], faces), vectors[rows].astype(np.float32)
    )
    lib.commit(lambda state: fold(state, [ref]), lock_ttl=600)
    row_of = {f.face: r for f, r in zip(faces, rows, strict=True)}
    place = {r: n for n, r in enumerate(rows)}
    shots: dict[str, list[int]] = {}
    for r in d.shots:
        shots.setdefault(str(names[r]), []).append(r)

    def name_them(state: LibraryState) -> None:
        for person, rs in sorted(shots.items()):
            for r in rs:
                state.place(ref.id, place[r], None)
            state.new_person([(ref.id, place[r]) for r in rs], name=person)

    lib.commit(name_them, lock_ttl=600)
    return row_of


def assignment(vectors: np.ndarray, names: np.ndarray, d: Draw, thresholds: Any) -> dict[str, tuple[float, float]]:
    """Per face (precision, recall) for named others and for never-named halves (+ strangers)."""
    from workers.library.fold import PersonIndex, choose

    owners = [str(names[r]) for r in d.shots + d.half_known]
    known = np.array(d.shots + d.half_known)
    order = np.argsort(owners, kind="stable")
    people: list[str] = []
    starts: list[int] = []
    for n, i in enumerate(order):
        if not people or people[-1] != owners[i]:
            people.append(owners[i])
            starts.append(n)
    index = PersonIndex(people, np.array(starts, np.int64), vectors[known[order]])
    out = {}
    for label, asked in (("named", d.others), ("never named", d.half_asked + d.strangers)):
        picks = choose(index.scores(vectors[asked]), people, [set()] * len(asked), thresholds)
        right = sum(p == str(names[r]) for p, r in zip(picks, asked, strict=True))
        given = sum(p is not None for p in picks)
        expected = sum(1 for r in asked if r not in set(d.strangers))
        out[label] = (right / max(given, 1), right / max(expected, 1))
    return out


def clustering(vectors: np.ndarray, names: np.ndarray, d: Draw, thresholds: Any) -> dict[str, tuple[float, float]]:
    """Pairwise (precision, recall) of clustering the named others with every never-named face."""
    from workers.people.cluster import cluster_faces

    rows = d.others + d.half_known + d.half_asked + d.strangers
    ids = [f"{r:07d}" for r in rows]
    label = np.empty(len(rows), np.int64)
    position = {f: n for n, f in enumerate(ids)}
    for n, c in enumerate(cluster_faces(vectors[rows], ids, ids, threshold=thresholds.cluster)):
        label[[position[f] for f in c.face_ids]] = n
    truth = np.array([str(names[r]) for r in rows])
    named = np.zeros(len(rows), bool)
    named[: len(d.others)] = True
    same_cluster = label[:, None] == label[None, :]
    same_person = truth[:, None] == truth[None, :]
    upper = np.triu(np.ones((len(rows), len(rows)), bool), 1)
    out = {}
    for key, mask in (("named", named[:, None] | named[None, :]), ("never named", ~named[:, None] & ~named[None, :])):
        pairs = upper & mask
        tp = (same_cluster & same_person & pairs).sum()
        out[key] = (tp / max((same_cluster & pairs).sum(), 1), tp / max((same_person & pairs).sum(), 1))
    return out


def tar(vectors: np.ndarray, names: np.ndarray, d: Draw) -> dict[str, float]:
    """TAR at FAR 1e-3: named (pairs with one of their other photos), never named (pairs among them)."""
    from workers.library.fold import distances

    truth = np.array([str(n) for n in names])
    out = {}
    never = d.half_known + d.half_asked + d.strangers
    for key, left, right in (("named", d.others, list(range(len(vectors)))), ("never named", never, never)):
        dist = distances(vectors[left], vectors[right])
        same = truth[left][:, None] == truth[right][None, :]
        itself = np.array(left)[:, None] == np.array(right)[None, :]
        if key == "never named":
            keep = np.triu(np.ones_like(same), 1)
        else:  # a pair of two other photos counts once
            keep = ~(np.isin(right, d.others)[None, :] & (np.array(right)[None, :] < np.array(left)[:, None]))
        genuine, impostor = dist[same & ~itself & keep], dist[~same & keep]
        out[key] = float((genuine < np.quantile(impostor, FAR)).mean()) if len(genuine) else float("nan")
    return out


def trial(data: dict[str, Any], k: int, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    from storage.library.adapters import Adapters
    from workers.contract import AdaptParams
    from workers.library.adapt import learn

    vectors, names, files, model = data["embeddings"], data["names"], data["files"], data["model"]
    space = space_for(model, args.thresholds)
    d = draw(names, k, args.shots, np.random.default_rng(seed))
    params = AdaptParams(
        seed=seed,
        **({"margin": args.margin} if args.margin else {}),
        **({"weight": args.weight} if args.weight is not None else {}),
        **({"steps": args.steps} if args.steps else {}),
        **({"rank": args.rank} if args.rank else {}),
    )
    with local_library() as lib:
        build_library(lib, vectors, names, files, model, d)
        t0 = time.perf_counter()
        doc = learn(lib, lib.head(), params)
        seconds = time.perf_counter() - t0
        matrix = Adapters(lib).matrix(doc)
    result: dict[str, Any] = {
        "k": k,
        "seed": seed,
        "accepted": doc.accepted,
        "reason": doc.reason,
        "learn_s": seconds,
        "train_s": doc.training.get("seconds", 0.0),
        "changed": doc.validation.changed_people,
        "unlabelled": doc.validation.unlabelled_people,
    }
    for label, x in (("before", vectors), ("after", vectors @ matrix)):
        result[label] = {
            "assign": assignment(x, names, d, space.thresholds),
            "cluster": clustering(x, names, d, space.thresholds),
            "tar": tar(x, names, d),
        }
    return result


def _mean(results: list[dict[str, Any]], *path: str) -> Any:
    values = []
    for r in results:
        v: Any = r
        for p in path:
            v = v[p]
        values.append(v)
    if isinstance(values[0], tuple):
        return tuple(float(np.mean([v[i] for v in values])) for i in range(len(values[0])))
    return float(np.mean(values))


def report(results: dict[int, list[dict[str, Any]]], model: str, args: argparse.Namespace) -> None:
    rows = []
    for k, trials in results.items():
        for who in ("named", "never named"):
            cells: list[Any] = [k, who]
            for metric in ("assign", "cluster"):
                for side in ("before", "after"):
                    p, r = _mean(trials, side, metric, who)
                    cells.append(f"{p:.3f} / {r:.3f}")
            cells += [f"{_mean(trials, 'before', 'tar', who):.3f}", f"{_mean(trials, 'after', 'tar', who):.3f}"]
            if who == "named":
                cells += [
                    f"{sum(t['accepted'] for t in trials)}/{len(trials)}",
                    f"{_mean(trials, 'changed'):.1f} of {_mean(trials, 'unlabelled'):.0f}",
                    f"{_mean(trials, 'train_s'):.1f} / {_mean(trials, 'learn_s'):.1f}",
                ]
            else:
                cells += ["", "", ""]
            rows.append(cells)
    print(
        f"\n## Learning from names: {args.vectors} ({model}), {args.shots} named photos per person, "
        f"{args.trials} trials (means)\n"
    )
    print(
        table(
            [
                "K named",
                "people",
                "assignment P / R before",
                "after",
                "clustering pairwise P / R before",
                "after",
                "TAR@FAR1e-3 before",
                "after",
                "adopted",
                "unlabelled people changed",
                "train / learn s",
            ],
            rows,
        )
    )
    reasons = sorted(
        {
            t["reason"].split(":")[0] + ": " + t["reason"].split(":", 1)[1].split(";")[0]
            for ts in results.values()
            for t in ts
        }
    )
    print("\nVerdicts (first reason): " + " | ".join(reasons))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench.adapt", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("vectors")
    parser.add_argument("--k", default="10,50,200", help="how many people are named, comma-separated")
    parser.add_argument("--shots", type=int, default=3, help="photos the user labels per named person")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--thresholds", help="verify,cluster,assign,assign_margin for a space not registered")
    parser.add_argument("--margin", type=float)
    parser.add_argument("--weight", type=float)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--rank", type=int)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    raw = np.load(args.vectors, allow_pickle=False)
    vectors = raw["embeddings"].astype(np.float32)
    ok = np.isfinite(vectors).all(axis=1) & (np.abs(vectors).sum(axis=1) > 0)
    data = {"embeddings": vectors[ok], "names": raw["names"][ok], "files": raw["files"][ok], "model": str(raw["model"])}
    results: dict[int, list[dict[str, Any]]] = {}
    for k in (int(v) for v in args.k.split(",")):
        results[k] = [trial(data, k, args, seed) for seed in range(args.trials)]
        for t in results[k]:
            print(f"K={k} seed={t['seed']}: {t['reason']}", file=sys.stderr, flush=True)
    report(results, data["model"], args)
    write_json(args.json, {"model": data["model"], "shots": args.shots, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
