"""Model weights: one small registry (name -> file, source, checksum, preprocessing). Imports nothing heavy."""

from workers.models.registry import (
    WeightsChecksumError,
    WeightsNotAvailable,
    WeightsSpec,
    package_file,
    register,
    registered,
    resolve,
    spec,
)

__all__ = [
    "WeightsChecksumError",
    "WeightsNotAvailable",
    "WeightsSpec",
    "package_file",
    "register",
    "registered",
    "resolve",
    "spec",
]
