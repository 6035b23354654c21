"""Pipeline overhead and the pipeline's own ceiling, measured in one run (ratios: the machine is shared).

1. Overhead: the same 1 MP photos through HTTP + Redis/Celery + S3 (one worker process, overlap on and off)
   vs the style engine called in-process doing the same decode, render and PNG encode.
2. Ceiling: one worker process's batch loop with the model left out (identity engines, bench/ceiling.py),
   photos/s and ms per photo per stage, for style and faces at 1 MP and 12 MP, next to the in-process engine.
3. PNG compression levels on a stylized 1 MP output: size and time, and the level picked.
4. Submit latency (p50/p99) for 1,000 submissions.

    python -m bench.pipeline [--photos 24] [--mp 1] [--ceiling-photos 32] [--ceiling-mp 1,12]
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


def through_the_stack(blobs: list[bytes], params: dict[str, Any], root: Path, overlap: bool,
                      submissions: int = 0) -> tuple[float, list[float]]:
    """Seconds per photo for a style job through the API and a Celery worker; submit latencies."""
    from api.client import Client
    from api.devstack.servers import start_redis, start_s3
    from api.devstack.stack import ApiServer, start_worker, wait_worker_ready
    from storage import keys
    from storage.config import Settings, WorkerSettings
    from storage.objects import ObjectStore
    from storage.records import RecordStore

    redis = start_redis(root / "redis")
    s3, s3s = start_s3(root / "s3")
    settings = Settings(redis_url=f"redis://127.0.0.1:{redis.ports['redis']}/0", s3=s3s, data_dir=root,
                        worker=WorkerSettings(chunk_size=8, batch_size=4, overlap=overlap))
    settings = settings.model_copy(update={"api": settings.api.model_copy(update={"rate_limit_per_minute": 10**6})})
    worker = start_worker(settings, "style", log_dir=root / "logs")
    api = ApiServer(settings).start()
    latencies: list[float] = []
    try:
        wait_worker_ready(worker)
        client = Client(api.url, RecordStore(settings).apikeys.create("bench"))
        store = ObjectStore(settings.s3)
        rels = []
        for i, blob in enumerate(blobs):
            rel = f"bench/p{i:04d}.jpg"
            store.put_bytes(keys.tenant_key("bench", rel), blob, "image/jpeg")
            rels.append(rel)
        client.wait(client.submit("style", params=params, inputs={"keys": rels[:1]})["id"], poll=0.05)  # warm-up
        t0 = time.perf_counter()
        job = client.wait(client.submit("style", params=params, inputs={"keys": rels})["id"], poll=0.05)
        per_photo = (time.perf_counter() - t0) / len(rels)
        assert job["state"] == "succeeded", job
        for i in range(submissions):
            t = time.perf_counter()
            client.submit("style", params=params, inputs={"keys": [rels[i % len(rels)]]})
            latencies.append(time.perf_counter() - t)
        RecordStore(settings).client.delete("style")  # drop the queued benchmark submissions
    finally:
        api.stop()
        worker.kill()
        s3.stop()
        redis.stop()
    return per_photo, latencies


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
                try:
                    for overlap in (True, False):
                        ctx = stack.context(overlap=overlap)
                        params = STYLE_IDENTITY if kind == "style" else FACES
                        run_job(ctx, kind, params, blobs[:2])  # warm-up (imports, connections)
                        runs["overlap" if overlap else "serial"] = run_job(ctx, kind, params, blobs)
                finally:
                    if undo:
                        undo()
                engine_blobs = blobs[:args.engine_photos]
                runs["engine"] = (in_process_style(engine_blobs, STYLE) if kind == "style"
                                  else in_process_faces(engine_blobs, FACES))
                rows.append({"kind": kind, "mp": mp, "photos": n, **{k: vars(v) for k, v in runs.items()}})
                print(f"  ceiling {kind} {mp} MP: {runs['overlap'].per_s:.1f} photos/s "
                      f"(serial {runs['serial'].per_s:.1f}, engine {runs['engine'].per_s:.2f})", file=sys.stderr)
    finally:
        stack.stop()
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--photos", type=int, default=24, help="photos of the overhead run")
    ap.add_argument("--mp", type=float, default=1.0, help="megapixels of the overhead run's photos")
    ap.add_argument("--ceiling-photos", type=int, default=32, help="photos per ceiling run (a quarter at 12 MP)")
    ap.add_argument("--ceiling-mp", type=lambda s: [int(x) for x in s.split(",")], default=[1, 12])
    ap.add_argument("--engine-photos", type=int, default=3, help="photos the in-process engine renders per size")
    ap.add_argument("--submissions", type=int, default=1000)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    root = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))

    blobs = [photo_jpeg(int(args.mp) if args.mp >= 1 else 1, seed=i, faces=0) for i in range(args.photos)]
    local = in_process_style(blobs, STYLE)
    stack_s, latencies = through_the_stack(blobs, STYLE, root / "on", overlap=True, submissions=args.submissions)
    serial_s, _ = through_the_stack(blobs, STYLE, root / "off", overlap=False)
    per_local = local.seconds / local.photos
    print(f"## Pipeline overhead ({args.photos} photos of {args.mp:g} MP, built-in style 7, PNG, 1 worker process)\n")
    print(table(["measure", "ms per photo", "vs in-process"], [
        ["in-process engine: decode + render + PNG encode (reference)", per_local * 1000, "1.00"],
        ["through the pipeline, stages overlapped (default)", stack_s * 1000, f"{stack_s / per_local:.2f}"],
        ["through the pipeline, stages in turn (worker.overlap=false)", serial_s * 1000,
         f"{serial_s / per_local:.2f}"],
    ]))
    print(f"\nOverhead: {100 * (stack_s / per_local - 1):+.0f} % overlapped, {100 * (serial_s / per_local - 1):+.0f} % "
          f"in turn. In-process stages, ms per photo: "
          + ", ".join(f"{s} {v:.0f}" for s, v in local.stages_ms.items() if v) + ".\n")

    rows = ceiling(args, root)
    print("## The pipeline's ceiling: one worker process, no model (identity engines), real Redis and S3\n")
    out = []
    for r in rows:
        on, off, eng = Run(**r["overlap"]), Run(**r["serial"]), Run(**r["engine"])
        out.append([r["kind"], r["mp"], on.per_s, off.per_s, eng.per_s, f"{on.per_s / eng.per_s:.1f}x",
                    *(f"{on.stages_ms[s]:.1f}" for s in STAGES)])
    print(table(["kind", "MP", "ceiling photos/s", "in turn photos/s", "in-process engine photos/s",
                 "ceiling / engine", *(f"{s} ms" for s in STAGES)], out))
    print("\nStage columns: ms per photo summed over threads in the overlapped run (stages run side by side, so "
          "they add up to more than the wall time). Engine: the real model in-process (CPU, 1 thread).\n")

    sample = in_process_sample(blobs[0])
    levels = png_levels(sample)
    chosen = pick_png_level(levels)
    print(f"## PNG compression levels (a stylized {sample.width}x{sample.height} output)\n")
    print(table(["level", "KB", "ms", "picked"], [[lv, kb, ms, "<-" if lv == chosen else ""] for lv, kb, ms in levels]))
    print(f"\nPicked: the fastest level within 5 % of the smallest output: {chosen}.\n")

    print(table(["submit latency", "ms"], [[f"p50 ({len(latencies)} submissions)", percentile(latencies, 0.5) * 1000],
                                          ["p99", percentile(latencies, 0.99) * 1000]]))
    write_json(args.json, {"machine": machine(), "per_item_local_s": per_local, "per_item_pipeline_s": stack_s,
                           "per_item_serial_s": serial_s, "local_stages_ms": local.stages_ms, "ceiling": rows,
                           "png_levels": levels, "png_level": chosen,
                           "submit_p50_s": percentile(latencies, 0.5), "submit_p99_s": percentile(latencies, 0.99)})
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
