"""The library: how right its nightly assignments are, and what growing it costs.

    python -m bench library scenario VECTORS.npz [--trials 20] [--sweep 0.45:0.03,0.50:0.04]
    python -m bench library scale [--sizes 10000,100000,1000000] [--add 1000] [--recluster 10000,100000]

`scenario` replays the issue's two nights on real people, from a file of face vectors (``names``,
``embeddings`` and ``model`` arrays, as bench/lfw.py caches them for LFW's dev folds): night 1 brings
photos of 20 people (and strangers seen once), 5 of them are named; night 2 brings new photos of 5 named
and 5 unnamed people, 5 new people and new strangers. After night 2, without any re-cluster, it measures
the faces night 2 put into people who existed: precision (the right person) and recall (of the faces whose
person existed, how many joined them), and whether new people are pure. Each trial draws other people.

`scale` times adding `--add` faces to synthetic libraries of each size (people of Zipf-distributed sizes,
a tenth of faces unassigned) and a full re-cluster; the library is built in one process and the fold and the
re-cluster each run in a fresh one (their peak RSS is their own, as in a worker),
on a real local Redis and S3; with --plot it writes library-scale.png.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import peak_rss_mb, reset_peak_rss, table, write_json


@contextmanager
def local_library(tenant: str = "bench") -> Iterator[Any]:
    """A LibraryStore on a fresh local Redis and S3 server (real servers, as the product runs them)."""
    from api.devstack.servers import start_redis, start_s3
    from api.devstack.stack import local_redis_url
    from storage.config import Settings
    from storage.library import LibraryStore
    from storage.objects import ObjectStore
    from storage.records import RecordStore

    root = Path(tempfile.mkdtemp(prefix="bench-library-"))
    redis = start_redis(root / "redis", password="bench", aof=False)
    s3, s3_settings = start_s3(root / "s3")
    try:
        settings = Settings(redis_url=local_redis_url(redis.ports["redis"], "bench"), s3=s3_settings)
        lib = LibraryStore(ObjectStore(s3_settings), RecordStore(settings), tenant)
        lib.settings = settings  # type: ignore[attr-defined]  # for a step measured in its own process
        yield lib
    finally:
        s3.stop()
        redis.stop()


def _segment(lib: Any, job: str, model: str, faces: list[tuple[str, np.ndarray]]) -> Any:
    """Write one face per photo (name, vector) as a segment of job `job`."""
    from storage.library.documents import SegmentDoc, SegmentFace

    rows = [
        SegmentFace(
            face=f"{job}:{n}:0",
            job=job,
            item=n,
            photo=hashlib.sha256(name.encode()).hexdigest(),
            photo_key=name,
            box=(0.0, 0.0, 100.0, 100.0),
            score=0.99,
        )
        for n, (name, _) in enumerate(faces)
    ]
    matrix = np.stack([v for _, v in faces]).astype(np.float32)
    return lib.put_segment(SegmentDoc.of(f"{job}-000", job, model, matrix.shape[1], rows), matrix)


# -- the two-night scenario ---------------------------------------------------------------------------------


def _draw(names: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
    by_person: dict[str, list[int]] = {}
    for n, name in enumerate(names):
        by_person.setdefault(str(name), []).append(n)
    regulars = sorted(p for p, rows in by_person.items() if len(rows) >= 6)
    strangers = sorted(p for p, rows in by_person.items() if len(rows) == 1)
    chosen = list(rng.choice(regulars, 25, replace=False))
    seen, new = chosen[:20], chosen[20:]
    lone = list(rng.choice(strangers, 20, replace=False))
    night1, night2 = [], []
    for p in seen:
        rows = list(rng.permutation(by_person[p]))
        half = max(3, len(rows) // 2)
        night1 += rows[:half]
        if p in seen[:10]:
            night2 += rows[half:]
    for p in new:
        night2 += by_person[p]
    night1 += [by_person[p][0] for p in lone[:10]]
    night2 += [by_person[p][0] for p in lone[10:]]
    return {"night1": night1, "night2": night2, "named": seen[:5], "seen": seen, "new": new}


def _people(lib: Any, identity: dict[str, str]) -> dict[str, list[str]]:
    """Library person -> the true identities of its faces (face id -> identity via `identity`)."""
    head = lib.head()
    return {p.id: [identity[m.face] for m in lib.members(p.members).faces] for p in lib.people(head).people}


def scenario_trial(
    vectors: np.ndarray, names: np.ndarray, files: np.ndarray, model: str, seed: int, thresholds: Any = None
) -> dict[str, Any]:
    from storage.library import Decision
    from workers.library.fold import fold

    draw = _draw(names, np.random.default_rng(seed))
    identity: dict[str, str] = {}
    with local_library() as lib:
        refs = []
        for night, job in (("night1", "j" + "1" * 16), ("night2", "j" + "2" * 16)):
            rows = draw[night]
            for n, r in enumerate(rows):
                identity[f"{job}:{n}:0"] = str(names[r])
            refs.append(_segment(lib, job, model, [(str(files[r]), vectors[r]) for r in rows]))
        lib.commit(lambda state: fold(state, [refs[0]], thresholds=thresholds))
        after1 = _people(lib, identity)
        owner = {Counter(ids).most_common(1)[0][0]: pid for pid, ids in after1.items()}
        for person in draw["named"]:
            if person in owner:
                lib.log_decision(Decision(kind="name", person=owner[person], name=person))
        lib.commit(lambda state: fold(state, [refs[1]], thresholds=thresholds))
        after2 = _people(lib, identity)
        head = lib.head()
        members = {p.id: lib.members(p.members).faces for p in lib.people(head).people}
    night2 = {f for f in identity if f.startswith("j" + "2" * 16)}
    placed = {m.face: pid for pid, faces in members.items() for m in faces if m.face in night2}
    right = wrong = 0
    for face, pid in placed.items():
        if pid in after1:  # joined someone who existed after night 1
            majority = Counter(after1[pid]).most_common(1)[0][0]
            right += identity[face] == majority
            wrong += identity[face] != majority
    expected = [f for f in night2 if identity[f] in owner]
    recalled = sum(1 for f in expected if placed.get(f) == owner[identity[f]])
    new_people = [ids for pid, ids in after2.items() if pid not in after1]
    impure = sum(len(ids) - Counter(ids).most_common(1)[0][1] for ids in new_people)
    named_kept = sum(1 for p in draw["named"] if p in owner and owner[p] in after2)
    return {
        "assigned": right + wrong,
        "wrong": wrong,
        "expected": len(expected),
        "recalled": recalled,
        "new_people": len(new_people),
        "new_people_wrong_faces": impure,
        "people_night1": len(after1),
        "named_kept": named_kept,
        "seen": len(draw["seen"]),
    }


def scenario(args: argparse.Namespace) -> dict[str, Any]:
    from workers.faces.spaces import space_of

    data = np.load(args.vectors, allow_pickle=False)
    vectors, names, files, model = data["embeddings"], data["names"], data["files"], str(data["model"])
    ok = np.isfinite(vectors).all(axis=1) & (np.abs(vectors).sum(axis=1) > 0)
    vectors, names, files = vectors[ok], names[ok], files[ok]
    base = space_of(model).thresholds
    settings = [("space default", None)]
    for spec in filter(None, (args.sweep or "").split(",")):
        assign, margin = (float(v) for v in spec.split(":"))
        settings.append(
            (
                f"assign {assign}, margin {margin}",
                base.__class__(**{**base.__dict__, "assign": assign, "assign_margin": margin}),
            )
        )
    rows, out = [], {}
    for label, thresholds in settings:
        trials = [scenario_trial(vectors, names, files, model, seed, thresholds) for seed in range(args.trials)]
        total = {k: sum(t[k] for t in trials) for k in trials[0]}
        precision = 1 - total["wrong"] / max(total["assigned"], 1)
        recall = total["recalled"] / max(total["expected"], 1)
        rows.append(
            [
                label,
                f"{precision:.4f}",
                f"{recall:.4f}",
                total["assigned"],
                total["wrong"],
                total["new_people"],
                total["new_people_wrong_faces"],
                f"{total['people_night1'] / args.trials:.1f}/{total['seen'] / args.trials:.0f}",
            ]
        )
        out[label] = {"precision": precision, "recall": recall, **total}
    print(f"\n## Library: two nights on {args.vectors} ({model}), {args.trials} trials\n")
    print(
        table(
            [
                "thresholds",
                "assignment precision",
                "recall",
                "assigned",
                "wrong",
                "new people",
                "faces in wrong new people",
                "people after night 1 / seen",
            ],
            rows,
        )
    )
    return {"model": model, "trials": args.trials, "results": out}


# -- scale -----------------------------------------------------------------------------------------------


def synthetic_library(n_faces: int, dim: int, rng: np.random.Generator) -> tuple[np.ndarray, list[int | None]]:
    """Faces of Zipf-sized people (same person within ~0.35, people ~1.4 apart), a tenth unassigned."""
    sizes: list[int] = []
    while sum(sizes) < n_faces * 0.9:
        sizes.append(int(min(2000, max(3, rng.zipf(1.6) * 3))))
    people = rng.normal(size=(len(sizes), dim)).astype(np.float32)
    people /= np.linalg.norm(people, axis=1, keepdims=True)
    owner: list[int | None] = [p for p, s in enumerate(sizes) for _ in range(s)][: int(n_faces * 0.9)]
    owner += [None] * (n_faces - len(owner))
    centres = np.stack([people[o] if o is not None else rng.normal(size=dim) / np.sqrt(dim) * 1.0 for o in owner])
    vectors = centres + rng.normal(scale=0.022, size=(n_faces, dim)).astype(np.float32)
    return vectors.astype(np.float32), owner


def scale_point(size: int, add: int, recluster: bool) -> dict[str, Any]:
    from storage.library.state import LibraryState

    rng = np.random.default_rng(size)
    vectors, owner = synthetic_library(size + add, 128, rng)
    order = rng.permutation(size + add)
    base, extra = order[:size], order[size:]
    model = "dlib-resnet@v1+mirror"
    with local_library() as lib:
        t0 = time.perf_counter()
        segments = []
        for lo in range(0, size, 100_000):
            rows = base[lo : lo + 100_000]
            segments.append(
                _segment(lib, f"j{lo // 100_000:016x}", model, [(f"p{int(r)}", vectors[int(r)]) for r in rows])
            )

        def build(state: LibraryState) -> None:
            state.space = "dlib-resnet-v1+mirror"
            for ref in segments:
                state.segments[ref.id] = ref.model_copy(update={"unassigned": ref.faces})
                state.assignments(ref.id)
            groups: dict[int, list[tuple[str, int]]] = {}
            for ref in segments:
                n0 = int(ref.job[1:], 16) * 100_000
                for row in range(ref.faces):
                    who = owner[int(base[n0 + row])]
                    if who is not None:
                        groups.setdefault(who, []).append((ref.id, row))
            vec_of = {ref.id: lib.embeddings(ref) for ref in segments}
            for faces in groups.values():
                state.new_person(faces, np.stack([vec_of[s][r] for s, r in faces]))

        lib.commit(build, lock_ttl=600, wait=0)
        built = time.perf_counter() - t0
        new_ref = _segment(lib, "f" * 17, model, [(f"n{int(r)}", vectors[int(r)]) for r in extra])
        rss_before = peak_rss_mb()
        del vectors
        # each step in a fresh process, as a worker runs it: its peak RSS is its own, not the build's heap
        folded = _in_process(lib, "fold", new_ref.model_dump_json())
        result: dict[str, Any] = {
            "faces": size,
            "people": len(lib.people(lib.head()).people),
            "build_s": built,
            "add": add,
            "fold_s": folded["seconds"],
            "assigned": folded["assigned"],
            "peak_rss_mb_build": rss_before,
            "peak_rss_mb": folded["peak_rss_mb"],
        }
        if recluster:
            reclustered = _in_process(lib, "recluster", "")
            result["recluster_s"] = reclustered["seconds"]
            result["peak_rss_mb_recluster"] = reclustered["peak_rss_mb"]
    return result


def _in_process(lib: Any, step: str, arg: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.library", "_step", step, lib.settings.model_dump_json(), lib.tenant, arg]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"{step} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _step(step: str, settings_json: str, tenant: str, arg: str) -> dict[str, Any]:
    """One library step on the servers of a running bench, measured in this fresh process."""
    from storage.config import Settings
    from storage.library import LibraryStore
    from storage.library.documents import SegmentRef
    from storage.objects import ObjectStore
    from storage.records import RecordStore
    from workers.library.fold import fold
    from workers.library.recluster import recluster as full_recluster

    settings = Settings.model_validate_json(settings_json)
    lib = LibraryStore(ObjectStore(settings.s3), RecordStore(settings), tenant)
    gc.collect()
    reset_peak_rss()  # imports and connections are not the step's
    t0 = time.perf_counter()
    if step == "fold":
        _, report = lib.commit(lambda state: fold(state, [SegmentRef.model_validate_json(arg)]), lock_ttl=1800)
        out: dict[str, Any] = {"assigned": report.assigned}
    else:
        lib.commit(lambda state: full_recluster(state), lock_ttl=3600)
        out = {}
    return {**out, "seconds": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb()}


def scale(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [int(s) for s in args.sizes.split(",")]
    recl = {int(s) for s in args.recluster.split(",") if s}
    results = []
    for size in sizes:
        cmd = [sys.executable, "-m", "bench.library", "_point", str(size), str(args.add), str(int(size in recl))]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
        if proc.returncode:
            print(proc.stderr[-3000:], file=sys.stderr)
            results.append({"faces": size, "error": proc.stderr.strip().splitlines()[-1:]})
            continue
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    rows = [
        [
            r["faces"],
            r.get("people", "-"),
            f"{r['fold_s']:.2f}" if "fold_s" in r else "failed",
            f"{r['peak_rss_mb']:.0f}" if "peak_rss_mb" in r else "-",
            f"{r['recluster_s']:.1f}" if "recluster_s" in r else "-",
            f"{r['peak_rss_mb_recluster']:.0f}" if "peak_rss_mb_recluster" in r else "-",
        ]
        for r in results
    ]
    print(f"\n## Library: adding {args.add} faces, and a full re-cluster (synthetic libraries, real Redis + S3)\n")
    print(
        table(
            [
                "library faces",
                "people",
                f"add {args.add} faces (s)",
                "peak RSS (MB)",
                "re-cluster (s)",
                "re-cluster peak RSS (MB)",
            ],
            rows,
        )
    )
    if args.plot:
        _plot(results, Path(args.plot))
    return {"add": args.add, "points": results}


def _plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in results if "fold_s" in r]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot([r["faces"] for r in ok], [r["fold_s"] for r in ok], "o-", label="add 1,000 faces")
    rc = [r for r in ok if "recluster_s" in r]
    a.plot([r["faces"] for r in rc], [r["recluster_s"] for r in rc], "s--", label="full re-cluster")
    a.set(xscale="log", yscale="log", xlabel="faces in the library", ylabel="seconds", title="time")
    a.legend()
    b.plot([r["faces"] for r in ok], [r["peak_rss_mb"] for r in ok], "o-", label="add 1,000 faces")
    b.plot([r["faces"] for r in rc], [r["peak_rss_mb_recluster"] for r in rc], "s--", label="full re-cluster")
    b.set(xscale="log", yscale="log", xlabel="faces in the library", ylabel="peak RSS (MB)", title="memory")
    b.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_point"]:
        print(json.dumps(scale_point(int(argv[1]), int(argv[2]), argv[3] == "1")))
        return 0
    if argv[:1] == ["_step"]:
        print(json.dumps(_step(*argv[1:5])))
        return 0
    parser = argparse.ArgumentParser(
        prog="bench.library", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="what", required=True)
    sc = sub.add_parser("scenario")
    sc.add_argument("vectors")
    sc.add_argument("--trials", type=int, default=20)
    sc.add_argument("--sweep", default="", help="assign:margin pairs to compare with the space's default")
    sc.add_argument("--json")
    sl = sub.add_parser("scale")
    sl.add_argument("--sizes", default="10000,100000,1000000")
    sl.add_argument("--add", type=int, default=1000)
    sl.add_argument("--recluster", default="10000,100000")
    sl.add_argument("--timeout", type=int, default=3600)
    sl.add_argument("--plot", default="bench/out/library-scale.png")
    sl.add_argument("--json")
    args = parser.parse_args(argv)
    result = scenario(args) if args.what == "scenario" else scale(args)
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
