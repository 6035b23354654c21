"""A Celery worker app for adapt tests: `tests.library_worker`'s synthetic engine, with glasses.

A face of look 50 or above wears "glasses": its vector moves by `SHIFT` along one direction shared by
everyone (farther than the synthetic space's `assign` threshold), so the library sees one human as two people
until a user merges them, the way a frozen embedding splits a person by glasses or age. Learning from such
merges should teach a head that this direction does not tell people apart.

    celery -A tests.adapt_worker worker -Q faces
"""

from __future__ import annotations

import numpy as np

import tests.library_worker as synthetic
from tests.library_worker import DIM, app, identity_photo

__all__ = ["app", "identity_photo", "face_vector", "GLASSES_FROM"]
SHIFT = 1.0
GLASSES_FROM = 50  # looks from here on wear glasses
_GLASSES = np.random.default_rng(99).normal(size=DIM)
_GLASSES /= np.linalg.norm(_GLASSES)
_plain = synthetic.identity_vector


def face_vector(person: int, look: int) -> np.ndarray:
    """The synthetic embedding of (person, look), glasses included."""
    vector = _plain(person, look)
    return (vector + SHIFT * _GLASSES).astype(np.float32) if look >= GLASSES_FROM else vector


synthetic.identity_vector = face_vector
