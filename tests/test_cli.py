"""The command line, as a user runs it: progress bars, downloads, exit codes, messages, and the demo."""

from __future__ import annotations

import argparse
import io
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageCms

from api.cli import build_parser, expand, main, resolve_target
from api.client import Client
from api.devstack.servers import free_port
from api.devstack.stack import ApiServer
from tests.conftest import jpeg_bytes, photo

pytestmark = [pytest.mark.integration]
STYLE_7 = "builtin-b7-s1.0-none-x1.0"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def login(api_server: ApiServer, tenant_key: tuple[str, str]) -> list[str]:
    """The flags that point the CLI at the test API with this test's key."""
    return ["--url", api_server.url, "--api-key", tenant_key[1]]


@pytest.fixture(autouse=True)
def _no_local_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test runs where no ./.nightshift, config file or environment points the CLI elsewhere."""
    monkeypatch.chdir(tmp_path)
    for name in ("NIGHTSHIFT_URL", "NIGHTSHIFT_API_KEY", "NIGHTSHIFT_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NIGHTSHIFT_CONFIG", str(tmp_path / "no-config.json"))


def exif_photo(seed: int, size: tuple[int, int]) -> bytes:
    """A JPEG with a camera's EXIF (turned: orientation 6), a date taken and an sRGB profile."""
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0112] = "Canon", "EOS 5D Mark IV", 6
    exif.get_ifd(0x8769)[0x9003] = "2019:07:14 10:20:30"
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    buf = io.BytesIO()
    Image.open(io.BytesIO(photo(seed, size))).save(buf, "JPEG", exif=exif.tobytes(), icc_profile=icc)
    return buf.getvalue()


def test_style_folder_wait_and_download(workers, api_server: ApiServer, tenant_key, tmp_path, capsys, login) -> None:
    folder = tmp_path / "shoot"
    folder.mkdir()
    for i in range(3):
        (folder / f"p{i}.jpg").write_bytes(photo(i, (80, 60)))
    (folder / "broken.jpg").write_bytes(b"not a photo")
    (folder / "notes.txt").write_text("shot list")  # not a photo: left out, and said so
    code, out, err = run(capsys, *login, "style", str(folder), "--builtin", "7", "--download", str(tmp_path / "out"))
    assert code == 1  # partial: one photo failed
    assert "broken.jpg: not a supported image" in out
    assert "upload 4 files" in err and "photo/s" in err  # the progress bars
    assert "left out 1 file(s) that are neither photos nor videos: notes.txt" in err
    job_id = out.strip().splitlines()[-1].split()[0]
    files = sorted(p.name for p in (tmp_path / "out" / job_id).iterdir())
    assert [f for f in files if f.endswith(".png")] == [f"p{i}__{STYLE_7}.png" for i in range(3)]
    assert "contact-sheet.jpg" in files and "manifest.json" in files


def test_downloads_keep_every_file_and_never_overwrite(
    workers, api_server: ApiServer, tenant_key, tmp_path, capsys, login
) -> None:
    """Four photos all called 1.jpg in four folders, two styles: eight outputs, eight files on disk."""
    shoot = tmp_path / "shoot"
    for n, sub in enumerate("abcd"):
        (shoot / sub).mkdir(parents=True)
        (shoot / sub / "1.jpg").write_bytes(exif_photo(n, (64, 48)) if sub == "a" else photo(n, (64, 48)))
    out = tmp_path / "out"
    flags = login
    code, stdout, _ = run(
        capsys,
        "style",
        str(shoot),
        "--builtin",
        "7",
        "--builtin",
        "3",
        "--label",
        "four ones",
        "--download",
        str(out),
        *flags,
    )
    assert code == 0, stdout
    job_id = stdout.strip().splitlines()[-1].split()[0]
    written = sorted(p.relative_to(out / job_id).as_posix() for p in (out / job_id).rglob("*") if p.is_file())
    pngs = [p for p in written if p.endswith(".png")]
    assert pngs == sorted(f"{sub}/1__builtin-b{s}-s1.0-none-x1.0.png" for sub in "abcd" for s in (3, 7))
    assert f"downloaded {len(written)} files to {out / job_id}/" in stdout  # the count is what is on disk

    # the output keeps the camera's EXIF (upright now: orientation 1) and colour profile
    turned = Image.open(out / job_id / "a" / f"1__{STYLE_7}.png")
    exif = turned.getexif()
    assert turned.size == (48, 64) and exif[0x0112] == 1 and exif[0x0110] == "EOS 5D Mark IV"
    assert exif.get_ifd(0x8769)[0x9003] == "2019:07:14 10:20:30"
    assert turned.info["icc_profile"][16:20] == b"RGB "

    # a second download into the same folder refuses before touching anything; `results` uses DIR/<job>
    before = {p: p.stat().st_mtime_ns for p in (out / job_id).rglob("*")}
    code, _, err = run(capsys, "results", job_id, "--download", str(out), *flags)
    assert code == 2 and "already exist" in err and "nothing was overwritten" in err
    assert {p: p.stat().st_mtime_ns for p in (out / job_id).rglob("*")} == before
    code, stdout, _ = run(capsys, "results", job_id, "--download", str(tmp_path / "again"), *flags)
    again = sorted(
        p.relative_to(tmp_path / "again" / job_id).as_posix()
        for p in (tmp_path / "again" / job_id).rglob("*")
        if p.is_file()
    )
    assert code == 0 and again == written and f"downloaded {len(written)} files" in stdout

    # jobs shows the label and the date; the listing names items by their relative paths
    code, stdout, _ = run(capsys, "jobs", *flags)
    line = next(ln for ln in stdout.splitlines() if job_id in ln)
    assert "[four ones]" in line and line[:2] == "20"
    code, stdout, _ = run(capsys, "results", job_id, *flags)
    assert "c/1.jpg" in stdout and f"c/1__{STYLE_7}.png" in stdout


def test_strip_metadata_leaves_outputs_bare(workers, client: Client, tmp_path) -> None:
    (tmp_path / "a.jpg").write_bytes(exif_photo(4, (64, 48)))
    job = client.submit(
        "style",
        files=[tmp_path / "a.jpg"],
        params={"method": "builtin", "builtin": [7], "format": "webp", "strip_metadata": True},
    )
    job = client.wait(job["id"], timeout=120)
    item = next(iter(client.results(job["id"])))
    client.download(item["outputs"][0]["url"], tmp_path / "out.webp")
    out = Image.open(tmp_path / "out.webp")
    assert out.size == (48, 64) and not out.getexif() and "icc_profile" not in out.info


def test_faces_job_names_thumbnails_after_their_photos(
    workers, api_server: ApiServer, tenant_key, tmp_path, capsys, login
) -> None:
    from skimage import data

    astronaut = jpeg_bytes(data.astronaut()[:256, 100:356])  # her face; the badge below looks like one to HOG
    for sub in ("a", "b"):
        (tmp_path / "family" / sub).mkdir(parents=True)
        (tmp_path / "family" / sub / "astro.jpg").write_bytes(astronaut)
    (tmp_path / "extra.jpg").write_bytes(photo(3, (64, 48)))  # a second source, without a face
    code, stdout, _ = run(
        capsys,
        "faces",
        str(tmp_path / "family"),
        str(tmp_path / "extra.jpg"),
        "--detector",
        "hog",
        "--force",
        "--download",
        str(tmp_path / "out"),
        *login,
    )
    assert code == 0, stdout
    *_, summary, library = stdout.strip().splitlines()
    job_id = summary.split()[0]
    assert "3/3 done" in summary and "2 faces" in summary and "1 photo without a face" in summary
    assert library.startswith("2 faces in 3 photos;")  # and where they went in the library
    thumbs = sorted(
        p.relative_to(tmp_path / "out" / job_id).as_posix() for p in (tmp_path / "out" / job_id).rglob("*face-*.jpg")
    )
    assert thumbs == ["a/astro__face-000.jpg", "b/astro__face-000.jpg"]


def test_faces_json_status_and_usage_errors(
    workers, api_server: ApiServer, tenant_key, tmp_path, capsys, login
) -> None:
    (tmp_path / "a.jpg").write_bytes(photo(1, (64, 48)))
    base = [*login, "--json"]
    code, out, _ = run(capsys, *base, "faces", str(tmp_path / "a.jpg"), "--detector", "hog", "--wait")
    job = json.loads(out[out.index("{") :])  # the final job document
    assert code == 0 and job["kind"] == "faces" and job["state"] == "succeeded"
    # global flags work after the subcommand too
    code, out, _ = run(capsys, "status", job["id"], *base)
    assert code == 0 and json.loads(out)["id"] == job["id"]
    code, _, err = run(capsys, "--url", api_server.url, "--api-key", "nsk_wrong", "jobs")
    assert code == 2 and "unknown or revoked API key (401)" in err and "--api-key" in err
    code, _, err = run(capsys, "style", str(tmp_path), "--builtin", "99", "--url", api_server.url)
    assert code == 2 and err == "nightshift: --builtin: built-in style index must be 0-25, got 99\n"


def test_a_wrong_key_says_where_the_stacks_key_is(
    api_server: ApiServer, tenant_key, tmp_path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--data-dir` finds a stack's address and key; a stale key elsewhere is answered with where the right one is."""
    for folder in (tmp_path / "mystack", tmp_path / ".nightshift"):
        folder.mkdir()
        (folder / "stack.json").write_text(json.dumps({"api_port": api_server.port, "redis_port": 1}))
        (folder / "api-key").write_text(tenant_key[1])
    code, out, _ = run(capsys, "jobs", "--data-dir", str(tmp_path / "mystack"), "--json")
    assert code == 0 and json.loads(out) == []
    code, out, _ = run(capsys, "jobs", "--json")  # ./.nightshift is where `nightshift up` keeps them
    assert code == 0 and json.loads(out) == []
    monkeypatch.setenv("NIGHTSHIFT_API_KEY", "nsk_stale")  # an old key in the environment wins over ./.nightshift
    code, _, err = run(capsys, "jobs")
    assert code == 2 and len(err.splitlines()) == 1
    assert "keeps its key in .nightshift/api-key: use --data-dir .nightshift" in err
    assert "came from NIGHTSHIFT_API_KEY" in err


def test_ctrl_c_while_waiting_leaves_the_job_running(
    workers, client: Client, api_server: ApiServer, tenant_key, tmp_path, capsys, monkeypatch: pytest.MonkeyPatch, login
) -> None:
    (tmp_path / "a.jpg").write_bytes(photo(2, (64, 48)))

    def interrupted(self: Client, job_id: str, **_: object) -> dict:
        raise KeyboardInterrupt

    monkeypatch.setattr(Client, "wait", interrupted)
    code, _, err = run(capsys, "style", str(tmp_path / "a.jpg"), "--builtin", "7", "--wait", *login)
    job_id = err.split("stopped following ", 1)[1].split(";")[0]
    assert code == 130 and "the job goes on" in err
    assert f"nightshift wait {job_id}" in err and f"nightshift cancel {job_id}" in err
    monkeypatch.undo()
    assert client.wait(job_id, timeout=120)["state"] == "succeeded"


def test_style_and_builtin_together_are_refused_before_any_upload(tmp_path, capsys) -> None:
    (tmp_path / "a.jpg").write_bytes(photo(2, (64, 48)))
    (tmp_path / "painting.jpg").write_bytes(photo(3, (64, 48)))
    dead = f"http://127.0.0.1:{free_port()}"
    code, _, err = run(
        capsys,
        "style",
        str(tmp_path / "a.jpg"),
        "--builtin",
        "7",
        "--style",
        str(tmp_path / "painting.jpg"),
        "--url",
        dead,
    )
    assert code == 2 and "not both" in err
    code, _, err = run(capsys, "style", str(tmp_path / "a.jpg"), "--style", str(tmp_path / "nope.jpg"), "--url", dead)
    assert code == 2 and err == f"nightshift: style image {tmp_path / 'nope.jpg'} does not exist\n"
    code, _, err = run(capsys, "faces", str(tmp_path / "a.jpg"), "holiday/", "--url", dead)
    assert code == 2 and err == "nightshift: no such file or folder: holiday/\n"
    code, _, err = run(capsys, "style", str(tmp_path / "a.jpg"), "--builtin", "7", "--size", "8", "--url", dead)
    assert code == 2 and err == "nightshift: --size: Input should be greater than or equal to 32\n"


def test_every_archive_the_api_takes_goes_up_as_an_archive(tmp_path) -> None:
    names = ["a.zip", "b.tar", "c.tgz", "d.tar.gz", "e.tar.bz2", "f.TAR.XZ", "g.jpg", "h.xz"]
    for name in names:
        (tmp_path / name).write_bytes(b"-")
    sources = expand([str(tmp_path / n) for n in names])
    assert [p.name for p in sources.archives] == names[:6]
    assert [name for _, name in sources.photos] == ["g.jpg", "h.xz"]  # the API answers for what it cannot read


def test_the_config_file_is_used_below_the_environment_and_the_flags(tmp_path, capsys, monkeypatch) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"url": "http://photos.example:8080", "api_key": "from-file", "data_dir": "else"}))
    monkeypatch.setenv("NIGHTSHIFT_CONFIG", str(config))
    no_flags = argparse.Namespace(url=None, api_key=None, data_dir=None)
    t = resolve_target(no_flags)
    assert (t.url, t.url_from) == ("http://photos.example:8080", str(config))
    assert (t.key, t.key_from) == ("from-file", str(config))
    assert t.stacks == [Path(".nightshift")]  # the file sets the server and key, nothing else
    monkeypatch.setenv("NIGHTSHIFT_API_KEY", "from-env")
    monkeypatch.setenv("NIGHTSHIFT_URL", "")  # empty: unset
    t = resolve_target(no_flags)
    assert (t.url, t.url_from, t.key, t.key_from) == (
        "http://photos.example:8080",
        str(config),
        "from-env",
        "NIGHTSHIFT_API_KEY",
    )
    monkeypatch.setenv("NIGHTSHIFT_URL", "http://env.example:9000")
    assert (resolve_target(no_flags).url, resolve_target(no_flags).url_from) == (
        "http://env.example:9000",
        "NIGHTSHIFT_URL",
    )
    t = resolve_target(argparse.Namespace(url="http://flag.example:1", api_key="from-flag", data_dir=None))
    assert (t.url, t.url_from, t.key, t.key_from) == ("http://flag.example:1", "--url", "from-flag", "--api-key")
    config.write_text("{not json")
    code, _, err = run(capsys, "jobs")
    assert code == 2 and err.startswith(f"nightshift: cannot read {config} (") and err.endswith("fix or remove it\n")
    config.write_text("[]")
    code, _, err = run(capsys, "jobs")
    assert code == 2 and err == f'nightshift: {config} must hold a JSON object like {{"url": ..., "api_key": ...}}\n'


def test_keys_creates_and_revokes(services, api_server: ApiServer, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NIGHTSHIFT_REDIS_URL", services.settings.redis_url)
    monkeypatch.setenv("NIGHTSHIFT_KEY_PREFIX", services.settings.key_prefix)
    code, out, _ = run(capsys, "keys", "tcli", "--json")
    key = json.loads(out)["api_key"]
    assert code == 0 and list(Client(api_server.url, key).jobs(page_size=1)) == []
    code, out, _ = run(capsys, "keys", "--revoke", key)
    assert code == 0 and out.strip() == "revoked"
    code, _, err = run(capsys, "jobs", "--url", api_server.url, "--api-key", key)
    assert code == 2 and "unknown or revoked API key" in err
    code, _, err = run(capsys, "keys", "--revoke", key)
    assert code == 2 and "no such API key" in err
    monkeypatch.setenv("NIGHTSHIFT_REDIS_URL", f"redis://:s3cret@127.0.0.1:{free_port()}/0")  # nobody listens there
    code, _, err = run(capsys, "keys", "tcli")
    assert code == 2 and "cannot reach Redis at redis://:***@127.0.0.1:" in err and "Traceback" not in err
    assert "s3cret" not in err  # a password never reaches the terminal


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_every_subcommand_against_a_stopped_stack(
    tmp_path, capsys, monkeypatch: pytest.MonkeyPatch, busy_port: int
) -> None:
    """Nothing listening: each command says so in one line, exit 2, never a traceback."""
    (tmp_path / "a.jpg").write_bytes(photo(2, (64, 48)))
    dead = free_port()
    monkeypatch.setenv("NIGHTSHIFT_REDIS_URL", f"redis://127.0.0.1:{dead}/0")
    commands = {
        "up": ["up", "--port", str(busy_port)],
        "down": ["down"],
        "demo": ["demo", "--port", str(busy_port), "--out", str(tmp_path / "demo")],
        "style": ["style", "a.jpg", "--builtin", "7"],
        "faces": ["faces", "a.jpg", "--wait"],
        "status": ["status", "j1"],
        "jobs": ["jobs"],
        "wait": ["wait", "j1"],
        "cancel": ["cancel", "j1"],
        "results": ["results", "j1", "--download", "out"],
        "search": ["search", "a.jpg"],
        "people": ["people", "show", "p1"],
        "assign": ["assign", "f1", "p1"],
        "verify": ["verify", "a.jpg", "a.jpg"],
        "identify": ["identify", "a.jpg"],
        "styles": ["styles"],
        "models": ["models"],
        "keys": ["keys", "t1"],
    }
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(commands) == set(subparsers.choices)  # a new command must be added here
    for name, argv in commands.items():
        code, out, err = run(capsys, *argv, "--url", f"http://127.0.0.1:{dead}")
        assert code == 2, (name, out, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, (name, err)
        assert err.startswith("nightshift: "), (name, err)
    code, _, err = run(capsys, "jobs", "--url", "127.0.0.1:8787")
    assert code == 2 and "give the API address with its scheme, like http://127.0.0.1:8787" in err


def test_demo_runs_the_main_job_end_to_end(tmp_path: Path, capsys, monkeypatch) -> None:
    """The README's first command: embedded stack, sample photos over HTTP, results on disk."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run(
        capsys,
        "demo",
        "--port",
        str(free_port()),
        "--data-dir",
        str(tmp_path / "data"),
        "--out",
        str(tmp_path / "results"),
    )
    assert code == 0, out + err
    assert "results in object storage: s3://nightshift/t/local/jobs/" in out
    pngs = list((tmp_path / "results").rglob("*.png"))
    assert len(pngs) == 8  # 4 sample photos x 2 styles
    assert (tmp_path / "data" / "api-key").exists() and (tmp_path / "data" / "s3" / "s3-credentials.json").exists()


def test_a_faces_jobs_lines_count_its_video_tracks() -> None:
    from api.cli import summary_line
    from api.cli_people import faces_summary

    counts = {"total": 1, "done": 1, "failed": 0, "skipped": 0, "cancelled": 0, "pending": 0}
    summary = {"faces": 0, "photos": 0, "videos": [{"name": "walk.mp4", "tracks": 2}, {"name": "b.mp4", "tracks": 1}]}
    job = {"id": "j1", "kind": "faces", "state": "succeeded", "counts": counts, "summary": summary}
    assert "0 faces, 3 face tracks in 2 videos" in summary_line(job)
    assert faces_summary(job) == "0 faces in 0 photos and 3 face tracks in 2 videos"


def test_blend_weights_that_do_not_sum_to_one_are_shown_as_used(tmp_path, capsys) -> None:
    (tmp_path / "a.jpg").write_bytes(photo(2, (64, 48)))
    dead = f"http://127.0.0.1:{free_port()}"
    code, _, err = run(capsys, "style", str(tmp_path / "a.jpg"), "--builtin", "3:0.5,12:0.9", "--url", dead)
    assert code == 2 and "--builtin 3:0.5,12:0.9: blend weights are shares, used as 3:0.36,12:0.64" in err
    code, _, err = run(capsys, "style", str(tmp_path / "a.jpg"), "--builtin", "3:0.5,12:0.5", "--url", dead)
    assert code == 2 and "shares" not in err  # already shares: nothing to say


def test_one_person_is_not_one_people() -> None:
    from api.cli_people import faces_summary

    summary = {"faces": 3, "photos": 3, "library": {"people": 1, "new_people": 1, "grew": 0, "unassigned": 0}}
    assert faces_summary({"summary": summary}) == "3 faces in 3 photos; 1 person (1 new, 0 grew), 0 unassigned"
