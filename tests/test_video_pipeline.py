"""Videos through the whole pipeline: real S3, Redis and Celery workers; segments joined, audio kept.

The stack is this module's own: its settings cut videos into 1-second segments, so a 3-second clip
runs as three chunks and is joined, and the kill test can kill a worker in the middle of one.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from api.devstack.servers import wait_until
from api.devstack.stack import WorkerProcess
from storage import keys
from storage.config import WorkerSettings
from storage.records import RecordStore
from tests.browser import shot
from tests.conftest import OwnStack, own_stack
from workers.video.clips import pan, write_audio, write_clip
from workers.video.source import upload_file

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BUILTIN = {"method": "builtin", "builtin": [7]}
TENANT = "vid"
FPS = 25


class Stack(OwnStack):
    def put(self, rel: str, path: Path) -> str:
        upload_file(self.store, keys.tenant_key(TENANT, rel), path, "video/mp4")
        return rel


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    worker = WorkerSettings(
        chunk_size=4, batch_size=2, max_attempts=3, video_segment_seconds=1.0, video_context_frames=6
    )
    with own_stack(Stack, tmp_path_factory.mktemp("vstack"), TENANT, worker, key_prefix="vid") as s:
        yield s


@pytest.fixture(scope="module")
def style_worker(stack: Stack) -> WorkerProcess:
    return stack.add_worker("style", "workers.tasks")


def clip(path: Path, seconds: float = 3.0, size: tuple[int, int] = (160, 96), **kw: object) -> Path:
    return write_clip(path, pan(round(seconds * FPS), 2.5, size), FPS, **kw)  # type: ignore[arg-type]


def faststart_truncated(path: Path, tmp: Path) -> Path:
    """An MP4 whose index sits at the front (as phones and web servers write them), cut at 60 %."""
    full = write_clip(tmp / "full-faststart.mp4", pan(50, 2.0, (160, 96)), FPS, faststart=True)
    data = full.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    return path


def decoded(path: Path) -> tuple[list[int], list[np.ndarray], int]:
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
        return [f.pts for f in frames], [f.to_ndarray(format="rgb24") for f in frames], int(frames[0].rotation or 0)


def joined_outputs(stack: Stack, job_id: str) -> dict[str, str]:
    """Every output the job's items list (for a video: the joined video per variant), key -> URL."""
    return {o["key"]: o["url"] for it in stack.client.results(job_id) for o in it["outputs"]}


def audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]


def test_video_is_stylized_in_segments_joined_with_its_audio_and_bad_videos_fail_alone(
    stack: Stack, style_worker: WorkerProcess, tmp_path: Path
) -> None:
    good = clip(tmp_path / "holiday.mp4", audio_seconds=3.0, rotation=90)
    rels = [
        stack.put("v/holiday.mp4", good),
        stack.put("v/truncated.mp4", faststart_truncated(tmp_path / "truncated.mp4", tmp_path)),
        stack.put("v/voice.mp4", write_audio(tmp_path / "voice.mp4")),
        stack.put("v/one-frame.mp4", write_clip(tmp_path / "one.mp4", pan(1, 0.0, (160, 96)), FPS)),
    ]
    job = stack.client.submit("style", params=BUILTIN, inputs={"keys": rels})
    final = stack.client.wait(job["id"], timeout=240)
    items = {it["name"]: it for it in stack.client.results(job["id"])}
    assert final["state"] == "partial", (final, {n: it["error"] for n, it in items.items()})
    assert "truncated" in items["v/truncated.mp4"]["error"]
    assert "no video stream" in items["v/voice.mp4"]["error"]
    assert "single frame" in items["v/one-frame.mp4"]["error"]
    segments = [it for name, it in items.items() if name.startswith("v/holiday.mp4 [")]
    assert len(segments) == 3 and all(it["state"] == "done" for it in segments)
    assert sum(it["info"]["frames"] for it in segments) == 75
    assert final["frames"] == {"done": 75, "total": 75}

    [video] = final["summary"]["videos"]
    assert video["frames"] == 75 and video["segments"] == 3 and video["error"] is None
    urls = joined_outputs(stack, job["id"])
    out = stack.client.download(urls[video["outputs"][0]["key"]], tmp_path / "out.mp4")
    pts, frames, rotation = decoded(out)
    src_pts, src_frames, src_rotation = decoded(good)
    assert pts == src_pts  # every frame once, at its own time: no segment lost or doubled
    assert rotation == src_rotation == 90
    assert frames[0].shape == src_frames[0].shape
    assert audio_packets(out) == audio_packets(good)  # copied, not re-encoded
    diff = np.mean([np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(frames, src_frames, strict=True)])
    assert diff > 10  # stylized, not passed through


def test_h265_output_is_tagged_hvc1(stack: Stack, style_worker: WorkerProcess, tmp_path: Path) -> None:
    rel = stack.put("h265/clip.mp4", clip(tmp_path / "clip.mp4", seconds=1.2))
    job = stack.client.submit(
        "style", params={**BUILTIN, "video": {"codec": "h265", "temporal": 0.5}}, inputs={"keys": [rel]}
    )
    final = stack.client.wait(job["id"], timeout=180)
    assert final["state"] == "succeeded", final
    [video] = final["summary"]["videos"]
    urls = joined_outputs(stack, job["id"])
    out = stack.client.download(urls[video["outputs"][0]["key"]], tmp_path / "out.mp4")
    with av.open(str(out)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "hevc"
        assert s.codec_tag == "hvc1"
        assert len(list(c.decode(s))) == 30


def test_a_worker_killed_mid_segment_loses_and_doubles_no_segment(
    stack: Stack, style_worker: WorkerProcess, tmp_path: Path
) -> None:
    worker = style_worker
    rel = stack.put("kill/long.mp4", clip(tmp_path / "long.mp4", seconds=3.0, size=(320, 192), audio_seconds=3.0))
    job = stack.client.submit("style", params={**BUILTIN, "size": 512}, inputs={"keys": [rel]})
    records = RecordStore(stack.settings)

    def mid_segment() -> bool:
        try:
            items = records.get_items(job["id"], range(records.get_job(job["id"]).total))
        except Exception:
            return False
        progress = records.item_progress(job["id"])
        for it in items:
            done, total = progress.get(it.index, (0, 0))
            if it.state == "running" and 0 < done < total:
                return True
        return False

    wait_until(mid_segment, 120, 0.05, error=lambda: AssertionError("no segment was seen half done"))
    children = worker.children()
    for pid in children:
        os.kill(pid, signal.SIGKILL)
    final = stack.client.wait(job["id"], timeout=300)
    assert final["state"] == "succeeded", final
    items = list(stack.client.results(job["id"]))
    assert len(items) == 3 and sorted(it["info"]["segment"] for it in items) == list(range(3))
    assert max(it["attempts"] for it in items) == 2  # the killed segment ran again, once
    outs = [o["key"] for it in items for o in it["outputs"]]
    assert len(outs) == 1  # the joined video, once
    [video] = final["summary"]["videos"]
    urls = joined_outputs(stack, job["id"])
    out = stack.client.download(urls[video["outputs"][0]["key"]], tmp_path / "out.mp4")
    pts, _, _ = decoded(out)
    assert pts == decoded(tmp_path / "long.mp4")[0]
    assert worker.alive() and worker.children() and worker.children() != children


SLUGS = ("builtin-b7-s1.0-none-x1.0", "builtin-b3-s1.0-none-x1.0")


@pytest.fixture(scope="module")
def face_jobs(stack: Stack, style_worker: WorkerProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A video of a face and the same frame as a photo in one job, in two styles that paint faces over
    (default protection); and the video alone with `protect_faces: 0`."""
    from PIL import Image
    from skimage import data

    tmp = tmp_path_factory.mktemp("face-jobs")
    src_path = write_clip(tmp / "clip.mp4", pan(50, 2, (320, 240), picture=data.astronaut()), FPS, audio_seconds=2.0)
    _, src, _ = decoded(src_path)
    t = 30  # in the second segment
    Image.fromarray(src[t]).save(tmp / "frame.png")
    rels = [stack.put("pf/clip.mp4", src_path)]
    upload_file(stack.store, keys.tenant_key(TENANT, "pf/frame.png"), tmp / "frame.png", "image/png")
    rels.append("pf/frame.png")
    job = stack.client.submit("style", params={"method": "builtin", "builtin": [7, 3]}, inputs={"keys": rels})
    bare = stack.client.submit("style", params={**BUILTIN, "protect_faces": 0}, inputs={"keys": rels[:1]})
    final = stack.client.wait(job["id"], timeout=300)
    assert final["state"] == "succeeded", final
    assert stack.client.wait(bare["id"], timeout=300)["state"] == "succeeded"
    return {"job": final, "bare": stack.client.job(bare["id"]), "src": src, "t": t, "tmp": tmp}


def test_results_list_the_joined_video_per_variant_and_a_download_gets_just_those(
    stack: Stack, face_jobs: dict[str, Any]
) -> None:
    """The item's outputs are the joined videos (with audio), one per variant, named after the video; a
    download of everything listed is those videos, the photo's outputs and the job files: no segment file,
    no copy of the user's input."""
    job, tmp = face_jobs["job"], face_jobs["tmp"]
    items = list(stack.client.results(job["id"]))
    segments = [it for it in items if it["name"].startswith("pf/clip.mp4 [")]
    [photo] = [it for it in items if it["name"] == "pf/frame.png"]
    assert [it["name"] for it in segments] == ["pf/clip.mp4 [1/2]", "pf/clip.mp4 [2/2]"]
    [video] = job["summary"]["videos"]
    joined = {o["key"] for o in video["outputs"]}
    assert len(joined) == 2 and all(k.endswith(".mp4") and ".seg" not in k for k in joined)
    assert {o["key"] for o in segments[0]["outputs"]} == joined and segments[1]["outputs"] == []
    assert {o["name"] for o in segments[0]["outputs"]} == {f"pf/clip__{slug}.mp4" for slug in SLUGS}
    artifacts = {a["name"] for a in stack.client.artifacts(job["id"])}
    assert artifacts == {"manifest.json", "contact-sheet.jpg"}  # the original is not offered back
    got = stack.client.download_results(job["id"], tmp / "dl")
    files = {p.relative_to(tmp / "dl").as_posix() for p in got}
    assert files == {o["name"] for o in segments[0]["outputs"]} | {o["name"] for o in photo["outputs"]} | artifacts
    for slug in SLUGS:
        out = tmp / "dl" / "pf" / f"clip__{slug}.mp4"
        assert len(decoded(out)[0]) == 50 and audio_packets(out)  # the whole video, with its audio
    page = stack.client.results_page(job["id"])  # the job page's links: the original beside each output
    [links] = page["videos"]
    assert links["source"]["key"] == "pf/clip.mp4" and {o["key"] for o in links["outputs"]} == joined


def test_faces_in_a_video_are_protected_as_in_the_same_frame_as_a_photo(
    stack: Stack, face_jobs: dict[str, Any]
) -> None:
    from PIL import Image

    from workers.style.faces import find_faces

    job, bare, src, t, tmp = (face_jobs[k] for k in ("job", "bare", "src", "t", "tmp"))
    items = {it["name"]: it for it in stack.client.results(job["id"])}
    segments = [items["pf/clip.mp4 [1/2]"], items["pf/clip.mp4 [2/2]"]]
    assert all(it["info"]["faces_protected"] == 1 and it["info"]["face_frames"] == 25 for it in segments)
    assert items["pf/frame.png"]["info"]["faces_protected"] == 1
    bare_items = list(stack.client.results(bare["id"]))
    assert all(it["info"]["faces_protected"] == 0 for it in bare_items)
    [box] = find_faces(Image.fromarray(src[t]))
    x1, y1, x2, y2 = (round(v) for v in box)
    face = (slice(y1, y2), slice(x1, x2))
    original = src[t][face].astype(float)
    outputs = {o["name"]: o["url"] for it in items.values() for o in it["outputs"]}
    [bare_url] = joined_outputs(stack, bare["id"]).values()
    _, painted, _ = decoded(stack.client.download(bare_url, tmp / "bare.mp4"))
    for slug in SLUGS:
        _, frames, _ = decoded(stack.client.download(outputs[f"pf/clip__{slug}.mp4"], tmp / f"{slug}.mp4"))
        still_path = stack.client.download(outputs[f"pf/frame__{slug}.png"], tmp / f"{slug}.png")
        still = np.asarray(Image.open(still_path).convert("RGB")).astype(float)
        video_face = frames[t][face].astype(float)
        to_source, photo_to_source = np.abs(video_face - original).mean(), np.abs(still[face] - original).mean()
        assert to_source < 1.3 * photo_to_source + 3, (slug, to_source, photo_to_source)  # as a photo keeps it
        assert np.abs(video_face - still[face]).mean() < 10, slug
        background = np.abs(frames[t][:60, :40].astype(float) - src[t][:60, :40]).mean()
        assert background > 20, (slug, background)  # the rest is stylized
        if slug.startswith("builtin-b7"):  # the same style without protection paints the face over
            painted_to_source = np.abs(painted[t][face].astype(float) - original).mean()
            assert painted_to_source > 1.8 * to_source, (painted_to_source, to_source)


def face_clip(path: Path) -> Path:
    """3 s at 25 frames/s: the astronaut's face crosses the frame from 0.5 s to 2.5 s, then a cut to an empty shot."""
    from PIL import Image
    from skimage import data

    face = np.asarray(Image.fromarray(data.astronaut()).crop((130, 0, 330, 230)).resize((100, 115)))
    frames = []
    for i in range(75):
        img = np.full((240, 320, 3), (40, 90, 140), np.uint8) if i >= 65 else np.full((240, 320, 3), 120, np.uint8)
        if 12 <= i < 62:
            img[60:175, 40 + i : 140 + i] = face
        frames.append(img)
    return write_clip(path, frames, FPS)


def test_faces_in_a_video_become_a_track_that_joins_its_library_person(stack: Stack, page: Any, tmp_path: Path) -> None:
    import pyarrow.parquet as pq
    from PIL import Image
    from skimage import data

    worker = stack.add_worker("faces", "workers.tasks")
    # three photos of her make a person in the tenant's library (three agreeing faces form one)
    face = Image.fromarray(data.astronaut())
    photos = {
        "a.jpg": face,
        "b.jpg": face.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        "c.jpg": face.crop((60, 0, 460, 400)).resize((300, 300)),
    }
    for name, img in photos.items():
        img.save(tmp_path / name, quality=92)
    first = stack.client.submit("faces", files=[tmp_path / n for n in photos])
    assert stack.client.wait(first["id"], timeout=240)["state"] == "succeeded"
    [person] = list(stack.client.people())
    stack.client.update_person(person["id"], name="Eileen")

    rel = stack.put("faces/walk.mp4", face_clip(tmp_path / "walk.mp4"))
    job = stack.client.submit("faces", inputs={"keys": [rel]})
    final = stack.client.wait(job["id"], timeout=240)
    assert final["state"] == "succeeded", final
    [item] = list(stack.client.results(job["id"]))
    info = item["info"]
    assert info["tracks"] == 1 and info["frames"] == 75 and info["attached"] == 1
    assert 1 <= info["embedded_frames"] <= 3  # only the best crops of the track were embedded
    outs = {o["name"].removeprefix("faces/walk__"): o["url"] for o in item["outputs"]}  # named after the video
    assert set(outs) == {"tracks.parquet", "tracks.npy", "tracks.vtt", "track-000.jpg"}
    table = pq.read_table(stack.client.download(outs["tracks.parquet"], tmp_path / "t.parquet")).to_pylist()
    [track] = table
    assert 0.2 <= track["start_s"] <= 0.6 and 2.0 <= track["end_s"] <= 2.7, track
    assert (track["person_id"], track["person_name"]) == (person["id"], "Eileen")
    vtt = stack.client.download(outs["tracks.vtt"], tmp_path / "t.vtt").read_text()
    assert vtt.startswith("WEBVTT") and "Eileen" in vtt
    vectors = np.load(stack.client.download(outs["tracks.npy"], tmp_path / "t.npy"))
    assert vectors.shape == (1, 256)  # the default space: dlib (128) and SFace (128) fused
    assert np.isfinite(vectors).all() and np.linalg.norm(vectors) > 0.5
    assert final["summary"]["videos"][0]["tracks"] == 1
    assert [p["id"] for p in stack.client.people()] == [person["id"]]  # a track never seeds a person
    [video] = stack.client.person(person["id"])["videos"]  # her page lists the video, and when she is on
    assert video["name"] == "faces/walk.mp4" and video["video_key"] == rel
    [(start, end)] = video["ranges"]
    assert 0.2 <= start <= 0.6 and 2.0 <= end <= 2.7
    worker.stop()
    _person_page_shows_the_video(page, stack.api.url, stack.key, person["id"])


def _person_page_shows_the_video(page: Any, url: str, key: str, person_id: str) -> None:
    page.goto(f"{url}/ui#key={key}")
    page.goto(f"{url}/ui#/people/{person_id}")
    page.wait_for_selector("#person-videos video")
    page.wait_for_function("() => document.querySelector('#person-videos video').readyState >= 1", timeout=20_000)
    page.click("#person-videos button")  # her first time on screen: the video jumps there
    page.wait_for_function("() => document.querySelector('#person-videos video').currentTime > 0.2", timeout=10_000)
    shot(page, "web-person-videos.png")


def test_the_job_page_plays_the_stylized_video_beside_its_original(
    stack: Stack, style_worker: WorkerProcess, page: Any, tmp_path: Path
) -> None:
    upload = clip(tmp_path / "beach.mp4", seconds=2.0, size=(320, 192), audio_seconds=2.0)
    job = stack.client.submit("style", files=[upload], params=BUILTIN)  # an upload takes the video route too
    final = stack.client.wait(job["id"], timeout=180)
    assert final["state"] == "succeeded" and final["summary"]["videos"][0]["name"] == "beach.mp4", final
    page.goto(f"{stack.api.url}/ui#key={stack.key}")
    page.goto(f"{stack.api.url}/ui#/jobs/{job['id']}")
    page.wait_for_selector("#videos video.output")
    assert page.locator("#videos video").count() == 2
    assert page.locator("#gallery .pair").count() == 0  # segment files are not shown as pictures
    page.wait_for_function(
        "() => [...document.querySelectorAll('#videos video')].every(v => v.readyState >= 1 && v.videoWidth > 0)",
        timeout=20_000,
    )
    page.evaluate("() => { document.querySelector('#videos video.original').currentTime = 1.0; }")
    page.wait_for_function(
        "() => Math.abs(document.querySelector('#videos video.output').currentTime - 1.0) < 0.1", timeout=10_000
    )
    shot(page, "web-video.png")
