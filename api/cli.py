"""`nightshift`: the command line (built on api.client).

Exit codes: 0 done, 1 partial, 2 failed or usage error.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from tqdm import tqdm

from api.cli_people import add_parsers as add_library_parsers
from api.cli_people import cmd_unassigned, faces_summary
from api.client import ApiError, Client
from workers.contract import is_video_name

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".tif", ".tiff", ".bmp", ".gif"}
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tgz", ".tar.gz")
EXIT = {"succeeded": 0, "partial": 1, "failed": 2, "cancelled": 2}


class CliSettings(BaseSettings):
    """Server address and key: flags win, then NIGHTSHIFT_URL / NIGHTSHIFT_API_KEY, then the config file."""

    model_config = SettingsConfigDict(env_prefix="NIGHTSHIFT_", extra="ignore")
    url: str = "http://127.0.0.1:8787"
    api_key: str | None = None
    config: Path = Field(default_factory=lambda: Path.home() / ".config" / "nightshift" / "config.json")
    data_dir: Path = Path(".nightshift")


def _client(args: argparse.Namespace) -> Client:
    s = CliSettings()
    file_cfg: dict[str, Any] = json.loads(s.config.read_text()) if s.config.exists() else {}
    url = args.url or (s.url if "NIGHTSHIFT_URL" in _env() else file_cfg.get("url", s.url))
    key = args.api_key or s.api_key or file_cfg.get("api_key")
    if not key and (s.data_dir / "api-key").exists():
        key = (s.data_dir / "api-key").read_text().strip()  # the local stack's key
    return Client(url, key)


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


def _print(args: argparse.Namespace, human: str, data: Any) -> None:
    if args.json:
        print(json.dumps(data, indent=1, default=str))
    else:
        print(human)


def _expand(paths: Sequence[str]) -> tuple[list[Path], list[Path]]:
    """Photos (and videos) and archives from files and folders (recursively)."""
    photos: list[Path] = []
    archives: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            photos.extend(sorted(f for f in p.rglob("*") if f.is_file()
                                 and (f.suffix.lower() in IMAGE_SUFFIXES or is_video_name(f.name))))
        elif p.name.lower().endswith(ARCHIVE_SUFFIXES):
            archives.append(p)
        elif p.is_file():
            photos.append(p)
        else:
            raise SystemExit(f"nightshift: no such file or folder: {raw}")
    return photos, archives


def follow(client: Client, job_id: str, quiet: bool = False) -> dict[str, Any]:
    """Wait for a job with a live progress bar (items, throughput, ETA, failures)."""
    bar = None if quiet else tqdm(total=0, unit="photo", desc=job_id, dynamic_ncols=True)

    def update(job: dict[str, Any]) -> None:
        if bar is None:
            return
        c = job["counts"]
        bar.total = c["total"]
        bar.n = c["total"] - c["pending"]
        eta = job.get("eta_s")
        bar.set_postfix_str(f"{job['state']} failed={c['failed']} skipped={c['skipped']}"
                            + (f" eta={eta:.0f}s" if eta else ""))
        bar.refresh()

    try:
        return client.wait(job_id, on_progress=update)
    finally:
        if bar is not None:
            bar.close()


def download(client: Client, job_id: str, folder: Path, quiet: bool = False) -> list[Path]:
    bar = None if quiet else tqdm(unit="file", desc="download", dynamic_ncols=True)
    paths = client.download_results(job_id, folder, on_file=(lambda _p: bar.update(1)) if bar is not None else None)
    if bar is not None:
        bar.close()
    return paths


def _summary(job: dict[str, Any]) -> str:
    c = job["counts"]
    line = (f"{job['id']}  {job['kind']:<8} {job['state']:<10} {c['done']}/{c['total']} done, {c['failed']} failed, "
            f"{c['skipped']} skipped")
    if job.get("throughput_per_s"):
        line += f", {job['throughput_per_s']:.2f}/s"
    return line


def _finish(args: argparse.Namespace, client: Client, job: dict[str, Any]) -> int:
    if getattr(args, "wait", False) or getattr(args, "download", None):
        job = follow(client, job["id"], args.json)
        if args.download:
            paths = download(client, job["id"], Path(args.download) / job["id"], args.json)
            if not args.json:
                print(f"{len(paths)} files in {Path(args.download) / job['id']}")
        failed = [i for i in client.results(job["id"], state="failed")]
        if failed and not args.json:
            print(f"{len(failed)} failed item(s):")
            for it in failed[:20]:
                print(f"  {it['name']}: {it['error']}")
        _print(args, _summary(job) + (f"\n{line}" if (line := faces_summary(job)) else ""), job)
        return EXIT.get(job["state"], 2)
    _print(args, f"submitted {job['id']} ({job['state']}); follow with: nightshift wait {job['id']}", job)
    return 0


def cmd_style(args: argparse.Namespace) -> int:
    client = _client(args)
    photos, archives = _expand(args.photos)
    params: dict[str, Any] = {"strength": args.strength, "preserve_colors": args.preserve_colors}
    if args.size:
        params["size"] = args.size
    if args.format:
        params["format"] = args.format
    styles: list[Path] = []
    if args.builtin:
        params.update(method="builtin", builtin=args.builtin)
    elif args.style:
        styles = [Path(s) for s in args.style]
        params["method"] = "gatys" if args.gatys else "arbitrary"
    else:
        raise SystemExit("nightshift style: give --style PAINTING.jpg or --builtin 3:0.5,12:0.5")
    job = _submit(client, args, "style", photos, archives, params, styles)
    return _finish(args, client, job)


def _submit(client: Client, args: argparse.Namespace, kind: str, photos: list[Path], archives: list[Path],
            params: dict[str, Any], styles: Sequence[Path] = (), inputs: dict[str, Any] | None = None
            ) -> dict[str, Any]:
    size = sum(p.stat().st_size for p in [*photos, *archives, *styles])
    bar = None if args.json else tqdm(total=size, unit="B", unit_scale=True, desc=f"upload {len(photos)} files",
                                      dynamic_ncols=True)
    job = client.submit(kind, files=photos, archives=archives, styles=styles, params=params, inputs=inputs)
    if bar is not None:
        bar.update(size)
        bar.close()
    return job


def cmd_faces(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.unassigned:
        return cmd_unassigned(args, client, _print)
    if not args.source:
        raise SystemExit("nightshift faces: give a folder, archive or s3://prefix to index (or --unassigned)")
    params = {"try_rotations": args.try_rotations, "force": args.force}
    if args.detector:
        params["detector"] = args.detector
    if args.source.startswith("s3://") or args.source.startswith("store:"):
        prefix = args.source.split("://", 1)[-1].split(":", 1)[-1]
        job = client.submit("faces", params=params, inputs={"prefix": prefix})
    else:
        photos, archives = _expand([args.source])
        job = _submit(client, args, "faces", photos, archives, params)
    return _finish(args, client, job)


def cmd_status(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.job:
        job = client.job(args.job)
        _print(args, _summary(job) + (f"\n  error: {job['error']}" if job.get("error") else ""), job)
        return EXIT.get(job["state"], 0) if job["state"] in EXIT else 0
    return cmd_jobs(args)


def cmd_jobs(args: argparse.Namespace) -> int:
    client = _client(args)
    jobs = []
    for n, job in enumerate(client.jobs(state=getattr(args, "state", None))):
        if n >= getattr(args, "limit", 20):
            break
        jobs.append(job)
    _print(args, "\n".join(_summary(j) for j in jobs) or "no jobs", jobs)
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    client = _client(args)
    job = follow(client, args.job, args.json)
    _print(args, _summary(job), job)
    return EXIT.get(job["state"], 2)


def cmd_cancel(args: argparse.Namespace) -> int:
    job = _client(args).cancel(args.job)
    _print(args, f"cancel requested for {job['id']}", job)
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.download:
        paths = download(client, args.job, Path(args.download), args.json)
        _print(args, f"{len(paths)} files in {args.download}", [str(p) for p in paths])
        return 0
    items = list(client.results(args.job))
    lines = [f"{it['index']:>6} {it['state']:<9} {it['name']}  " + (it["error"] or
             ", ".join(o["name"] for o in it["outputs"])) for it in items]
    _print(args, "\n".join(lines), items)
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    res = _client(args).search(args.photo, k=args.k)
    lines = [f"{m['distance']:.3f}  {m['photo']}  face {m['face']}" for m in res.get("matches", [])]
    _print(args, "\n".join(lines) or "no matches", res)
    return 0


def sample_images(folder: Path) -> list[Path]:
    """Write scikit-image's bundled sample photos (they ship with the package) as JPEGs."""
    from PIL import Image
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        path = folder / f"{name}.jpg"
        Image.fromarray(getattr(data, name)()).convert("RGB").save(path, quality=92)
        out.append(path)
    return out


def cmd_up(args: argparse.Namespace) -> int:
    from api.devstack.stack import LocalStack

    stack = LocalStack(Path(args.data_dir), api_port=args.port).start()
    key_file = Path(args.data_dir) / "api-key"
    print(f"Nightshift is up: API {stack.url}  (API key in {key_file})")
    # the key goes to a terminal only: `nightshift up > log` must not write it into a log file
    if sys.stdout.isatty():
        print(f"  web page: {stack.url}/ui#key={stack.api_key}")
    else:
        print(f"  web page: {stack.url}/ui  (paste the key from {key_file})")
    print(f"  S3 {stack.settings.s3.endpoint if stack.settings else ''}  bucket nightshift; logs in "
          f"{Path(args.data_dir) / 'logs'}.  Ctrl-C stops everything.")
    stop = {"now": False}

    def handle(_sig: int, _frm: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)
    try:
        while not stop["now"]:
            time.sleep(0.5)
            for queue in stack.supervise():
                print(f"the {queue} worker had stopped; restarted it (its unfinished work is picked up again)")
    finally:
        print("stopping…")
        stack.stop()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job end to end: start the local stack, stylize sample photos over HTTP, download."""
    from api.devstack.stack import LocalStack

    data_dir = Path(args.data_dir)
    print(f"starting the embedded stack in {data_dir} …")
    stack = LocalStack(data_dir, api_port=args.port).start()
    try:
        client = Client(stack.url, stack.api_key)
        photos = sample_images(Path(tempfile.mkdtemp(prefix="nightshift-samples-")))
        params = {"method": "builtin", "builtin": ["7", "3:0.5,12:0.5"], "size": 768}
        print(f"submitting a style job: {len(photos)} sample photos x 2 built-in styles, to {stack.url}")
        job = client.submit("style", files=photos, params=params, label="demo")
        job = follow(client, job["id"])
        out = Path(args.out) / job["id"]
        paths = download(client, job["id"], out)
        print(_summary(job))
        prefix = f"s3://{stack.settings.s3.bucket}/t/local/jobs/{job['id']}/" if stack.settings else ""
        endpoint = stack.settings.s3.endpoint if stack.settings else ""
        print(f"results in object storage: {prefix}  (endpoint http://{endpoint})")
        print(f"downloaded {len(paths)} files to {out}/")
        for p in paths:
            print(f"  {p}")
        return EXIT.get(job["state"], 2)
    finally:
        if not args.keep:
            stack.stop()
        else:
            print(f"stack still running at {stack.url}; stop with Ctrl-C")
            try:
                while True:
                    time.sleep(1)
            except KeyboardInterrupt:
                stack.stop()


def cmd_keys(args: argparse.Namespace) -> int:
    """Create an API key for a tenant directly in Redis (operator command).

    It talks to the Redis of the local stack in --data-dir when one was started there, else to
    NIGHTSHIFT_REDIS_URL; it never guesses a server (a default 127.0.0.1:6379 may be someone else's).
    """
    import os

    from api.devstack.stack import stack_settings
    from storage.config import get_settings
    from storage.records import RecordStore

    data_dir = Path(args.data_dir)
    if (data_dir / "stack.json").exists():
        s = stack_settings(data_dir)
    elif os.environ.get("NIGHTSHIFT_REDIS_URL"):
        s = get_settings()
    else:
        raise SystemExit(f"nightshift keys: no local stack in {data_dir} and NIGHTSHIFT_REDIS_URL is not set: "
                         "name the Redis of your deployment (or --data-dir of a local stack)")
    key = RecordStore(s).apikeys.create(args.tenant, args.name or "")
    _print(args, key, {"tenant": args.tenant, "api_key": key})
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nightshift", description="Overnight style transfer and face indexing.")
    p.add_argument("--url", help="API address (or NIGHTSHIFT_URL, or the config file)")
    p.add_argument("--api-key", help="API key (or NIGHTSHIFT_API_KEY, or the config file)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run the embedded stack (Redis, S3, workers, API) until Ctrl-C")
    up.add_argument("--data-dir", default=".nightshift")
    up.add_argument("--port", type=int, default=8787)
    up.set_defaults(func=cmd_up)

    demo = sub.add_parser("demo", help="start the stack, stylize sample photos end to end, download the results")
    demo.add_argument("--data-dir", default=".nightshift")
    demo.add_argument("--port", type=int, default=8787)
    demo.add_argument("--out", default="nightshift-results")
    demo.add_argument("--keep", action="store_true", help="keep the stack running afterwards")
    demo.set_defaults(func=cmd_demo)

    def job_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--wait", action="store_true", help="follow the job with a progress bar")
        sp.add_argument("--download", metavar="DIR", help="wait, then download results into DIR/<job>")

    st = sub.add_parser("style", help="stylize photos")
    st.add_argument("photos", nargs="+", help="photos, folders or archives")
    st.add_argument("--style", action="append", help="a painting to use as the style (repeatable)")
    st.add_argument("--builtin", action="append", help="a built-in style or blend, e.g. 7 or 3:0.5,12:0.5")
    st.add_argument("--gatys", action="store_true", help="use the (slow) Gatys optimisation method")
    st.add_argument("--strength", type=float, default=1.0)
    st.add_argument("--preserve-colors", choices=["none", "luminance", "histogram"], default="none")
    st.add_argument("--size", type=int, help="long side of the output in pixels")
    st.add_argument("--format", choices=["png", "jpeg", "webp"])
    job_opts(st)
    st.set_defaults(func=cmd_style)

    fc = sub.add_parser("faces", help="index every face in a folder, archive or store prefix (s3://prefix); "
                        "--unassigned lists the library's faces that belong to nobody yet")
    fc.add_argument("source", nargs="?")
    fc.add_argument("--unassigned", action="store_true", help="list faces no person holds (no indexing)")
    fc.add_argument("--detector", choices=["yunet", "mtcnn", "hog"], help="default: the server's (yunet)")
    fc.add_argument("--try-rotations", action="store_true")
    fc.add_argument("--force", action="store_true", help="re-index photos already indexed")
    job_opts(fc)
    fc.set_defaults(func=cmd_faces)

    s = sub.add_parser("status", help="one job, or the recent jobs")
    s.add_argument("job", nargs="?")
    s.add_argument("--limit", type=int, default=20)
    s.set_defaults(func=cmd_status)
    j = sub.add_parser("jobs", help="list recent jobs")
    j.add_argument("--state")
    j.add_argument("--limit", type=int, default=20)
    j.set_defaults(func=cmd_jobs)
    w = sub.add_parser("wait", help="follow a job until it finishes")
    w.add_argument("job")
    w.set_defaults(func=cmd_wait)
    c = sub.add_parser("cancel", help="cancel a job")
    c.add_argument("job")
    c.set_defaults(func=cmd_cancel)
    r = sub.add_parser("results", help="list or download a job's results")
    r.add_argument("job")
    r.add_argument("--download", metavar="DIR")
    r.set_defaults(func=cmd_results)
    se = sub.add_parser("search", help="find faces like the one in a photo")
    se.add_argument("photo")
    se.add_argument("-k", type=int, default=10)
    se.set_defaults(func=cmd_search)
    add_library_parsers(sub)
    k = sub.add_parser("keys", help="create an API key for a tenant (talks to Redis directly)")
    k.add_argument("tenant")
    k.add_argument("--data-dir", default=".nightshift", help="the local stack whose Redis to use")
    k.add_argument("--name")
    k.set_defaults(func=cmd_keys)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "func_library", None):
            return int(args.func_library(args, _client(args), _print))
        return int(args.func(args))
    except ApiError as exc:
        print(f"nightshift: {exc.message} ({exc.status} {exc.code})", file=sys.stderr)
        if exc.details and not isinstance(exc.details, dict):
            for d in exc.details[:10]:
                print(f"  {d}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130




if __name__ == "__main__":
    sys.exit(main())
