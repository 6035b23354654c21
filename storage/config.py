"""Configuration in one place: one settings object, built once per process (tests build their own).

Environment variables use the prefix ``NIGHTSHIFT_`` and ``__`` for nesting, e.g.
``NIGHTSHIFT_S3__ENDPOINT=minio:9000`` or ``NIGHTSHIFT_WORKER__CHUNK_SIZE=32``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class S3Settings(BaseModel):
    """The object store (MinIO or any S3). A field's docstring is its description."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    endpoint: str = "127.0.0.1:9000"
    public_endpoint: str | None = None
    """host:port clients reach for presigned URLs; defaults to `endpoint`"""
    public_secure: bool | None = None
    access_key: str = "minioadmin"
    secret_key: str = "minioadmin"
    secure: bool = False
    region: str = "us-east-1"
    bucket: str = "nightshift"
    presign_expiry_s: int = Field(900, ge=1, le=7 * 24 * 3600)
    retries: int = Field(8, ge=0, le=30)
    """attempts on transient errors before StoreUnavailable"""
    backoff_s: float = Field(0.25, ge=0)
    backoff_max_s: float = Field(8.0, ge=0)
    part_size: int = Field(16 * 1024 * 1024, ge=5 * 1024 * 1024)


class WorkerSettings(BaseModel):
    """Workers: batching, limits, timing, devices, videos. A field's docstring is its description."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    chunk_size: int = Field(16, ge=1, le=10_000)
    """items per Celery message"""
    batch_size: int = Field(4, ge=1, le=1024)
    """items per model batch inside a chunk"""
    io_threads: int = Field(4, ge=1, le=64)
    """threads per pool process that download, decode, encode and upload beside the model"""
    overlap: bool = True
    """prefetch the next batch and write the last one while a batch is on the model; false runs every stage in turn
    (benchmarks compare both)"""
    gpu_memory_fraction: float | None = Field(None, gt=0, le=1)
    """the share of the GPU's memory each pool process may hold; with N processes on one GPU at most 1/N
    (docs/operations.md)"""
    max_attempts: int = Field(3, ge=1, le=100)
    """deliveries of one item before it fails alone"""
    soft_time_limit_s: int = Field(3000, ge=1)
    time_limit_s: int = Field(3600, ge=1)
    device: str = "auto"
    """auto | cpu | cuda"""
    threads: int = Field(1, ge=1, le=256)
    """CPU threads per pool process for torch and onnxruntime; run one process per core (-c) rather than many threads
    (measured: 2 torch threads on 2 busy cores ran 2-6x slower than 1)"""
    visibility_margin_s: int = Field(600, ge=1)
    """visibility timeout = hard time limit + this"""
    retry_backoff_max_s: int = Field(60, ge=1)
    max_archive_members: int = Field(200_000, ge=1)
    max_archive_bytes: int = Field(20 * 1024**3, ge=1)
    max_member_bytes: int = Field(200 * 1024**2, ge=1)
    max_pixels: int = Field(100_000_000, ge=1)
    vgg19_weights: Path | None = None
    """VGG19 IMAGENET1K_V1 state dict for the Gatys method"""
    heartbeat_s: float = Field(10.0, gt=0)
    """how often a worker says it is alive (readiness)"""
    lease_s: float = Field(60.0, gt=0)
    """a worker's claim on the job it works on lapses this long after its last renewal (renewed every third of it while
    it works)"""
    watchdog_interval_s: float = Field(30.0, gt=0)
    """how often workers sweep for orphaned work"""
    watchdog_grace_s: float = Field(60.0, gt=0)
    """an unfinished job with nobody on it and nothing queued for this long gets its work re-queued"""
    metrics_port: int = Field(0, ge=0, le=65535)
    """Prometheus port of the worker (0: off); set PROMETHEUS_MULTIPROC_DIR so pool children's metrics are collected"""
    # Videos (docs/video.md). A video outside these limits fails as one item, with the limit in its reason.
    video_max_bytes: int = Field(20 * 1024**3, ge=1)
    """largest video file accepted"""
    video_max_pixels: int = Field(8192 * 4320, ge=1)
    """largest frame (width x height; 8K)"""
    video_max_seconds: float = Field(4 * 3600.0, gt=0)
    """longest video accepted"""
    video_max_fps: float = Field(240.0, gt=0)
    """highest average frame rate accepted"""
    video_segment_seconds: float = Field(10.0, ge=1.0)
    """length of one stylization segment: each segment is one item and runs as its own chunk"""
    video_context_frames: int = Field(16, ge=0, le=256)
    """frames decoded before and after a segment so its temporal filter starts warm and its join is seamless"""
    video_read_block_bytes: int = Field(1024**2, ge=64 * 1024)
    """size of one range read from the object store when streaming a video"""
    video_read_cache_blocks: int = Field(16, ge=1, le=1024)
    """range-read blocks kept per open video"""


class LibrarySettings(BaseModel):
    """The per-tenant face library (docs/library.md). A field's docstring is its description."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    min_faces: int = Field(3, ge=1, le=1000)
    """unassigned faces that agree form a new person only when they are at least this many"""


class ApiSettings(BaseModel):
    """The intake API's limits. A field's docstring is its description."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    max_request_mb: int = Field(512, ge=1)
    max_files: int = Field(10_000, ge=1)
    max_json_mb: int = Field(16, ge=1)
    """largest JSON body (a job naming 100,000 keys fits)"""
    rate_limit_per_minute: int = Field(600, ge=1)
    """requests per API key per minute"""
    sync_timeout_s: float = Field(60.0, gt=0)
    """how long synchronous endpoints wait on a worker"""
    page_size_max: int = Field(1000, ge=1)
    metrics_token: str | None = None
    """bearer token Prometheus sends to /metrics; unset: only scrapes from this host are answered"""


class Settings(BaseSettings):
    """All of Nightshift's configuration."""

    model_config = SettingsConfigDict(
        env_prefix="NIGHTSHIFT_", env_nested_delimiter="__", extra="ignore", use_attribute_docstrings=True
    )

    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "ns"
    """prefix of every Redis key"""
    data_dir: Path = Path(".nightshift")
    s3: S3Settings = Field(default_factory=S3Settings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    library: LibrarySettings = Field(default_factory=LibrarySettings)
    job_ttl_days: int = Field(30, ge=1)
    """Redis records expire; the manifest in S3 stays"""

    @property
    def visibility_timeout_s(self) -> int:
        # Above the hard time limit, so a long task is never redelivered while it still runs.
        return self.worker.time_limit_s + self.worker.visibility_margin_s


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment variables that rebuild `settings` in another process (workers, API)."""
    env: dict[str, str] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(f"{prefix}__{name.upper()}" if prefix else name.upper(), getattr(value, name))
        elif value is not None:
            env[f"NIGHTSHIFT_{prefix}"] = str(value)

    walk("", settings)
    return env
