"""Fuzz the whole API from its own OpenAPI document with schemathesis, against the running app.

Bounded examples per operation; the run must find 0 server errors and 0 schema violations
(status codes, content types, response schemas and headers all as documented). The
`positive_data_acceptance` check is left out on purpose: a schema-valid job can still be rejected
with a 4xx for reasons a JSON schema cannot express (a style image that does not exist, a job
with no inputs), and those answers are tested one by one in test_api.py.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from api.devstack.stack import ApiServer
from tests.conftest import Services, new_tenant_key

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_fuzzing_finds_no_server_errors_or_schema_violations(workers, services: Services, tmp_path: Path) -> None:
    # real faces workers answer verify/search (a missing worker is a 504: a server error by design);
    # the app waits at most 20 s, under the fuzzer's 60 s request timeout
    settings = services.settings.model_copy(
        update={"api": services.settings.api.model_copy(update={"sync_timeout_s": 20.0})}
    )
    api_server = ApiServer(settings).start()
    _, key = new_tenant_key(services, "fuzz")
    exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or "schemathesis"
    out = subprocess.run(
        [
            exe,
            "run",
            f"{api_server.url}/openapi.json",
            "-H",
            f"Authorization: Bearer {key}",
            "--max-examples",
            "30",
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
            "--generation-deterministic",
            "--request-timeout",
            "60",
            "--report",
            "junit",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    api_server.stop()
    summary = out.stdout[out.stdout.find("SUMMARY") :] if "SUMMARY" in out.stdout else out.stdout[-5000:]
    assert out.returncode == 0, f"schemathesis found problems:\n{out.stdout[-8000:]}\n{out.stderr[-2000:]}"
    assert "API Operations" in summary and "Selected: 0" not in summary
