"""One model lifecycle for every engine: lazy, load-once, thread-safe (after Immich's ``InferenceModel``).

A model is built cheaply (no file access, no heavy import); `load()` reads its weights the first time it
is called, under a lock, so two threads that ask at once load it once; `predict()` loads on demand and
runs `_predict()`. Subclasses implement `_load()` (and usually `_predict()`). `ModelCache` keeps one
instance per key for a worker process, so engines share models instead of each keeping its own dict.

CPU threads: one worker process per core is the deployment (`WorkerSettings.threads`, 1 by default);
`set_cpu_threads` is called once per process (Celery's worker_process_init) and every torch model and
onnxruntime session created afterwards uses that many threads. An unpinned onnxruntime session takes
every core, and a 2-thread MTCNN next to another busy process was measured ~10x slower than with 1.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable
from typing import Any, ClassVar, Generic, TypeVar

_threads: int | None = None
_torch_threads_applied: int | None = None


def set_cpu_threads(threads: int | None) -> None:
    """Pin the CPU threads that models of this process use (None: the libraries' defaults)."""
    global _threads, _torch_threads_applied
    if threads is not None and threads < 1:
        raise ValueError("threads must be >= 1")
    _threads = threads
    _torch_threads_applied = None


def cpu_threads() -> int | None:
    """The pinned CPU thread count of this process, or None when nothing was pinned."""
    return _threads


def apply_torch_threads() -> None:
    """Make torch use the pinned thread count (call after importing torch, before running a model)."""
    global _torch_threads_applied
    if _threads is None or _torch_threads_applied == _threads:
        return
    import torch

    torch.set_num_threads(_threads)
    _torch_threads_applied = _threads


class InferenceModel(ABC):
    """A model behind ``load()`` / ``predict()``; weights load once, on first use, in the calling process.

    `name` identifies the model in errors and logs; `loaded` says whether `_load()` has run. A failed
    load leaves the model unloaded, so a later call tries again (and raises again, with its reason).
    """

    name: ClassVar[str] = "model"

    def __init__(self) -> None:
        self.loaded = False
        self._load_lock = threading.Lock()

    def load(self) -> None:
        """Load the weights once; later calls return at once. Raises what `_load()` raises."""
        if self.loaded:
            return
        with self._load_lock:  # two requests may arrive for a model neither has loaded
            if not self.loaded:
                self._load()
                self.loaded = True

    def predict(self, *inputs: Any, **options: Any) -> Any:
        """Load if needed, then run the model."""
        self.load()
        return self._predict(*inputs, **options)

    @abstractmethod
    def _load(self) -> None:
        """Read the weights and build whatever runs them (session, network)."""

    def _predict(self, *inputs: Any, **options: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no predict(); use its own methods")


M = TypeVar("M")


class ModelCache(Generic[M]):
    """One object per key in this process, built on first request (thread-safe): e.g. one face engine per
    distinct model setting in a worker, so models load once however many jobs use them."""

    def __init__(self) -> None:
        self._items: dict[Hashable, M] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, build: Callable[[], M]) -> M:
        """The object for `key`, built with `build()` the first time (building is cheap: models load lazily)."""
        with self._lock:
            if key not in self._items:
                self._items[key] = build()
            return self._items[key]

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
