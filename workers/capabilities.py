"""What this worker can run, published to Redis while it lives (the API cannot look at a worker's disk).

On `worker_ready` a worker publishes which weights files (the registry in `workers.models`) and which
libraries it has, with a time to live; a heartbeat thread renews the record (and looks again, so weights
added later show up) until the worker shuts down and withdraws it. Everything here runs in the worker's
main process: files are only looked for (stat), never loaded, and no heavy library is imported.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from storage.config import Settings
from storage.coordination import WorkerInfo
from storage.errors import StoreUnavailable
from storage.records import RecordStore
from workers.models.catalog import modules_to_check
from workers.models.registry import WeightsNotAvailable, registered, resolve

log = logging.getLogger("nightshift.capabilities")
# modules that register weights records (registration is bookkeeping: none of them imports torch)
WEIGHT_MODULES = ("workers.style.onnx_models", "workers.style.vgg_weights", "workers.faces.weights")


def weights_present(settings: Settings) -> dict[str, bool]:
    """Registered weights name -> whether its file is where this worker would load it from."""
    for module in WEIGHT_MODULES:
        importlib.import_module(module)
    from workers.style.vgg_weights import VGG19_WEIGHTS

    overrides: dict[str, Path | None] = {VGG19_WEIGHTS: settings.worker.vgg19_weights}
    present = {}
    for name in registered():
        try:
            resolve(name, overrides.get(name), verify=False)  # a checksum is checked on first use, not here
            present[name] = True
        except WeightsNotAvailable:
            present[name] = False
    return present


def modules_present() -> dict[str, bool]:
    """Library -> importable here (found, not imported: importing torch would cost the main process 650 MB)."""
    out = {}
    for name in modules_to_check():
        try:
            out[name] = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            out[name] = False
    return out


def worker_info(name: str, queues: Sequence[str], settings: Settings, started_at: float) -> WorkerInfo:
    return WorkerInfo(
        name=name,
        queues=sorted(queues),
        weights=weights_present(settings),
        modules=modules_present(),
        device=settings.worker.device,
        started_at=started_at,
    )


class Heartbeat:
    """Publishes a worker's capabilities every `heartbeat_s`, with a time to live of three beats."""

    def __init__(self, records: RecordStore, name: str, queues: Sequence[str], settings: Settings) -> None:
        self.records, self.name, self.queues, self.settings = records, name, list(queues), settings
        self.interval = settings.worker.heartbeat_s
        self.started_at = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nightshift-heartbeat", daemon=True)

    def beat(self) -> None:
        info = worker_info(self.name, self.queues, self.settings, self.started_at)
        self.records.publish_worker(info, ttl_s=max(3 * self.interval, 5))

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.beat()
            except StoreUnavailable as exc:  # Redis is away: the record lapses, the next beat renews it
                log.warning("heartbeat not published: %s", exc)
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self.records.withdraw_worker(self.name)
        except StoreUnavailable:
            pass
