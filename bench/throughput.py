"""Throughput of the whole stack with two faces workers: photos per second at steady state for a
2,000-photo index job, and where the time goes per stage, from the workers' own metrics.

    python -m bench.throughput [--photos 2000] [--workers 2] [--json OUT]

Steady state is the rate between 10 % and 90 % of the job (start-up and the tail excluded). A faces job
ends by folding its faces into the tenant's library (its finalize); photos/s is reported both up to the
last photo recorded (without that step) and up to the job's end (with it).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import requests

from bench.ceiling import Stack
from bench.common import machine, table, write_json
from bench.scaling import face_photos


def stage_seconds(ports: list[int]) -> dict[str, tuple[float, float]]:
    """{stage: (total seconds, count)} summed over the workers' Prometheus endpoints."""
    out: dict[str, list[float]] = {}
    for port in ports:
        for line in requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text.splitlines():
            for suffix, slot in (("_sum", 0), ("_count", 1)):
                name = f"nightshift_stage_seconds{suffix}{{"
                if line.startswith(name):
                    stage = line.split('stage="', 1)[1].split('"', 1)[0]
                    out.setdefault(stage, [0.0, 0.0])[slot] += float(line.rsplit(" ", 1)[1])
    return {k: (v[0], v[1]) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--photos", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args(argv)

    from api.client import Client
    from api.devstack.servers import free_port
    from api.devstack.stack import ApiServer, start_worker, wait_worker_ready
    from storage import keys
    from storage.objects import ObjectStore
    from storage.records import RecordStore

    stack = Stack.start(Path(tempfile.mkdtemp(prefix="bench-throughput-")), chunk_size=16, batch_size=8)
    root, settings = stack.root, stack.settings
    ports = [free_port() for _ in range(args.workers)]
    workers = [start_worker(settings, "faces", log_dir=root / "logs", metrics_port=p) for p in ports]
    api = ApiServer(settings).start()
    try:
        for w in workers:
            wait_worker_ready(w)
        client = Client(api.url, RecordStore(settings).apikeys.create("bench"))
        store = ObjectStore(settings.s3)
        rels = []
        for i, blob in enumerate(face_photos(args.photos, seed=1)):
            rel = f"archive/p{i:05d}.jpg"
            store.put_bytes(keys.tenant_key("bench", rel), blob, "image/jpeg")
            rels.append(rel)
        marks: dict[float, float] = {}
        items_done: list[float] = []
        t0 = time.perf_counter()
        job = client.submit("faces", params={"thumbnails": True}, inputs={"keys": rels})

        rss_early: list[float] = []

        def track(j: dict) -> None:
            c = j["counts"]
            fraction = (c["total"] - c["pending"]) / max(c["total"], 1)
            marks[time.perf_counter() - t0] = fraction
            if c["pending"] == 0 and not items_done:
                items_done.append(time.perf_counter() - t0)
            if fraction >= 0.05 and not rss_early:  # models loaded, first chunks done
                rss_early.extend(_rss_mb(w.proc.pid) for w in workers)

        job = client.wait(job["id"], poll=0.1, on_progress=track)
        total = time.perf_counter() - t0
        items_s = items_done[0] if items_done else total
        stages = stage_seconds(ports)
        rss = [_rss_mb(w.proc.pid) for w in workers]
    finally:
        api.stop()
        for w in workers:
            w.kill()
        stack.stop()
    t10 = min(t for t, f in marks.items() if f >= 0.1)
    t90 = min(t for t, f in marks.items() if f >= 0.9)
    steady = 0.8 * args.photos / max(t90 - t10, 1e-9)
    print(f"## Whole-stack throughput ({args.photos} photos, {args.workers} faces workers, this machine)\n")
    print(
        table(
            ["measure", "value"],
            [
                ["job state", job["state"]],
                ["faces found", job.get("summary", {}).get("faces")],
                ["wall time (s)", total],
                ["photos/s overall, with the library fold at the end", args.photos / total],
                ["photos/s overall, up to the last photo recorded (without the fold)", args.photos / items_s],
                ["library fold at the job's end (s)", total - items_s],
                ["library fold summary", str(job.get("summary", {}).get("library"))[:100]],
                ["photos/s steady state (10-90 %)", steady],
                ["worker RSS at 5 % (MB, per worker)", " / ".join(f"{v:.0f}" for v in rss_early)],
                ["worker RSS at the end (MB, per worker)", " / ".join(f"{v:.0f}" for v in rss)],
            ],
        )
    )
    busy = sum(s for s, _ in stages.values()) or 1.0
    print("\nWhere the time goes (worker metrics, summed over workers):\n")
    print(
        table(
            ["stage", "seconds", "share", "ms per call"],
            [[k, s, f"{100 * s / busy:.0f} %", 1000 * s / max(n, 1)] for k, (s, n) in sorted(stages.items())],
        )
    )
    write_json(
        args.json,
        {
            "machine": machine(),
            "photos": args.photos,
            "seconds": total,
            "items_seconds": items_s,
            "faces": job.get("summary", {}).get("faces"),
            "steady_per_s": steady,
            "stages": stages,
            "worker_rss_mb": rss,
            "worker_rss_early_mb": rss_early,
        },
    )
    return 0


def _rss_mb(pid: int) -> float:
    try:
        import psutil

        proc = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20
    except Exception:
        return float("nan")


if __name__ == "__main__":
    sys.exit(main())
