"""Faces become people: search, clustering, identification and names over face embeddings.

- `workers.people.search`: `VectorIndex` and the exact, blocked `ExactIndex` (k nearest, radius pairs).
- `workers.people.cluster`: `cluster_faces`, constrained and order-independent clustering into `Cluster`s.
- `workers.people.labels`: `Labels` (names, confirmations, merges, "not this person") and `carry_labels`.
- `workers.people.identify`: a `Gallery` enrolled from one photo or more, and `identify` against it.
- `workers.people.calibration`: thresholds (`VERIFY_THRESHOLD`, `CLUSTER_THRESHOLD`, `IDENTIFY_THRESHOLD`).
- `workers.people.sheet`: contact sheets of a person's faces.

Pure functions over numpy arrays: no storage, no models, no Celery. Importing this package imports nothing heavy.
"""
