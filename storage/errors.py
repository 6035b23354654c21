"""Storage speaks its own language: these exceptions, never an SDK's or Flask's."""


class StorageError(Exception):
    """Base class of storage errors."""


class ObjectNotFound(StorageError):
    """The object (or bucket) does not exist."""


class StoreUnavailable(StorageError):
    """The object store or Redis could not be reached after retries (a transient outage)."""


class RecordNotFound(StorageError):
    """A job, item or other record does not exist (or belongs to another tenant)."""


class PreconditionFailed(StorageError):
    """A conditional write lost: the object already exists (or changed) — someone else wrote first."""
