"""Pipeline overhead: the same photos through HTTP + Redis/Celery + S3 vs the engine called in-process,
and submit latency (p50/p99) for 1,000 submissions.

    python -m bench.pipeline [--photos N] [--submissions N] [--json OUT]
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.common import machine, median, percentile, table, write_json


def photos(n: int, side: int) -> list[bytes]:
    from skimage import data

    base = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    out = []
    for i in range(n):
        img = Image.fromarray(base[i % 4]).convert("RGB")
        img.thumbnail((side, side))
        arr = np.asarray(img).copy()
        arr[0, 0] = i % 256  # distinct bytes per photo
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def in_process(data: list[bytes], params: dict[str, Any]) -> float:
    """Seconds per photo: decode -> render -> encode, no services."""
    from workers.contract import StyleParams
    from workers.imaging import decode_image
    from workers.style.engine import StyleEngine, encode_image

    engine = StyleEngine(device="cpu")
    p = StyleParams.model_validate(params)
    variant = engine.expand(p, {})[0]
    engine.render(decode_image(data[0]), variant)  # warm-up: model load
    t0 = time.perf_counter()
    for blob in data:
        encode_image(engine.render(decode_image(blob), variant), p.format, p.quality)
    return (time.perf_counter() - t0) / len(data)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--photos", type=int, default=48)
    ap.add_argument("--side", type=int, default=512)
    ap.add_argument("--submissions", type=int, default=1000)
    ap.add_argument("--json")
    args = ap.parse_args(argv)

    from api.client import Client
    from api.devstack.servers import start_redis, start_s3
    from api.devstack.stack import ApiServer, start_worker, wait_worker_ready
    from storage import keys
    from storage.config import Settings, WorkerSettings
    from storage.objects import ObjectStore
    from storage.records import RecordStore

    params = {"method": "builtin", "builtin": [7]}
    blobs = photos(args.photos, args.side)
    per_item_local = in_process(blobs, params)

    root = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    redis = start_redis(root / "redis")
    s3, s3s = start_s3(root / "s3")
    settings = Settings(redis_url=f"redis://127.0.0.1:{redis.ports['redis']}/0", s3=s3s, data_dir=root,
                        worker=WorkerSettings(chunk_size=8, batch_size=4))
    settings = settings.model_copy(update={"api": settings.api.model_copy(update={"rate_limit_per_minute": 10**6})})
    worker = start_worker(settings, "style", log_dir=root / "logs")
    api = ApiServer(settings).start()
    try:
        wait_worker_ready(worker)
        key = RecordStore(settings).apikeys.create("bench")
        client = Client(api.url, key)
        store = ObjectStore(settings.s3)
        rels = []
        for i, blob in enumerate(blobs):
            rel = f"bench/p{i:04d}.jpg"
            store.put_bytes(keys.tenant_key("bench", rel), blob, "image/jpeg")
            rels.append(rel)
        warm = client.submit("style", params=params, inputs={"keys": rels[:1]})
        client.wait(warm["id"], poll=0.05)  # the worker loads its model once
        t0 = time.perf_counter()
        job = client.submit("style", params=params, inputs={"keys": rels})
        job = client.wait(job["id"], poll=0.05)
        per_item_pipeline = (time.perf_counter() - t0) / len(rels)
        assert job["state"] == "succeeded", job

        latencies = []
        for i in range(args.submissions):
            t = time.perf_counter()
            client.submit("style", params=params, inputs={"keys": [rels[i % len(rels)]]})
            latencies.append(time.perf_counter() - t)
        RecordStore(settings).client.delete("style")  # drop the queued benchmark submissions
    finally:
        api.stop()
        worker.kill()
        s3.stop()
        redis.stop()

    overhead = per_item_pipeline - per_item_local
    rows = [
        ["per photo, in-process engine (reference)", per_item_local * 1000, "ms"],
        ["per photo, through the pipeline", per_item_pipeline * 1000, "ms"],
        ["pipeline overhead per photo", overhead * 1000, "ms"],
        ["pipeline / in-process", per_item_pipeline / per_item_local, "x"],
        [f"submit latency p50 ({args.submissions} submissions)", percentile(latencies, 0.5) * 1000, "ms"],
        ["submit latency p99", percentile(latencies, 0.99) * 1000, "ms"],
        ["submit latency median", median(latencies) * 1000, "ms"],
    ]
    print(f"## Pipeline overhead ({args.photos} photos, {args.side} px, built-in style 7, 1 worker)\n")
    print(table(["measure", "value", "unit"], rows))
    write_json(args.json, {"machine": machine(), "per_item_local_s": per_item_local,
                           "per_item_pipeline_s": per_item_pipeline, "overhead_s": overhead,
                           "submit_p50_s": percentile(latencies, 0.5), "submit_p99_s": percentile(latencies, 0.99)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
