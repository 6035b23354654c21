"""Several worker processes on one GPU: each pool process may hold a share of the card's memory.

torch's caching allocator keeps what it once allocated, so N processes on one GPU (`celery -c N`) can each
grow until the card is full and the last one fails. `worker.gpu_memory_fraction` caps each process (1/N
of the card, or less); a process that would pass its cap gets an out-of-memory error it can retry with a
smaller batch instead of starving the others. docs/operations.md says how to size N and the batches.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

log = logging.getLogger("nightshift.gpu")


def share_gpu(fraction: float | None, device: int = 0) -> bool:
    """Cap this process's CUDA memory at `fraction` of the card; True when a cap was set. Imports torch only
    when a cap is asked for (call it in the pool child, after the fork: never in the parent)."""
    if not fraction:
        return False
    torch: Any = sys.modules.get("torch")
    if torch is None:
        import torch
    if not torch.cuda.is_available():
        log.info("worker.gpu_memory_fraction is set but there is no CUDA device: ignored")
        return False
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    return True
