"""The embedded stack and the production server, as processes: supervision, readiness, stable ports, slow clients."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from api import cli
from api.devstack.servers import ServerError, free_port, wait_until
from api.devstack.stack import LocalStack
from storage.config import WorkerSettings, settings_env
from tests.conftest import Services, new_tenant_key

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _ready(url: str) -> tuple[int, dict]:
    resp = requests.get(url + "/readyz", timeout=5)
    return resp.status_code, resp.json()


def test_wait_until_returns_the_first_truthy_value_or_raises_the_error_it_was_given() -> None:
    answers = iter([0, None, "ready", "later"])
    assert wait_until(lambda: next(answers), timeout=5, poll=0) == "ready"
    with pytest.raises(ServerError, match="never came up"):
        wait_until(lambda: False, timeout=0.05, poll=0.01, error=lambda: ServerError("never came up"))
    with pytest.raises(TimeoutError):
        wait_until(lambda: 0, timeout=0.05, poll=0.01)


def test_local_stack_restarts_dead_workers_reports_them_and_keeps_its_ports(tmp_path: Path, capsys) -> None:
    data = tmp_path / "ns"
    fast = WorkerSettings(heartbeat_s=0.5)
    stack = LocalStack(data, api_port=free_port(), worker_settings=fast).start()
    try:
        assert (data.stat().st_mode & 0o077) == 0  # credentials and every tenant's data: owner only
        wait_until(lambda: _ready(stack.url)[0] == 200, timeout=30)
        assert "werkzeug" not in requests.get(stack.url + "/healthz", timeout=5).headers.get("Server", "").lower()
        style = next(w for w in stack.workers if w.queue == "style")
        style.kill()  # kill -9 of the worker's main process and its pool
        code, body = wait_until(lambda: (r := _ready(stack.url))[0] == 503 and r, timeout=30)
        assert body["missing_workers"] == ["style"] and body["workers"]["faces"] == 1
        restarted = wait_until(lambda: stack.supervise(), timeout=30)
        assert restarted == ["style"]
        wait_until(lambda: _ready(stack.url)[0] == 200, timeout=60)
        ports = (data / "stack.json").read_text()
        assert cli.main(["--json", "keys", "someone", "--data-dir", str(data)]) == 0
        assert "nsk_" in capsys.readouterr().out
    finally:
        stack.stop()
    again = LocalStack(data, api_port=stack.api_port, worker_settings=fast).start(with_api=False)
    try:
        assert (data / "stack.json").read_text() == ports  # same ports: URLs issued before still work
        assert again.api_key == stack.api_key
    finally:
        again.stop()


def test_keys_never_guesses_a_redis(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("NIGHTSHIFT_REDIS_URL", raising=False)
    code = cli.main(["keys", "someone", "--data-dir", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert code == 2 and "NIGHTSHIFT_REDIS_URL is not set" in err and len(err.strip().splitlines()) == 1


def test_slow_clients_do_not_starve_the_production_server(services: Services) -> None:
    """gunicorn as compose runs it, with 300 connections that send half a request and wait."""
    port = free_port()
    env = {
        **os.environ,
        **settings_env(services.settings),
        "NIGHTSHIFT_API_BIND": f"127.0.0.1:{port}",
        "NIGHTSHIFT_API_WORKERS": "2",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "python:api.gunicorn_conf", "api.wsgi:app"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    slow: list[socket.socket] = []
    try:
        wait_until(lambda: _get(url + "/healthz") == 200, timeout=60)
        for _ in range(300):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # never finished
            slow.append(s)
        time.sleep(1)
        started = time.monotonic()
        assert _get(url + "/healthz") == 200
        _, key = new_tenant_key(services)
        assert requests.get(url + "/v1/jobs", headers={"Authorization": f"Bearer {key}"}, timeout=10).ok
        assert time.monotonic() - started < 5
    finally:
        for s in slow:
            s.close()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def _get(url: str) -> int:
    try:
        return requests.get(url, timeout=3).status_code
    except requests.RequestException:
        return 0


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_a_killed_stack_leaves_no_server_running(tmp_path: Path) -> None:
    """kill -9 of the process that started the servers (a `nightshift up`, a test run): they stop too."""
    code = (
        "import sys, time; from pathlib import Path; from api.devstack.servers import start_redis; "
        f"r = start_redis(Path({str(tmp_path)!r})); print(r.proc.pid, flush=True); time.sleep(120)"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        server = int(parent.stdout.readline())  # type: ignore[union-attr]
        assert _alive(server)
        parent.kill()
        parent.wait(10)
        wait_until(lambda: not _alive(server), timeout=15)
    finally:
        parent.kill()


def test_down_stops_a_stack_that_up_runs_in_the_background(tmp_path: Path, capsys) -> None:
    data_dir, port = tmp_path / "stack", free_port()
    up = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "up", "--port", str(port), "--data-dir", str(data_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until(lambda: _get(f"http://127.0.0.1:{port}/healthz") == 200, timeout=120)
        assert cli.main(["down", "--data-dir", str(data_dir)]) == 0
        assert up.wait(30) == 0 and not (data_dir / "up.pid").exists()  # it stopped cleanly
        assert _get(f"http://127.0.0.1:{port}/healthz") == 0
        assert cli.main(["down", "--data-dir", str(data_dir)]) == 2
        assert "no `nightshift up` runs from" in capsys.readouterr().err
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
