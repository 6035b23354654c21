"""Pipeline overhead and the pipeline's own ceiling, measured in one run (ratios: the machine is shared).

1. Overhead: the same 1 MP photos through HTTP + Redis/Celery + S3 (one worker process) vs the style engine
   called in-process doing the same decode, render and PNG encode, in alternating rounds.
2. Ceiling: one worker process's batch loop with the model left out (identity engines, bench/ceiling.py),
   photos/s and ms per photo per stage, for style and faces at 1 MP and 12 MP, next to the in-process engine;
   stages overlapped (the default) and in turn (worker.overlap=false), in alternating rounds.
3. PNG compression levels on a stylized 1 MP output: size and time, and the level picked.
4. Submit latency (p50/p99) for 1,000 submissions.

    python -m bench.pipeline [--photos 24] [--mp 1] [--rounds 3] [--ceiling-photos 32] [--ceiling-mp 1,12]
                             [--engine-photos 3] [--submissions 1000] [--json OUT]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image

from bench.ceiling import STAGES, Run, Stack, identity_faces, in_process_faces, in_process_style, photo_jpeg, run_job
from bench.common import machine, median, percentile, table, write_json

STYLE = {"method": "builtin", "builtin": [7]}
STYLE_IDENTITY = {**STYLE, "strength": 0.0}  # the engine returns the photo: no network
FACES = {"force": True}


class StyleStack:
    """Redis, S3, the API and one Celery style worker process: jobs through the whole stack."""

    def __init__(self, root: Path, overlap: bool) -> None:
        from api.client import Client
        from api.devstack.servers import start_redis, start_s3
        from api.devstack.stack import ApiServer, start_worker, wait_worker_ready
        from storage.config import Settings, WorkerSettings
        from storage.objects import ObjectStore
        from storage.records import RecordStore

        self.redis = start_redis(root / "redis")
        self.s3, s3s = start_s3(root / "s3")
        settings = Settings(
            redis_url=f"redis://127.0.0.1:{self.redis.ports['redis']}/0",
            s3=s3s,
            data_dir=root,
            worker=WorkerSettings(chunk_size=8, batch_size=4, overlap=overlap),
        )
        self.settings = settings.model_copy(
            update={"api": settings.api.model_copy(update={"rate_limit_per_minute": 10**6})}
        )
        self.worker = start_worker(self.settings, "style", log_dir=root / "logs")
        self.api = ApiServer(self.settings).start()
        wait_worker_ready(self.worker)
        self.client = Client(self.api.url, RecordStore(self.settings).apikeys.create("bench"))
        self.store = ObjectStore(self.settings.s3)
        self.rels: list[str] = []

    def upload(self, blobs: list[bytes]) -> list[str]:
        from storage import keys

        rels = []
        for blob in blobs:
            rel = f"bench/p{len(self.rels):04d}.jpg"
            self.store.put_bytes(keys.tenant_key("bench", rel), blob, "image/jpeg")
            self.rels.append(rel)
            rels.append(rel)
        return rels

    def worker_cpu(self) -> float:
        import psutil

        proc = psutil.Process(self.worker.proc.pid)
        return sum(sum(p.cpu_times()[:2]) for p in [proc, *proc.children(recursive=True)])

    def job(self, blobs: list[bytes], params: dict[str, Any]) -> Run:
        """One job of `blobs`, submit to finished (ingest and finalize included)."""
        rels = self.upload(blobs)
        c0, t0 = self.worker_cpu(), time.perf_counter()
        job = self.client.wait(self.client.submit("style", params=params, inputs={"keys": rels})["id"], poll=0.05)
        seconds = time.perf_counter() - t0
        assert job["state"] == "succeeded", job
        return Run(len(rels), seconds, {}, len(rels), self.worker_cpu() - c0)

    def latencies(self, n: int, params: dict[str, Any]) -> list[float]:
        from storage.records import RecordStore

        out = []
        for i in range(n):
            t = time.perf_counter()
            self.client.submit("style", params=params, inputs={"keys": [self.rels[i % len(self.rels)]]})
            out.append(time.perf_counter() - t)
        RecordStore(self.settings).client.delete("style")  # drop the queued benchmark submissions
        return out

    def stop(self) -> None:
        self.api.stop()
        self.worker.kill()
        self.s3.stop()
        self.redis.stop()


def overhead(blobs: list[bytes], root: Path, rounds: int, submissions: int) -> tuple[Run, Run, list[float]]:
    """The in-process engine and the whole stack on the same photos, in alternating rounds (a shared
    machine's load drifts: each side sees the same drift)."""
    stack = StyleStack(root, overlap=True)
    try:
        stack.job(blobs[:1], STYLE)  # the worker loads its model
        in_process_style(blobs[:1], STYLE)
        local: Run | None = None
        piped: Run | None = None
        for r in range(rounds):
            part = blobs[r::rounds]
            one = in_process_style(part, STYLE)
            local = one if local is None else local + one
            two = stack.job(part, STYLE)
            piped = two if piped is None else piped + two
        latencies = stack.latencies(submissions, STYLE)
    finally:
        stack.stop()
    assert local is not None and piped is not None
    return local, piped, latencies


def png_levels(img: Image.Image, repeat: int = 3) -> list[tuple[int, float, float]]:
    """(level, KB, ms) of PIL's PNG encoder at each zlib level, median of `repeat`."""
    out = []
    for level in range(1, 10):
        times, size = [], 0
        for _ in range(repeat):
            buf = io.BytesIO()
            t = time.perf_counter()
            img.save(buf, "PNG", compress_level=level)
            times.append(time.perf_counter() - t)
            size = buf.tell()
        out.append((level, size / 1024, 1000 * median(times)))
    return out


def pick_png_level(levels: list[tuple[int, float, float]], slack: float = 0.05) -> int:
    """The fastest level whose output is within `slack` of the smallest (bytes are stored and served for
    as long as the job lives; encoding time is paid once, on the worker)."""
    smallest = min(kb for _, kb, _ in levels)
    return min((ms, level) for level, kb, ms in levels if kb <= smallest * (1 + slack))[1]


def ceiling(args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    """Identity-engine runs (overlap on and off) and the in-process engine, per kind and size."""
    rows: list[dict[str, Any]] = []
    stack = Stack.start(root / "ceiling")
    try:
        for mp in args.ceiling_mp:
            n = args.ceiling_photos if mp <= 2 else max(4, args.ceiling_photos // 4)
            for kind in ("style", "faces"):
                blobs = [photo_jpeg(mp, seed=i, faces=1 if kind == "faces" else 0) for i in range(n)]
                runs: dict[str, Run] = {}
                undo = identity_faces(FACES) if kind == "faces" else None
                params = STYLE_IDENTITY if kind == "style" else FACES
                contexts = {"overlap": stack.context(overlap=True), "serial": stack.context(overlap=False)}
                try:
                    for ctx in contexts.values():
                        run_job(ctx, kind, params, blobs[:2])  # warm-up (imports, connections)
                    for r in range(2):  # alternating rounds: both see the machine's load drift
                        for label, ctx in contexts.items():
                            one = run_job(ctx, kind, params, blobs[r::2])
                            runs[label] = runs[label] + one if label in runs else one
                finally:
                    if undo:
                        undo()
                engine_blobs = blobs[: args.engine_photos if mp <= 2 else 1]  # a 12 MP render takes a while
                runs["engine"] = (
                    in_process_style(engine_blobs, STYLE) if kind == "style" else in_process_faces(engine_blobs, FACES)
                )
                rows.append({"kind": kind, "mp": mp, "photos": n, **{k: vars(v) for k, v in runs.items()}})
                print(
                    f"  ceiling {kind} {mp} MP: {runs['overlap'].per_s:.1f} photos/s "
                    f"(serial {runs['serial'].per_s:.1f}, engine {runs['engine'].per_s:.2f})",
                    file=sys.stderr,
                )
    finally:
        stack.stop()
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--photos", type=int, default=24, help="photos of the overhead run")
    ap.add_argument("--rounds", type=int, default=3, help="alternating in-process / pipeline rounds")
    ap.add_argument("--mp", type=float, default=1.0, help="megapixels of the overhead run's photos")
    ap.add_argument("--ceiling-photos", type=int, default=32, help="photos per ceiling run (a quarter at 12 MP)")
    ap.add_argument(
        "--ceiling-mp",
        type=lambda s: [int(x) for x in s.split(",") if x],
        default=[1, 12],
        help="sizes of the ceiling runs ('' skips them)",
    )
    ap.add_argument("--engine-photos", type=int, default=3, help="photos the in-process engine renders per size")
    ap.add_argument("--submissions", type=int, default=1000)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    root = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))

    blobs = [photo_jpeg(max(1, round(args.mp)), seed=i, faces=0) for i in range(args.photos)]
    local, piped, latencies = overhead(blobs, root / "stack", args.rounds, args.submissions)
    per_local, per_piped = local.seconds / local.photos, piped.seconds / piped.photos
    cpu_local, cpu_piped = local.cpu_seconds / local.photos, piped.cpu_seconds / piped.photos
    print(
        f"## Pipeline overhead ({args.photos} photos of {args.mp:g} MP, built-in style 7, PNG, 1 worker process, "
        f"{args.rounds} alternating rounds)\n"
    )
    print(
        table(
            ["measure", "wall ms per photo", "CPU ms per photo", "wall vs in-process"],
            [
                [
                    "in-process engine: decode + render + PNG encode (reference)",
                    per_local * 1000,
                    cpu_local * 1000,
                    "1.00",
                ],
                [
                    "through the pipeline: HTTP, Celery worker, S3, records",
                    per_piped * 1000,
                    cpu_piped * 1000,
                    f"{per_piped / per_local:.2f}",
                ],
            ],
        )
    )
    print(
        f"\nOverhead: {100 * (per_piped / per_local - 1):+.1f} % of wall time per photo "
        f"({1000 * (per_piped - per_local):+.0f} ms), {100 * (cpu_piped / cpu_local - 1):+.1f} % of CPU time "
        "(the worker's main and pool processes vs the in-process loop). In-process stages, ms per photo: "
        + ", ".join(f"{s} {v:.0f}" for s, v in local.stages_ms.items() if v)
        + ".\n"
    )

    rows = ceiling(args, root)
    print("## The pipeline's ceiling: one worker process, no model (identity engines), real Redis and S3\n")
    out = []
    for r in rows:
        on, off, eng = Run(**r["overlap"]), Run(**r["serial"]), Run(**r["engine"])
        out.append(
            [
                r["kind"],
                r["mp"],
                on.per_s,
                off.per_s,
                1000 * on.cpu_seconds / on.photos,
                eng.per_s,
                f"{on.per_s / eng.per_s:.1f}x",
                *(f"{on.stages_ms[s]:.1f}" for s in STAGES),
            ]
        )
    print(
        table(
            [
                "kind",
                "MP",
                "ceiling photos/s",
                "in turn photos/s",
                "CPU ms/photo",
                "in-process engine photos/s",
                "ceiling / engine",
                *(f"{s} ms" for s in STAGES),
            ],
            out,
        )
    )
    print(
        "\nStage columns: ms per photo summed over threads in the overlapped run (stages run side by side, so "
        "they add up to more than the wall time). Engine: the real model in-process (CPU, 1 thread).\n"
    )

    sample = in_process_sample(blobs[0])
    levels = png_levels(sample)
    chosen = pick_png_level(levels)
    print(f"## PNG compression levels (a stylized {sample.width}x{sample.height} output)\n")
    print(table(["level", "KB", "ms", "picked"], [[lv, kb, ms, "<-" if lv == chosen else ""] for lv, kb, ms in levels]))
    print(f"\nPicked: the fastest level within 5 % of the smallest output: {chosen}.\n")

    print(
        table(
            ["submit latency", "ms"],
            [
                [f"p50 ({len(latencies)} submissions)", percentile(latencies, 0.5) * 1000],
                ["p99", percentile(latencies, 0.99) * 1000],
            ],
        )
    )
    write_json(
        args.json,
        {
            "machine": machine(),
            "per_item_local_s": per_local,
            "per_item_pipeline_s": per_piped,
            "cpu_local_s": cpu_local,
            "cpu_pipeline_s": cpu_piped,
            "local_stages_ms": local.stages_ms,
            "ceiling": rows,
            "png_levels": levels,
            "png_level": chosen,
            "submit_p50_s": percentile(latencies, 0.5),
            "submit_p99_s": percentile(latencies, 0.99),
        },
    )
    return 0


def in_process_sample(blob: bytes) -> Image.Image:
    """One photo rendered in built-in style 7 (what a style job encodes)."""
    from workers.contract import StyleParams
    from workers.imaging import decode_image
    from workers.style.engine import StyleEngine

    engine = StyleEngine(device="cpu")
    return engine.render(decode_image(blob), engine.expand(StyleParams.model_validate(STYLE), {})[0])


if __name__ == "__main__":
    sys.exit(main())
