"""Shared fixtures: real servers (Redis-compatible, S3), real Celery worker processes, the API over HTTP."""

from __future__ import annotations

import io
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

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


@dataclass
class OwnStack(Services):
    """A test module's own servers and API (for faults and settings the shared stack must not see), with a client
    holding one tenant's key and the workers it started."""

    api: ApiServer
    client: Client
    key: str
    workers: list[WorkerProcess] = field(default_factory=list)

    def add_worker(
        self, queue: str, app: str, concurrency: int = 1, extra_env: dict[str, str] | None = None
    ) -> WorkerProcess:
        w = start_worker(
            self.settings, queue, concurrency=concurrency, log_dir=self.root / "logs", app=app, extra_env=extra_env
        )
        self.workers.append(w)
        wait_worker_ready(w)
        return w


S = TypeVar("S", bound=OwnStack)


@contextmanager
def own_stack(
    cls: type[S], root: Path, tenant: str, worker: WorkerSettings, *, password: str | None = None, **settings: Any
) -> Iterator[S]:
    """Redis (with `password`), S3 and the API for `Settings(worker=worker, **settings)`; everything stops on
    exit, workers first (the servers a test restarted included)."""
    redis = start_redis(root / "redis", password=password)
    s3, s3_settings = start_s3(root / "s3")
    port = redis.ports["redis"]
    url = local_redis_url(port, password) if password else f"redis://127.0.0.1:{port}/0"
    config = Settings(redis_url=url, s3=s3_settings, data_dir=root, worker=worker, **settings)
    api = ApiServer(config).start()
    key = RecordStore(config).apikeys.create(tenant)
    stack = cls(config, redis, s3, root, api, Client(api.url, key), key)
    try:
        yield stack
    finally:
        for w in stack.workers:
            w.kill()
        stack.api.stop()
        stack.s3.stop()
        stack.redis.stop()


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
        redis_url=local_redis_url(redis.ports["redis"], password),
        s3=s3_settings,
        data_dir=root,
        key_prefix="nst",
        worker=WorkerSettings(
            chunk_size=4, batch_size=2, max_attempts=3, heartbeat_s=1, vgg19_weights=root / "vgg19-random.pth"
        ),  # written by the Gatys test
        api=ApiSettings(rate_limit_per_minute=100_000),
    )
    yield Services(settings, redis, s3, root)
    s3.stop()
    redis.stop()


@pytest.fixture(scope="session")
def workers(services: Services) -> Iterator[dict[str, WorkerProcess]]:
    procs = {
        q: start_worker(
            services.settings, q, log_dir=services.root / "logs", metrics_port=free_port() if q == "style" else 0
        )
        for q in ("style", "faces")
    }
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


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium (tests/browser.py) for the tests of one module."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright for the browser tests")
    from tests.browser import launch_chromium

    with sync_api.sync_playwright() as pw:
        b = launch_chromium(pw)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page that fails the test on any uncaught script error or CSP violation."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    problems: list[str] = []
    pg.on("pageerror", lambda exc: problems.append(f"uncaught: {exc}"))
    pg.on(
        "console",
        lambda msg: (
            problems.append(f"console: {msg.text}")
            if msg.type == "error" and "Content Security Policy" in msg.text
            else None
        ),
    )
    yield pg
    context.close()
    assert not problems, problems


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


HEAVY = ("torch", "dlib", "facenet_pytorch", "onnxruntime", "onnx", "skimage.transform")


def fresh_python(code: str) -> str:
    """What `code` prints in a new interpreter (for what a process imports or sets up when it starts)."""
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    ).stdout


def heavy_imports(modules: str) -> list[str]:
    """The heavy packages (HEAVY) that importing `modules` (comma-separated) loads in a new interpreter."""
    return fresh_python(f"import sys, {modules}; print(*sorted(m for m in {HEAVY!r} if m in sys.modules))").split()


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
