"""The attacks of the second security round (issue 16), each against the real stack: one test per attack.

docs/reliability.md has the table: attack, expected answer, the test here that covers it.
"""

from __future__ import annotations

import pytest

from api.client import Client
from storage import keys
from tests.conftest import Services, photo

pytestmark = [pytest.mark.integration]


def _objects(services: Services, prefix: str) -> list[str]:
    return [o.key for o in services.store.list(prefix)]


def test_long_names_never_make_outputs_overwrite_each_other(workers, client: Client, services: Services,
                                                           tenant_key, tmp_path) -> None:
    """A 150-character stem with three built-in variants and a two-value strength grid: six outputs, six objects."""
    path = tmp_path / ("a" * 150 + ".jpg")
    path.write_bytes(photo(1, (64, 48)))
    blend = ",".join(f"{i}:1" for i in range(26))  # the longest label a blend can have
    params = {"method": "builtin", "builtin": [7, 3, blend], "grid": {"strength": [0.5, 1.0]}, "size": 64}
    job = client.wait(client.submit("style", files=[path], params=params)["id"], timeout=180)
    assert job["state"] == "succeeded", job
    items = list(client.results(job["id"]))
    outputs = [o["key"] for o in items[0]["outputs"]]
    assert len(outputs) == 6 and len(set(outputs)) == 6
    stored = _objects(services, keys.item_prefix(tenant_key[0], job["id"], 0))
    assert len(stored) == 6


def test_grid_values_that_round_alike_each_get_their_render(workers, client: Client, tenant_key, tmp_path) -> None:
    path = tmp_path / "p.jpg"
    path.write_bytes(photo(2, (48, 40)))
    params = {"method": "builtin", "builtin": [7], "grid": {"strength": [0.501, 0.502]}, "size": 48}
    job = client.wait(client.submit("style", files=[path], params=params)["id"], timeout=180)
    assert job["state"] == "succeeded"
    assert len({o["key"] for o in next(client.results(job["id"]))["outputs"]}) == 2


@pytest.mark.parametrize("params", [
    {"method": "builtin", "builtin": [True]},
    {"method": "builtin", "builtin": ["3:nan"]},
    {"method": "builtin", "builtin": [{"3": "Infinity"}]},
    {"method": "builtin", "builtin": [7], "strength": "NaN"},
])
def test_non_finite_numbers_and_booleans_are_refused(http, params) -> None:
    resp = http.post("/v1/jobs", json={"kind": "style", "params": params, "inputs": {"keys": ["x.jpg"]}})
    assert resp.status_code == 422, resp.get_json()
    assert resp.get_json()["error"]["code"] == "invalid_request"
