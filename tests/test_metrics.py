"""Prometheus metrics of the API and of a real worker (all its pool processes), and JSON logs."""

from __future__ import annotations

import json
import logging

import pytest
import requests

from api.client import Client
from api.logs import JsonFormatter
from tests.conftest import Services

pytestmark = [pytest.mark.integration]


def _value(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples with these labels; 0 when the metric has none yet."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + ("{" if labels else "")) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _scrape(url: str) -> str:
    return requests.get(url + "/metrics", timeout=10).text


def test_worker_and_api_metrics_count_a_job(workers, client: Client, tmp_path, services: Services) -> None:
    """Counters are process-wide and other tests' jobs move them too: compare before and after."""
    from tests.conftest import photo

    worker_url = f"http://127.0.0.1:{workers['style'].metrics_port}"
    counters = [
        ("nightshift_items_total", {"state": "done"}),
        ("nightshift_stage_seconds_count", {"stage": "model"}),
        ("nightshift_stage_seconds_count", {"stage": "upload"}),
        ("nightshift_jobs_finished_total", {"kind": "style", "state": "succeeded"}),
    ]
    before = _scrape(worker_url)
    api_before = _value(_scrape(client.url), "nightshift_jobs_submitted_total", kind="style")
    paths = []
    for n in range(3):
        path = tmp_path / f"m{n}.jpg"
        path.write_bytes(photo(30 + n, (64, 48)))
        paths.append(path)
    job = client.wait(
        client.submit("style", files=paths, params={"method": "builtin", "builtin": [2]})["id"], timeout=120
    )
    assert job["state"] == "succeeded"
    after = _scrape(worker_url)
    deltas = {
        f"{name}{labels}": _value(after, name, **labels) - _value(before, name, **labels) for name, labels in counters
    }
    assert deltas["nightshift_items_total{'state': 'done'}"] >= 3
    assert deltas["nightshift_stage_seconds_count{'stage': 'model'}"] >= 1
    assert deltas["nightshift_stage_seconds_count{'stage': 'upload'}"] >= 3
    assert deltas["nightshift_jobs_finished_total{'kind': 'style', 'state': 'succeeded'}"] >= 1
    api_text = _scrape(client.url)
    assert _value(api_text, "nightshift_jobs_submitted_total", kind="style") - api_before >= 1
    assert 'nightshift_queue_depth{queue="faces"}' in api_text


def test_api_metrics_need_the_token_or_a_local_scraper(services: Services) -> None:
    from api import create_app

    settings = services.settings.model_copy(
        update={"api": services.settings.api.model_copy(update={"metrics_token": "s3cret"})}
    )
    app = create_app(settings).test_client()
    assert app.get("/metrics", environ_base={"REMOTE_ADDR": "10.0.0.9"}).status_code == 403
    assert app.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert app.get("/metrics", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    open_app = create_app(services.settings).test_client()
    assert open_app.get("/metrics", environ_base={"REMOTE_ADDR": "10.0.0.9"}).status_code == 403
    assert open_app.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 200


def test_logs_are_json_with_job_ids() -> None:
    record = logging.LogRecord("nightshift.pipeline", logging.INFO, __file__, 1, "job %s finished", ("j1",), None)
    record.job_id = "j1"
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "job j1 finished" and line["job_id"] == "j1" and line["level"] == "INFO"
