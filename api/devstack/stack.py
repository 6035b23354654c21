"""The embedded default stack: a Redis-compatible server, an S3 server, one Celery worker per queue
and the API, all on loopback, with data under one folder (default ``./.nightshift``).

`nightshift up` runs it in the foreground; Ctrl-C stops everything in order. A second start reuses
the data, the ports and the credentials kept in the folder.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from api.devstack.servers import (
    S3_PORT_OFFSET,
    ServerProcess,
    die_with_parent,
    free_port,
    free_port_block,
    port_is_free,
    private_dir,
    redis_password,
    s3_credentials,
    start_redis,
    start_s3,
    wait_until,
)
from storage.config import S3Settings, Settings, WorkerSettings, settings_env
from storage.names import Queue
from storage.records import RecordStore

log = logging.getLogger("nightshift.stack")
LOCAL_TENANT = "local"
RESTART_BACKOFF_S = 5.0  # a worker that keeps dying is restarted at most this often
PROJECT_ROOT = Path(__file__).resolve().parents[2]  # workers import `workers.tasks` from here


def local_redis_url(port: int, password: str) -> str:
    return f"redis://:{password}@127.0.0.1:{port}/0"


def stack_settings(data_dir: Path) -> Settings:
    """Settings that reach a local stack started from `data_dir` (its ports and credentials); raises
    FileNotFoundError when no stack was ever started there."""
    state = json.loads((data_dir / "stack.json").read_text())
    access, secret = s3_credentials(data_dir / "s3")
    s3 = S3Settings(
        endpoint=f"127.0.0.1:{state['s3_base_port'] + S3_PORT_OFFSET}", access_key=access, secret_key=secret
    )
    return Settings(redis_url=local_redis_url(state["redis_port"], redis_password(data_dir)), s3=s3, data_dir=data_dir)


@dataclass
class WorkerProcess:
    queue: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    metrics_port: int = 0
    started: float = field(default_factory=time.monotonic)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # warm shutdown: finish the current task
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def children(self) -> list[int]:
        """PIDs of the prefork pool's child processes."""
        try:
            out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        except FileNotFoundError:
            return []
        return [int(p) for p in out.split()]


def start_worker(
    settings: Settings,
    queue: str,
    *,
    concurrency: int = 1,
    log_dir: Path,
    name: str | None = None,
    extra_env: dict[str, str] | None = None,
    max_tasks_per_child: int | None = None,
    app: str = "workers.tasks",
    metrics_port: int = 0,
) -> WorkerProcess:
    """Start `celery worker` for one queue as a separate process (prefork pool)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    node = name or f"{queue}-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        app,
        "worker",
        "-Q",
        queue,
        "-c",
        str(concurrency),
        "-P",
        "prefork",
        "-n",
        f"{node}@%h",
        "--without-gossip",
        "--without-mingle",
        "-l",
        "INFO",
        "-E",
    ]
    if max_tasks_per_child:
        argv += ["--max-tasks-per-child", str(max_tasks_per_child)]
    env = {**os.environ, **settings_env(settings), **(extra_env or {})}
    if metrics_port:
        folder = log_dir.parent / "metrics" / node
        folder.mkdir(parents=True, exist_ok=True)
        env.update(PROMETHEUS_MULTIPROC_DIR=str(folder), NIGHTSHIFT_WORKER__METRICS_PORT=str(metrics_port))
    env.setdefault("PYTHONUNBUFFERED", "1")
    log_path = log_dir / f"worker-{node}.log"
    with open(log_path, "ab") as fh:
        proc = subprocess.Popen(
            argv,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            cwd=str(PROJECT_ROOT),
            preexec_fn=die_with_parent,
        )  # noqa: PLW1509
    return WorkerProcess(queue, proc, log_path, metrics_port)


def wait_worker_ready(worker: WorkerProcess, timeout: float = 120.0) -> None:
    """Wait until Celery logs that the worker is ready; RuntimeError with its log when it exits or is late."""

    def ready() -> bool:
        if not worker.alive():
            raise RuntimeError(f"worker for {worker.queue} exited:\n{worker.log_path.read_text()[-3000:]}")
        return b"ready." in worker.log_path.read_bytes()

    wait_until(ready, timeout, error=lambda: RuntimeError(f"worker for {worker.queue} not ready in {timeout:.0f}s"))


class ApiServer:
    """The Flask app under werkzeug's threaded server, in a background thread."""

    def __init__(self, settings: Settings, host: str = "127.0.0.1", port: int | None = None) -> None:
        from werkzeug.serving import WSGIRequestHandler, make_server

        from api import create_app

        class Handler(WSGIRequestHandler):
            # the Server header names no software versions (an attacker's first lookup)
            server_version = "nightshift"
            sys_version = ""

        self.port = port or free_port()
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request drowns the logs
        self.app = create_app(settings)
        self._server = make_server(host, self.port, self.app, threaded=True, request_handler=Handler)
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> ApiServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()


@dataclass
class LocalStack:
    data_dir: Path
    api_port: int = 8787
    queues: tuple[str, ...] = (Queue.STYLE.value, Queue.FACES.value)
    concurrency: int = 1
    servers: list[ServerProcess] = field(default_factory=list)
    workers: list[WorkerProcess] = field(default_factory=list)
    api: ApiServer | None = None
    settings: Settings | None = None
    api_key: str = ""
    worker_settings: WorkerSettings = field(default_factory=WorkerSettings)

    def _state(self) -> dict[str, Any]:
        path = self.data_dir / "stack.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def start(self, *, with_api: bool = True) -> LocalStack:
        private_dir(self.data_dir)
        state = self._state()
        redis_port = state.get("redis_port")
        if not redis_port or not port_is_free(redis_port):
            redis_port = free_port()
        s3_base = state.get("s3_base_port")
        if not s3_base or not all(port_is_free(s3_base + i) for i in range(12)):
            s3_base = free_port_block(12)
        password = redis_password(self.data_dir)
        try:
            self.servers.append(start_redis(self.data_dir / "redis", redis_port, password=password))
            s3, s3_settings = start_s3(self.data_dir / "s3", s3_base)
            self.servers.append(s3)
            self.settings = Settings(
                redis_url=local_redis_url(redis_port, password),
                s3=s3_settings,
                data_dir=self.data_dir,
                worker=self.worker_settings,
            )
            (self.data_dir / "stack.json").write_text(
                json.dumps({"redis_port": redis_port, "s3_base_port": s3_base, "api_port": self.api_port})
            )
            self.api_key = self._local_key()
            for queue in self.queues:
                self.workers.append(
                    start_worker(self.settings, queue, concurrency=self.concurrency, log_dir=self.data_dir / "logs")
                )
            for worker in self.workers:
                wait_worker_ready(worker)
            if with_api:
                self.api = ApiServer(self.settings, port=self.api_port).start()
        except BaseException:
            self.stop()
            raise
        return self

    def _local_key(self) -> str:
        """The local stack's API key (tenant `local`), generated once and kept in the data folder."""
        assert self.settings is not None
        path = self.data_dir / "api-key"
        keys = RecordStore(self.settings).apikeys
        if path.exists():
            key = path.read_text().strip()
        else:
            key = keys.create(LOCAL_TENANT, "local stack")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(key)
        keys.add(key, LOCAL_TENANT, "local stack")
        return key

    def supervise(self) -> list[str]:
        """Restart workers that died (a kill, an out-of-memory); returns the queues restarted. Their
        unfinished work comes back through the watchdog of the workers' main processes."""
        assert self.settings is not None
        restarted = []
        for n, worker in enumerate(self.workers):
            if worker.alive() or time.monotonic() - worker.started < RESTART_BACKOFF_S:
                continue
            log.warning("worker for %s exited (code %s); restarting it", worker.queue, worker.proc.returncode)
            self.workers[n] = start_worker(
                self.settings, worker.queue, concurrency=self.concurrency, log_dir=self.data_dir / "logs"
            )
            restarted.append(worker.queue)
        return restarted

    def stop(self) -> None:
        if self.api:
            self.api.stop()
            self.api = None
        for worker in self.workers:
            worker.stop()
        self.workers.clear()
        for server in reversed(self.servers):
            server.stop()
        self.servers.clear()

    @property
    def url(self) -> str:
        return self.api.url if self.api else f"http://127.0.0.1:{self.api_port}"
