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
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + ("{" if labels else "")) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    assert total or want, f"{name}{{{want}}} not found"
    return total


def test_worker_and_api_metrics_after_a_job(workers, client: Client, tmp_path, services: Services) -> None:
    path = tmp_path / "m.jpg"
    from tests.conftest import photo

    path.write_bytes(photo(3, (64, 48)))
    job = client.wait(client.submit("style", files=[path], params={"method": "builtin", "builtin": [2]})["id"],
                      timeout=120)
    assert job["state"] == "succeeded"
    port = workers["style"].metrics_port
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    assert _value(text, "nightshift_items_total", state="done") >= 1
    assert _value(text, "nightshift_stage_seconds_count", stage="model") >= 1
    assert _value(text, "nightshift_stage_seconds_count", stage="upload") >= 1
    assert _value(text, "nightshift_jobs_finished_total", kind="style", state="succeeded") >= 1
    api_text = requests.get(client.url + "/metrics", timeout=10).text
    assert _value(api_text, "nightshift_jobs_submitted_total", kind="style") >= 1
    assert 'nightshift_queue_depth{queue="faces"}' in api_text


def test_logs_are_json_with_job_ids() -> None:
    record = logging.LogRecord("nightshift.pipeline", logging.INFO, __file__, 1, "job %s finished", ("j1",), None)
    record.job_id = "j1"
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "job j1 finished" and line["job_id"] == "j1" and line["level"] == "INFO"
