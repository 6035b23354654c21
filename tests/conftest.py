"""Shared fixtures: real servers (Redis-compatible, S3), real Celery worker processes, the API over HTTP."""

from __future__ import annotations

import io
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from api.client import Client
from api.devstack.servers import ServerProcess, free_port, start_redis, start_s3
from api.devstack.stack import ApiServer, WorkerProcess, local_redis_url, start_worker, wait_worker_ready
from storage.config import ApiSettings, Settings, WorkerSettings
from storage.objects import ObjectStore
from storage.records import RecordStore


@dataclass
class Services:
    settings: Settings
    redis: ServerProcess
    s3: ServerProcess
    root: Path

    @property
    def records(self) -> RecordStore:
        return RecordStore(self.settings)

    @property
    def store(self) -> ObjectStore:
        return ObjectStore(self.settings.s3)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: loads real models or runs large batches (still runs in CI)")
    config.addinivalue_line("markers", "integration: talks to real servers and worker processes")


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    root = tmp_path_factory.mktemp("stack")
    password = secrets.token_urlsafe(16)  # as the embedded stack runs it: no anonymous access
    redis = start_redis(root / "redis", password=password)
    s3, s3_settings = start_s3(root / "s3")
    settings = Settings(
        redis_url=local_redis_url(redis.ports["redis"], password), s3=s3_settings, data_dir=root, key_prefix="nst",
        worker=WorkerSettings(chunk_size=4, batch_size=2, max_attempts=3, heartbeat_s=1,
                              vgg19_weights=root / "vgg19-random.pth"),  # written by the Gatys test
        api=ApiSettings(rate_limit_per_minute=100_000),
    )
    yield Services(settings, redis, s3, root)
    s3.stop()
    redis.stop()


@pytest.fixture(scope="session")
def workers(services: Services) -> Iterator[dict[str, WorkerProcess]]:
    procs = {q: start_worker(services.settings, q, log_dir=services.root / "logs",
                             metrics_port=free_port() if q == "style" else 0) for q in ("style", "faces")}
    try:
        for w in procs.values():
            wait_worker_ready(w)
        yield procs
    finally:
        for w in procs.values():
            w.stop()


@pytest.fixture(scope="session")
def api_server(services: Services) -> Iterator[ApiServer]:
    server = ApiServer(services.settings).start()
    yield server
    server.stop()


def new_tenant_key(services: Services, tenant: str | None = None) -> tuple[str, str]:
    tenant = tenant or "t" + secrets.token_hex(4)
    return tenant, services.records.apikeys.create(tenant)


@pytest.fixture
def tenant_key(services: Services) -> tuple[str, str]:
    return new_tenant_key(services)


@pytest.fixture
def client(api_server: ApiServer, tenant_key: tuple[str, str]) -> Client:
    return Client(api_server.url, tenant_key[1])


@pytest.fixture
def http(api_server: ApiServer, tenant_key: tuple[str, str]) -> Iterator[object]:
    """The Flask test client with this test's key (same app as the HTTP server)."""
    c = api_server.app.test_client()
    c.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {tenant_key[1]}"
    yield c


def jpeg_bytes(img: Image.Image | np.ndarray, quality: int = 90) -> bytes:
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def photo(seed: int, size: tuple[int, int] = (96, 64)) -> bytes:
    """A small, distinct, valid JPEG (smooth gradients plus noise, like a photo)."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * (3 + seed % 5)) % 256, (yy * (2 + seed % 3)) % 256, (xx + yy + seed * 17) % 256], -1)
    noisy = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    return jpeg_bytes(noisy)


