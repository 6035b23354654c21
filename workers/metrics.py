"""Prometheus metrics of the workers (items, stages, jobs). Cheap to import."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ITEMS = Counter("nightshift_items_total", "Items that reached a final state", ["state"])
STAGE = Histogram(
    "nightshift_stage_seconds", "Time per item stage", ["stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
JOBS_FINISHED = Counter("nightshift_jobs_finished_total", "Jobs finished", ["kind", "state"])
GPU_MEMORY = Gauge("nightshift_gpu_memory_bytes", "GPU memory allocated by this worker process")
