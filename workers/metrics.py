"""Prometheus metrics of the workers (items, stages, jobs, GPU memory). Cheap to import.

Prefork pool children update these in their own memory; with PROMETHEUS_MULTIPROC_DIR set
(before this module is imported), every process writes to that folder and the worker's main
process serves them all together on `worker.metrics_port`.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

ITEMS = Counter("nightshift_items_total", "Items that reached a final state", ["state"])
STAGE = Histogram(
    "nightshift_stage_seconds",
    "Time per item stage (decode, model, upload, download)",
    ["stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
JOBS_FINISHED = Counter("nightshift_jobs_finished_total", "Jobs finished", ["kind", "state"])
GPU_MEMORY = Gauge(
    "nightshift_gpu_memory_bytes", "GPU memory allocated by this worker process", multiprocess_mode="livesum"
)


def serve(port: int) -> None:
    """Serve the metrics of this worker (all its pool processes) on `port`."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        from prometheus_client import multiprocess

        Path(folder).mkdir(parents=True, exist_ok=True)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        start_http_server(port, registry=registry)
    else:
        start_http_server(port)


def record_gpu_memory() -> None:
    """Set the GPU gauge when torch is loaded and CUDA is in use (never imports torch itself)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        GPU_MEMORY.set(torch.cuda.memory_allocated())
