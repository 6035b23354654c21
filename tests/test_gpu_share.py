"""Several worker processes on one GPU: each caps its CUDA memory (the GPU itself is the edge faked here)."""

from __future__ import annotations

import sys
import types

import pytest

from storage.config import WorkerSettings
from workers.gpu import share_gpu


class FakeCuda:
    def __init__(self, available: bool) -> None:
        self.available = available
        self.calls: list[tuple[float, int]] = []

    def is_available(self) -> bool:
        return self.available

    def set_per_process_memory_fraction(self, fraction: float, device: int) -> None:
        self.calls.append((fraction, device))


@pytest.fixture
def cuda(monkeypatch: pytest.MonkeyPatch):
    def install(available: bool) -> FakeCuda:
        fake = FakeCuda(available)
        monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=fake))
        return fake

    return install


def test_each_process_caps_its_share_of_the_card(cuda) -> None:
    gpu = cuda(True)
    assert share_gpu(0.25) is True
    assert gpu.calls == [(0.25, 0)]


def test_no_cap_asked_or_no_gpu_changes_nothing(cuda) -> None:
    gpu = cuda(False)
    assert share_gpu(None) is False and share_gpu(0.5) is False
    assert gpu.calls == []


def test_the_share_is_a_setting_with_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    from storage.config import Settings

    monkeypatch.setenv("NIGHTSHIFT_WORKER__GPU_MEMORY_FRACTION", "0.25")
    assert Settings().worker.gpu_memory_fraction == 0.25
    with pytest.raises(ValueError):
        WorkerSettings(gpu_memory_fraction=1.5)
