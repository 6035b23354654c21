"""The object store: S3 (MinIO in production, SeaweedFS locally) through the minio SDK.

Every call retries transient failures (connection refused, timeouts, 5xx, throttling) with
exponential backoff, then raises StoreUnavailable; a missing object raises ObjectNotFound.
"""

from __future__ import annotations

import io
import json
import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, TypeVar

import urllib3
from minio import Minio
from minio.datatypes import PostPolicy
from minio.error import InvalidResponseError, S3Error, ServerError

from storage.config import S3Settings
from storage.errors import ObjectNotFound, PreconditionFailed, StorageError, StoreUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

_NOT_FOUND = {"NoSuchKey", "NoSuchBucket", "NoSuchObject", "NoSuchUpload", "NotFound"}
_PRECONDITION = {"PreconditionFailed", "ConditionalRequestConflict"}
_TRANSIENT = {
    "SlowDown",
    "InternalError",
    "ServiceUnavailable",
    "RequestTimeout",
    "ServerBusy",
    "XMinioServerNotInitialized",
}


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    content_type: str | None
    last_modified: datetime | None


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError, ServerError)):
        return True
    if isinstance(exc, InvalidResponseError):
        return True
    return isinstance(exc, S3Error) and exc.code in _TRANSIENT


def _http_client(timeout_s: float = 30.0) -> urllib3.PoolManager:
    # Our own retry loop owns backoff; urllib3 only retries a dropped idle connection once.
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=3.0, read=timeout_s),
        retries=urllib3.Retry(total=1, connect=1, read=0, redirect=0, status=0),
        maxsize=16,
    )


class ObjectStore:
    """One bucket of an S3 endpoint."""

    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self._client = self._minio(http_client=_http_client())
        self._quick: Minio | None = None  # health checks: no retries, short timeouts
        # Presigning is offline (region is given), so this client never has to reach the public endpoint.
        public_secure = settings.secure if settings.public_secure is None else settings.public_secure
        self._public = self._minio(settings.public_endpoint or settings.endpoint, public_secure)

    def _minio(self, endpoint: str | None = None, secure: bool | None = None, **kw: Any) -> Minio:
        s = self.settings
        return Minio(
            endpoint or s.endpoint,
            access_key=s.access_key,
            secret_key=s.secret_key,
            secure=s.secure if secure is None else secure,
            region=s.region,
            **kw,
        )

    # -- retry core -------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], T], *, key: str | None = None) -> T:
        delay = self.settings.backoff_s
        attempts = self.settings.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return fn()
            except S3Error as exc:
                if exc.code in _NOT_FOUND:
                    raise ObjectNotFound(f"{key or self.bucket}: {exc.code}") from None
                if exc.code in _PRECONDITION:
                    raise PreconditionFailed(f"{key}: {exc.code}") from None
                if not _is_transient(exc):
                    raise StorageError(f"{what} failed: {exc.code}: {exc.message}") from None
                last: BaseException = exc
            except Exception as exc:
                if not _is_transient(exc):
                    raise
                last = exc
            if attempt < attempts:
                sleep = min(delay, self.settings.backoff_max_s) * (0.8 + 0.4 * random.random())
                log.warning(
                    "object store %s failed (%s), retry %d/%d in %.1fs",
                    what,
                    type(last).__name__,
                    attempt,
                    attempts - 1,
                    sleep,
                )
                time.sleep(sleep)
                delay *= 2
        raise StoreUnavailable(f"object store unreachable for {what}: {type(last).__name__}") from None

    # -- buckets -----------------------------------------------------------------------------

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (idempotent, safe to race)."""

        def make() -> None:
            if not self._client.bucket_exists(self.bucket):
                try:
                    self._client.make_bucket(self.bucket, location=self.settings.region)
                except S3Error as exc:
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise

        self._call("ensure_bucket", make)

    def ping(self) -> bool:
        """True when the endpoint answers within about a second and the bucket exists (one attempt)."""
        if self._quick is None:
            quick = urllib3.PoolManager(timeout=urllib3.Timeout(connect=1.0, read=1.0), retries=False, maxsize=2)
            self._quick = self._minio(http_client=quick)
        try:
            return bool(self._quick.bucket_exists(self.bucket))
        except Exception:
            return False

    # -- writes ------------------------------------------------------------------------------

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Write (or overwrite) an object from bytes."""
        self._call(
            "put",
            lambda: self._client.put_object(self.bucket, key, io.BytesIO(data), len(data), content_type=content_type),
            key=key,
        )

    def put_if_absent(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        """Create `key` only if no object has that key (S3 ``If-None-Match: *``, a conditional write that MinIO
        and SeaweedFS honour): of two writers, exactly one wins. Raises PreconditionFailed for the loser."""
        headers = {"If-None-Match": "*", "Content-Type": content_type}

        def put() -> None:
            # minio-py's put_object would turn If-None-Match into user metadata; its PutObject call takes it as is
            self._client._put_object(self.bucket, key, data, headers=headers)

        self._call("put_if_absent", put, key=key)

    def put_json(self, key: str, value: Any) -> None:
        self.put_bytes(key, json.dumps(value, indent=1, default=str).encode(), "application/json")

    def put_stream(
        self, key: str, stream: IO[bytes], length: int = -1, content_type: str = "application/octet-stream"
    ) -> None:
        """Write from a stream without holding it in memory (multipart above `part_size`).

        A seekable stream is rewound and retried on transient errors; a non-seekable one is not.
        """
        start = stream.tell() if stream.seekable() else None

        def put() -> None:
            if start is not None:
                stream.seek(start)
            self._client.put_object(
                self.bucket, key, stream, length, content_type=content_type, part_size=self.settings.part_size
            )

        if start is None:
            try:
                put()
            except Exception as exc:
                if _is_transient(exc):
                    raise StoreUnavailable(f"object store unreachable for put {key}") from None
                raise
        else:
            self._call("put", put, key=key)

    # -- reads -------------------------------------------------------------------------------

    def get_bytes(self, key: str) -> bytes:
        """Read a whole (small) object."""
        return self._read(key)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """`length` bytes of an object from `offset` (one ranged GET)."""
        return self._read(key, offset, length)

    def _read(self, key: str, offset: int = 0, length: int = 0) -> bytes:
        def get() -> bytes:
            resp = self._client.get_object(self.bucket, key, offset=offset, length=length)
            try:
                return resp.read()
            finally:
                resp.close()
                resp.release_conn()

        return self._call("get", get, key=key)

    def get_json(self, key: str) -> Any:
        return json.loads(self.get_bytes(key))

    @contextmanager
    def open(self, key: str) -> Iterator[IO[bytes]]:
        """Stream an object: `with store.open(key) as fh: fh.read(n)`."""
        resp = self._call("open", lambda: self._client.get_object(self.bucket, key), key=key)
        try:
            yield resp  # type: ignore[misc]
        finally:
            resp.close()
            resp.release_conn()

    def download(self, key: str, path: Path, chunk: int = 1 << 20) -> int:
        """Stream an object to a local file; returns its size."""
        path.parent.mkdir(parents=True, exist_ok=True)

        def fetch() -> int:
            size = 0
            with self.open(key) as src, open(path, "wb") as dst:
                while block := src.read(chunk):
                    dst.write(block)
                    size += len(block)
            return size

        return self._call("download", fetch, key=key)

    def stat(self, key: str) -> ObjectInfo:
        st = self._call("stat", lambda: self._client.stat_object(self.bucket, key), key=key)
        return ObjectInfo(key, int(st.size or 0), str(st.etag), st.content_type, st.last_modified)

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
            return True
        except ObjectNotFound:
            return False

    def list(self, prefix: str, *, start_after: str | None = None, recursive: bool = True) -> Iterator[ObjectInfo]:
        """Iterate objects under a prefix in key order, page by page (never all keys in memory).

        A transient failure mid-listing resumes after the last key seen.
        """
        last = start_after
        while True:
            try:
                for obj in self._client.list_objects(self.bucket, prefix=prefix, recursive=recursive, start_after=last):
                    if obj.is_dir:
                        continue
                    last = obj.object_name
                    yield ObjectInfo(str(obj.object_name), int(obj.size or 0), str(obj.etag), None, obj.last_modified)
                return
            except S3Error as exc:
                if exc.code in _NOT_FOUND:
                    raise ObjectNotFound(f"{prefix}: {exc.code}") from None
                if not _is_transient(exc):
                    raise StorageError(f"list failed: {exc.code}") from None
                self._call("list", lambda: self._client.bucket_exists(self.bucket))
            except Exception as exc:
                if not _is_transient(exc):
                    raise
                self._call("list", lambda: self._client.bucket_exists(self.bucket))

    # -- deletes -----------------------------------------------------------------------------

    def delete(self, key: str) -> None:
        self._call("delete", lambda: self._client.remove_object(self.bucket, key), key=key)

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under a prefix; returns how many."""
        count = 0
        for obj in self.list(prefix):
            self.delete(obj.key)
            count += 1
        return count

    # -- presigned URLs ------------------------------------------------------------------------

    def presigned_get(self, key: str, expires_s: int | None = None, filename: str | None = None) -> str:
        """A short-lived GET URL signed for the public endpoint."""
        headers = {"response-content-disposition": f'attachment; filename="{filename}"'} if filename else None
        return self._public.presigned_get_object(
            self.bucket,
            key,
            expires=timedelta(seconds=expires_s or self.settings.presign_expiry_s),
            response_headers=headers,
        )

    def presigned_post(self, key: str, max_bytes: int, expires_s: int | None = None) -> tuple[str, dict[str, str]]:
        """A short-lived browser-style upload (POST form) of exactly `key`, at most `max_bytes` long.

        S3 enforces the size only for POST policies (`content-length-range`), never for presigned PUTs.
        Returns the form's URL and its fields; the file goes last, in a field named `file`.
        """
        policy = PostPolicy(
            self.bucket, datetime.now(UTC) + timedelta(seconds=expires_s or self.settings.presign_expiry_s)
        )
        policy.add_equals_condition("key", key)
        policy.add_content_length_range_condition(0, max_bytes)
        fields = self._public.presigned_post_policy(policy)
        public = self.settings.public_endpoint or self.settings.endpoint
        secure = self.settings.secure if self.settings.public_secure is None else self.settings.public_secure
        return f"{'https' if secure else 'http'}://{public}/{self.bucket}", {**fields, "key": key}
