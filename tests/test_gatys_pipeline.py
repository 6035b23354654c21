"""The Gatys method through the pipeline: refused at submit while no worker has VGG19 weights (the 422 says
how to provide them), then (with seeded random weights in the configured file, which the workers' heartbeat
reports) an optimisation whose total cost falls."""

from __future__ import annotations

import pytest

from api.client import Client, InvalidRequest
from api.devstack.servers import wait_until
from tests.conftest import Services, photo

pytestmark = [pytest.mark.integration, pytest.mark.slow]
GATYS = {
    "method": "gatys",
    "size": 64,
    "gatys": {"iterations": 8, "optimizer": "adam", "learning_rate": 0.05, "scales": [64]},
}


def test_gatys_without_then_with_weights(workers, client: Client, services: Services, tmp_path) -> None:
    weights = services.settings.worker.vgg19_weights
    assert weights is not None
    weights.unlink(missing_ok=True)
    (tmp_path / "content.jpg").write_bytes(photo(1, (64, 48)))
    (tmp_path / "painting.jpg").write_bytes(photo(2, (64, 64)))
    files = {"files": [tmp_path / "content.jpg"], "styles": [tmp_path / "painting.jpg"]}

    def gatys_runs() -> bool | None:
        return next(m for m in client.models() if m["id"] == "style/gatys")["weights_present"]

    wait_until(lambda: gatys_runs() is False, timeout=30)
    with pytest.raises(InvalidRequest) as refused:
        client.submit("style", params=GATYS, **files)
    assert refused.value.code == "model_unavailable" and "NIGHTSHIFT_WORKER__VGG19_WEIGHTS" in refused.value.message

    import torch

    from workers.style.gatys import random_vgg19

    torch.save(random_vgg19(seed=0).state_dict(), weights)
    wait_until(lambda: gatys_runs() is True, timeout=30)  # the next heartbeat sees the file
    job = client.wait(client.submit("style", params=GATYS, **files)["id"], timeout=300)
    assert job["state"] == "succeeded", job
    item = next(iter(client.results(job["id"])))
    ((first, last),) = item["info"]["gatys_costs"][0]
    assert last < first
    assert item["outputs"][0]["name"].startswith("content__gatys-")
