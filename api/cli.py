"""`nightshift`: the command line (built on api.client).

Exit codes: 0 done, 1 partial (some items failed), 2 failed or usage error, 130 interrupted (a job
that was submitted goes on). No traceback reaches a user: every failure is one line on stderr that
says what to do (NIGHTSHIFT_DEBUG=1 shows the traceback of an unexpected one).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    JsonConfigSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from api.cli_common import CliError, progress, video_tracks
from api.cli_people import add_parsers as add_library_parsers
from api.cli_people import cmd_unassigned, faces_summary
from api.client import ApiError, Client, ClientError, Unauthorized, Unreachable, check_url
from workers.contract import ARCHIVE_SUFFIXES, is_video_name, parse_blend, parse_params, validation_messages

UP_PID = "up.pid"  # in the stack's data folder while `nightshift up` runs
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".tif", ".tiff", ".bmp", ".gif"}
EXIT = {"succeeded": 0, "partial": 1, "failed": 2, "cancelled": 2}
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
DEFAULT_URL = "http://127.0.0.1:8787"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# job parameters and the flags that set them, so a validation message names what the user typed
FLAGS = {
    "builtin": "--builtin",
    "styles": "--style",
    "strength": "--strength",
    "size": "--size",
    "format": "--format",
    "quality": "--quality",
    "preserve_colors": "--preserve-colors",
    "style_scale": "--style-scale",
    "detector": "--detector",
    "strip_metadata": "--strip-metadata",
    "protect_faces": "--protect-faces",
}


class CliEnv(BaseSettings):
    """What only the environment sets: where the config file and the local stack are, and debug."""

    # an empty variable counts as unset, so NIGHTSHIFT_URL= falls back to the config file
    model_config = SettingsConfigDict(env_prefix="NIGHTSHIFT_", extra="ignore", env_ignore_empty=True)
    config: Path = Field(default_factory=lambda: Path.home() / ".config" / "nightshift" / "config.json")
    data_dir: Path = Path(".nightshift")
    debug: bool = False


class _ConfigFile(JsonConfigSettingsSource):
    """The config file's "url" and "api_key" (missing file: none), with errors that say which file to fix."""

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        try:
            data = super()._read_file(file_path)
        except (OSError, ValueError) as exc:
            raise CliError(f"cannot read {file_path} ({exc}): fix or remove it") from None
        if not isinstance(data, dict):
            raise CliError(f'{file_path} must hold a JSON object like {{"url": ..., "api_key": ...}}')
        return {name: str(data[name]) for name in ("url", "api_key") if data.get(name)}


class CliSettings(CliEnv):
    """Server address and key: NIGHTSHIFT_URL / NIGHTSHIFT_API_KEY win over the config file's "url" / "api_key"
    (flags and --data-dir win over both: `resolve_target`)."""

    url: str = DEFAULT_URL
    api_key: str | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _ConfigFile(settings_cls, json_file=CliEnv().config)

    def origin(self, name: str) -> str:
        """Where the setting `name` came from, for messages: its variable, the config file, or "" (the default)."""
        if name not in self.model_fields_set:
            return ""
        return f"NIGHTSHIFT_{name.upper()}" if name in EnvSettingsSource(type(self))() else str(self.config)


@dataclass
class Target:
    """Which API the command talks to, with which key, and where each came from (for the messages)."""

    url: str
    url_from: str
    key: str | None
    key_from: str
    stacks: list[Path] = field(default_factory=list)


def _stack(data_dir: Path) -> tuple[str | None, str | None]:
    """(API URL, API key) of the local stack kept in `data_dir` (see api.devstack.stack.LocalStack); None if absent."""
    url = key = None
    try:
        port = json.loads((data_dir / "stack.json").read_text()).get("api_port")
        url = f"http://127.0.0.1:{int(port)}" if port else None
    except (OSError, ValueError, TypeError, AttributeError):
        pass
    try:
        key = (data_dir / "api-key").read_text().strip() or None
    except OSError:
        pass
    return url, key


def _same_server(a: str, b: str) -> bool:
    pa, pb = urlsplit(a), urlsplit(b)
    host_a, host_b = pa.hostname or "", pb.hostname or ""
    same_host = host_a == host_b or (host_a in LOOPBACK and host_b in LOOPBACK)
    return same_host and (pa.port or 80) == (pb.port or 80)


def resolve_target(args: argparse.Namespace) -> Target:
    """The API address and key: flags, then --data-dir, then the environment, the config file, ./.nightshift."""
    s = CliSettings()
    explicit = Path(args.data_dir) if getattr(args, "data_dir", None) else None
    stacks = [d for d in (explicit, s.data_dir) if d is not None]
    stack_url, stack_key = _stack(explicit) if explicit else (None, None)
    if explicit and not (stack_url or stack_key):
        raise CliError(
            f"{explicit} holds no local stack (no stack.json or api-key): start one with "
            f"`nightshift up --data-dir {explicit}`, or give --url and --api-key"
        )
    default_url, default_key = _stack(s.data_dir)
    if args.url:
        url, url_from = args.url, "--url"
    elif stack_url:
        url, url_from = stack_url, f"{explicit}/stack.json"
    elif s.origin("url"):
        url, url_from = s.url, s.origin("url")
    elif default_url:
        url, url_from = default_url, f"{s.data_dir}/stack.json"
    else:
        url, url_from = DEFAULT_URL, "the default address"
    url = check_url(url)
    if args.api_key:
        key, key_from = args.api_key, "--api-key"
    elif stack_key:
        key, key_from = stack_key, f"{explicit}/api-key"
    elif s.api_key:
        key, key_from = s.api_key, s.origin("api_key")
    elif default_key and (urlsplit(url).hostname or "") in LOOPBACK:
        key, key_from = default_key, f"{s.data_dir}/api-key"  # the local stack's key, never sent elsewhere
    else:
        key, key_from = None, ""
    return Target(url, url_from, key, key_from, stacks)


def _client(args: argparse.Namespace) -> Client:
    target = resolve_target(args)
    args.target = target
    return Client(target.url, target.key)


def key_hint(target: Target) -> str:
    """What to do when the API refuses the key: where the right one is, when we can tell."""
    for folder in target.stacks:
        url, key = _stack(folder)
        if url and key and _same_server(url, target.url):
            if key != target.key:
                sent = f" (the key sent came from {target.key_from})" if target.key_from else ""
                return f"the stack at {target.url} keeps its key in {folder / 'api-key'}: use --data-dir {folder}{sent}"
            return (
                f"{folder / 'api-key'} is the key of the stack last started from {folder}; the server at "
                f"{target.url} is another one: give its --data-dir, or --url/--api-key"
            )
    if target.key is None:
        return (
            "no API key was given: pass --api-key KEY, set NIGHTSHIFT_API_KEY, or --data-dir DIR of a local "
            "stack (its key is in DIR/api-key)"
        )
    return (
        f"the key from {target.key_from} is not one this server knows: use a key it issued (operators create "
        "them with `nightshift keys TENANT`; a local stack keeps its key in DATA_DIR/api-key)"
    )


def _print(args: argparse.Namespace, human: str, data: Any) -> None:
    if args.json:
        print(json.dumps(data, indent=1, default=str))
    else:
        print(human)


# -- inputs ------------------------------------------------------------------------------------------------------


@dataclass
class Sources:
    """What a job reads: local photos with their names (paths relative to the folder given), archives, a prefix."""

    photos: list[tuple[Path, str]] = field(default_factory=list)
    archives: list[Path] = field(default_factory=list)
    prefix: str | None = None
    left_out: list[str] = field(default_factory=list)  # files of a folder that are neither photos nor videos

    @property
    def size(self) -> int:
        return sum(p.stat().st_size for p, _ in self.photos) + sum(p.stat().st_size for p in self.archives)


def expand(raw_sources: Sequence[str]) -> Sources:
    """Photos and archives from files and folders (recursively), and at most one store prefix (s3://prefix).

    A photo found in a folder is named by its path relative to that folder (DCIM/100CANON/IMG_0001.JPG),
    so photos with the same file name in different subfolders stay apart. Raises CliError for a path
    that does not exist or a folder without photos.
    """
    out = Sources()
    for raw in raw_sources:
        if raw.startswith(("s3://", "store:")):
            prefix = raw.split("://", 1)[-1] if "://" in raw else raw.split(":", 1)[-1]
            if out.prefix is not None:
                raise CliError(f"one store prefix per job: got {out.prefix!r} and {prefix!r}")
            if not prefix:
                raise CliError(f"{raw!r} names no prefix: use s3://folder/in/your/storage")
            out.prefix = prefix
            continue
        p = Path(raw).expanduser()
        if p.is_dir():
            # hidden files too are left out: macOS writes ._IMG_0001.JPG resource forks next to photos
            visible = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
            wanted = [f.suffix.lower() in IMAGE_SUFFIXES or is_video_name(f.name) for f in visible]
            found = [f for f, w in zip(visible, wanted, strict=True) if w]
            out.left_out += [f.relative_to(p).as_posix() for f, w in zip(visible, wanted, strict=True) if not w]
            if not found:
                raise CliError(
                    f"no photos or videos in {raw} (looked for {', '.join(sorted(IMAGE_SUFFIXES))} "
                    "and common video files)"
                )
            out.photos += [(f, f.relative_to(p).as_posix()) for f in found]
        elif p.is_file():
            if p.name.lower().endswith(ARCHIVE_SUFFIXES):
                out.archives.append(p)
            else:
                out.photos.append((p, p.name))
        elif p.exists():
            raise CliError(f"{raw} is neither a file nor a folder")
        else:
            raise CliError(f"no such file or folder: {raw}")
    return out


def _existing_files(paths: Sequence[str], what: str) -> list[Path]:
    out = []
    for raw in paths:
        p = Path(raw).expanduser()
        if not p.is_file():
            raise CliError(f"{what} {raw} {'is not a file' if p.exists() else 'does not exist'}")
        out.append(p)
    return out


def check_params(kind: str, params: dict[str, Any], styles: int = 0) -> None:
    """Validate job parameters with the API's own models before anything is uploaded; CliError says what to fix."""
    probe = dict(params)
    if styles:  # the style images are uploaded with the job; their keys are the API's to give
        probe["styles"] = [*probe.get("styles", []), *(f"style-{n}" for n in range(styles))]
    try:
        parse_params(kind, probe)
    except ValidationError as exc:
        loc, msg = validation_messages(exc)[0]
        name = loc.split(".", 1)[0]
        raise CliError(f"{FLAGS.get(name, name)}: {msg}" if loc else msg) from None


# -- following, downloading, summaries ---------------------------------------------------------------------------


def follow(client: Client, job_id: str, quiet: bool = False) -> dict[str, Any]:
    """Wait for a job with a live progress bar (items, throughput, ETA, failures)."""
    client.job(job_id)  # a wrong id, address or key is said in one line, without a bar drawn first
    bar = None if quiet else progress(0, "photo", job_id)

    def update(job: dict[str, Any]) -> None:
        if bar is None:
            return
        c = job["counts"]
        bar.total = c["total"]
        bar.n = c["total"] - c["pending"]
        eta = job.get("eta_s")
        bar.set_postfix_str(
            f"{job['state']} failed={c['failed']} skipped={c['skipped']}" + (f" eta={eta:.0f}s" if eta else "")
        )
        bar.refresh()

    try:
        return client.wait(job_id, on_progress=update)
    finally:
        if bar is not None:
            bar.close()


def download(client: Client, job_id: str, folder: Path, quiet: bool = False) -> list[Path]:
    """Every output and job file of a job into `folder` (which the caller names after the job)."""
    plan = client.download_plan(job_id, folder)  # refuses before writing anything if a file is in the way
    bar = None if quiet else progress(len(plan), "file", "download")
    try:
        return client.download_results(job_id, folder, on_file=(lambda _p: bar.update(1)) if bar else None)
    finally:
        if bar is not None:
            bar.close()


def _faces_summary(job: dict[str, Any]) -> list[str]:
    """What a faces job found; the people part of the library adds its own words here."""
    summary = job.get("summary") or {}
    if "faces" not in summary:
        return []
    n = int(summary["faces"])
    parts = [f"{n} face{'' if n == 1 else 's'}"]
    if summary.get("no_face"):
        parts.append(f"{summary['no_face']} photo{'' if summary['no_face'] == 1 else 's'} without a face")
    return parts + ([video_tracks(summary["videos"])] if summary.get("videos") else [])


def _style_summary(job: dict[str, Any]) -> list[str]:
    summary = job.get("summary") or {}
    return [f"{summary['outputs']} outputs"] if summary.get("outputs") else []


KIND_SUMMARY: dict[str, Callable[[dict[str, Any]], list[str]]] = {"faces": _faces_summary, "style": _style_summary}


def summary_line(job: dict[str, Any]) -> str:
    """One line per job: id, kind, state, counts, what the kind found, throughput, label."""
    c = job["counts"]
    parts = [f"{c['done']}/{c['total']} done", f"{c['failed']} failed", f"{c['skipped']} skipped"]
    parts += [f"{c['cancelled']} cancelled"] if c.get("cancelled") else []
    parts += KIND_SUMMARY.get(job["kind"], lambda _j: [])(job)
    if job.get("throughput_per_s"):
        parts.append(f"{job['throughput_per_s']:.2f}/s")
    line = f"{job['id']}  {job['kind']:<8} {job['state']:<10} " + ", ".join(parts)
    return line + (f"  [{job['label']}]" if job.get("label") else "")


def _when(epoch: float | None) -> str:
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M") if epoch else "-"


def job_line(job: dict[str, Any]) -> str:
    """A line of `nightshift jobs`: when it was submitted, then the summary."""
    return f"{_when(job.get('created_at'))}  {summary_line(job)}"


def _finish(args: argparse.Namespace, client: Client, job: dict[str, Any]) -> int:
    job_id = job["id"]
    if not (getattr(args, "wait", False) or getattr(args, "download", None)):
        _print(args, f"submitted {job_id} ({job['state']}); follow with: nightshift wait {job_id}", job)
        return 0
    args.on_interrupt = (
        f"stopped following {job_id}; the job goes on: follow it with `nightshift wait {job_id}`, "
        f"cancel it with `nightshift cancel {job_id}`"
    )
    job = follow(client, job_id, args.json)
    if args.download:
        folder = Path(args.download) / job_id
        args.on_interrupt = (
            f"download interrupted; the results stay on the server: `nightshift results {job_id} "
            f"--download DIR` into another folder"
        )
        paths = download(client, job_id, folder, args.json)
        if not args.json:
            print(f"downloaded {len(paths)} files to {folder}/")
    failed = list(client.results(job_id, state="failed"))
    if failed and not args.json:
        print(f"{len(failed)} failed item(s):")
        for it in failed[:20]:
            print(f"  {it['name']}: {it['error']}")
    library = faces_summary(job) if job["kind"] == "faces" else None
    _print(args, summary_line(job) + (f"\n{library}" if library else ""), job)
    return EXIT.get(job["state"], 2)


def _submit(
    client: Client,
    args: argparse.Namespace,
    kind: str,
    sources: Sources,
    params: dict[str, Any],
    styles: Sequence[Path] = (),
) -> dict[str, Any]:
    inputs = {"prefix": sources.prefix} if sources.prefix else None
    if not (sources.photos or sources.archives or sources.prefix):
        raise CliError("no photos to submit")
    # a wrong address or key fails here, in one request, before any photo is uploaded
    client.request("GET", "/v1/jobs", params={"limit": 1})
    if sources.left_out and not args.json:
        shown = ", ".join(sources.left_out[:5]) + (
            f" and {len(sources.left_out) - 5} more" if len(sources.left_out) > 5 else ""
        )
        print(
            f"left out {len(sources.left_out)} file(s) that are neither photos nor videos: {shown} "
            "(name an archive to send it)",
            file=sys.stderr,
        )
    size = sources.size + sum(p.stat().st_size for p in styles)
    files = len(sources.photos) + len(sources.archives) + len(styles)
    bar = None if args.json or not files else progress(size, "B", f"upload {files} files", unit_scale=True)
    args.on_interrupt = "interrupted before the API confirmed the job: if it was created, `nightshift jobs` lists it"
    try:
        job = client.submit(
            kind,
            files=sources.photos,
            archives=sources.archives,
            styles=styles,
            params=params,
            inputs=inputs,
            label=args.label,
        )
    finally:
        if bar is not None:
            bar.update(size)
            bar.close()
    return job


# -- commands ----------------------------------------------------------------------------------------------------


def cmd_style(args: argparse.Namespace) -> int:
    if args.style and args.builtin:
        raise CliError("give --style PAINTING or --builtin N, not both: a job renders one method; submit two jobs")
    if args.gatys and not args.style:
        raise CliError("--gatys needs --style PAINTING (the Gatys method optimises toward a painting)")
    if not (args.style or args.builtin):
        raise CliError(
            "give --style PAINTING.jpg or --builtin 7 (or a blend like 3:0.5,12:0.5; `nightshift styles` lists them)"
        )
    params: dict[str, Any] = {
        "strength": args.strength,
        "preserve_colors": args.preserve_colors,
        "strip_metadata": args.strip_metadata,
    }
    for name in ("size", "format", "quality", "style_scale", "protect_faces"):
        if getattr(args, name) is not None:
            params[name] = getattr(args, name)
    styles = _existing_files(args.style or [], "style image")
    if args.builtin:
        params.update(method="builtin", builtin=args.builtin)
    else:
        params["method"] = "gatys" if args.gatys else "arbitrary"
    check_params("style", params, len(styles))
    for spec in args.builtin or []:
        given, used = parse_blend(spec, normalise=False), parse_blend(spec)
        if len(given) > 1 and abs(sum(given.values()) - 1) > 1e-6 and not args.json:
            shares = ",".join(f"{i}:{w:.2f}" for i, w in used.items())
            print(f"--builtin {spec}: blend weights are shares, used as {shares}", file=sys.stderr)
    sources = expand(args.photos)
    client = _client(args)
    return _finish(args, client, _submit(client, args, "style", sources, params, styles))


def cmd_faces(args: argparse.Namespace) -> int:
    if args.unassigned:
        return cmd_unassigned(args, _client(args), _print)
    if not args.sources:
        raise CliError("give photos, folders, archives or a store prefix (s3://prefix) to index, or --unassigned")
    params: dict[str, Any] = {"try_rotations": args.try_rotations, "force": args.force}
    if args.detector:
        params["detector"] = args.detector
    check_params("faces", params)
    sources = expand(args.sources)
    client = _client(args)
    return _finish(args, client, _submit(client, args, "faces", sources, params))


def cmd_status(args: argparse.Namespace) -> int:
    if not args.job:
        return cmd_jobs(args)
    job = _client(args).job(args.job)
    _print(args, summary_line(job) + (f"\n  error: {job['error']}" if job.get("error") else ""), job)
    return EXIT.get(job["state"], 0)


def cmd_jobs(args: argparse.Namespace) -> int:
    client = _client(args)
    jobs = []
    for n, job in enumerate(client.jobs(state=getattr(args, "state", None))):
        if n >= args.limit:
            break
        jobs.append(job)
    _print(args, "\n".join(job_line(j) for j in jobs) or "no jobs", jobs)
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    client = _client(args)
    args.on_interrupt = (
        f"stopped following {args.job}; the job goes on: `nightshift wait {args.job}` follows it "
        f"again, `nightshift cancel {args.job}` cancels it"
    )
    job = follow(client, args.job, args.json)
    _print(args, summary_line(job), job)
    return EXIT.get(job["state"], 2)


def cmd_cancel(args: argparse.Namespace) -> int:
    job = _client(args).cancel(args.job)
    _print(args, f"cancel requested for {job['id']}", job)
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.download:
        folder = Path(args.download) / args.job
        paths = download(client, args.job, folder, args.json)
        _print(args, f"downloaded {len(paths)} files to {folder}/", [str(p) for p in paths])
        return 0
    items = list(client.results(args.job))
    lines = [
        f"{it['index']:>6} {it['state']:<9} {it['name']}  "
        + (it["error"] or ", ".join(o["name"] for o in it["outputs"]))
        for it in items
    ]
    _print(args, "\n".join(lines) or "no items", items)
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    (photo,) = _existing_files([args.photo], "photo")
    res = _client(args).search(photo, k=args.k)
    query = res.get("query") or {}
    lines = []
    if query.get("faces_in_photo", 1) > 1:
        box = [round(v) for v in query.get("box", [])]
        lines.append(
            f"the photo shows {query['faces_in_photo']} faces: searched the largest, at {box} "
            "(nightshift identify PHOTO names every face)"
        )
    for m in res.get("matches", []):
        who = m.get("name") or (f"{m['person']} (unnamed)" if m.get("person") else "nobody yet")
        same = "same person" if m.get("same_person") else "different"
        lines.append(f"{m['distance']:.3f}  {same:<11}  {who}  {m.get('photo_name') or m['photo']}  face {m['face']}")
    _print(args, "\n".join(lines) or "no matches", res)
    return 0


def cmd_styles(args: argparse.Namespace) -> int:
    styles = _client(args).styles()
    lines = [f"{s['index']:>3}  {s['name']:<28} {'' if s.get('thumbnail_url') else '(no preview yet)'}" for s in styles]
    if any(s.get("thumbnail_url") for s in styles):
        lines.append("previews: the web page's style picker, or their links in nightshift styles --json")
    _print(args, "\n".join(line.rstrip() for line in lines), styles)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    models = _client(args).models()
    present = {True: "yes", False: "NO", None: "unknown (no live worker)"}
    lines = []
    for m in models:
        lines.append(f"{m['id']:<24} weights: {present[m['weights_present']]:<6} {m['selected_by']}")
        lines.append(f"{'':<24} licence: {m['licence']}; source: {m['source']}")
        if m["weights_present"] is False and m.get("how_to_provide"):
            lines.append(f"{'':<24} to enable: {m['how_to_provide']}")
    _print(args, "\n".join(lines), models)
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


def _stack_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir) if getattr(args, "data_dir", None) else CliEnv().data_dir


def _check_port(port: int) -> None:
    from api.devstack.servers import port_is_free

    if not port_is_free(port):
        raise CliError(
            f"port {port} is in use (is a stack already running? `nightshift jobs` talks to it): "
            "stop it, or choose another --port"
        )


def cmd_up(args: argparse.Namespace) -> int:
    from api.devstack.stack import LocalStack

    data_dir = _stack_dir(args)
    _check_port(args.port)
    stack = LocalStack(data_dir, api_port=args.port).start()
    pid_file = data_dir / UP_PID
    pid_file.write_text(str(os.getpid()))  # `nightshift down` stops this process
    print(f"Nightshift is up: API {stack.url}  (API key in {data_dir / 'api-key'})")
    # the key goes to a terminal only: `nightshift up > log` must not write it into a log file
    if sys.stdout.isatty():
        print(f"  web page: {stack.url}/ui#key={stack.api_key}")
    else:
        print(f"  web page: {stack.url}/ui  (paste the key from {data_dir / 'api-key'})")
    print(
        f"  S3 {stack.settings.s3.endpoint if stack.settings else ''}  bucket nightshift; logs in "
        f"{data_dir / 'logs'}.  Ctrl-C (or `nightshift down`) stops everything."
    )
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
        pid_file.unlink(missing_ok=True)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    """Stop the stack a `nightshift up` runs from --data-dir (one in the background, or in another terminal)."""
    from api.devstack.servers import wait_until

    data_dir = _stack_dir(args)
    try:
        pid = int((data_dir / UP_PID).read_text())
    except (FileNotFoundError, ValueError):
        raise CliError(f"no `nightshift up` runs from {data_dir}") from None
    if not _is_up(pid):
        (data_dir / UP_PID).unlink(missing_ok=True)
        raise CliError(f"no `nightshift up` runs from {data_dir} (the last one ended without cleaning up)")
    os.kill(pid, signal.SIGTERM)
    wait_until(
        lambda: not _is_up(pid),
        timeout=120,
        error=lambda: CliError(f"the stack (process {pid}) is still stopping; see {data_dir / 'logs'}"),
    )
    print(f"stopped the stack of {data_dir}")
    return 0


def _is_up(pid: int) -> bool:
    """Whether `pid` is a running `nightshift up` (a pid file may outlive its process, and pids are reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: trust the pid
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return b"up" in cmdline and any(b"nightshift" in part or b"api.cli" in part for part in cmdline)


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job end to end: start the local stack, stylize sample photos over HTTP, download."""
    from api.devstack.stack import LocalStack

    data_dir = _stack_dir(args)
    _check_port(args.port)
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
        print(summary_line(job))
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


def _redis_for_keys(args: argparse.Namespace) -> Any:
    """Settings for the operator command: the Redis of the local stack in --data-dir (its port and password)
    when one was started there, else NIGHTSHIFT_REDIS_URL; never a guessed server (a default 127.0.0.1:6379
    may be someone else's)."""
    import os

    from api.devstack.stack import stack_settings
    from storage.config import Settings

    data_dir = _stack_dir(args)
    if (data_dir / "stack.json").exists():
        return stack_settings(data_dir)
    if os.environ.get("NIGHTSHIFT_REDIS_URL"):
        return Settings()
    raise CliError(
        f"no local stack in {data_dir} and NIGHTSHIFT_REDIS_URL is not set: name the Redis of your "
        "deployment (or --data-dir of a local stack)"
    )


def cmd_keys(args: argparse.Namespace) -> int:
    """Create (or revoke) an API key directly in Redis (operator command)."""
    from storage.apikeys import ApiKeys
    from storage.errors import StoreUnavailable
    from storage.redisdb import RedisKeys, connect_quick, redacted

    settings = _redis_for_keys(args)
    # no retries: an operator at a terminal wants to know now that Redis is not there
    keys = ApiKeys(connect_quick(settings.redis_url), RedisKeys(settings.key_prefix))
    try:
        if args.revoke:
            if not keys.revoke(args.revoke):
                raise CliError("no such API key (already revoked?)")
            _print(args, "revoked", {"revoked": True})
            return 0
        if not args.tenant:
            raise CliError("give a TENANT to create a key for (or --revoke KEY)")
        key = keys.create(args.tenant, args.name or "")
    except StoreUnavailable:  # storage turns every Redis error into this
        raise CliError(
            f"cannot reach Redis at {redacted(settings.redis_url)}: start the stack (`nightshift up`), or set "
            "NIGHTSHIFT_REDIS_URL"
        ) from None
    except ValueError as exc:  # a bad tenant id
        raise CliError(str(exc)) from None
    _print(args, key, {"tenant": args.tenant, "api_key": key})
    return 0


# -- the parser --------------------------------------------------------------------------------------------------


def _global_flags(p: argparse.ArgumentParser, *, on_subcommand: bool) -> None:
    # On a subcommand the flags default to SUPPRESS, so `nightshift jobs --json` and `nightshift --json jobs`
    # both work and the one given wins over the top-level default.
    default: Any = argparse.SUPPRESS if on_subcommand else None
    p.add_argument("--url", default=default, help="API address (or NIGHTSHIFT_URL, or the config file)")
    p.add_argument("--api-key", default=default, help="API key (or NIGHTSHIFT_API_KEY, or the config file)")
    p.add_argument(
        "--data-dir",
        default=default,
        metavar="DIR",
        help="a local stack's folder: its API address and key (default ./.nightshift)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS if on_subcommand else False,
        help="machine-readable output",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nightshift",
        description="Overnight style transfer and face indexing. "
        "Exit codes: 0 done, 1 partial, 2 failed or usage error, 130 interrupted.",
    )
    _global_flags(p, on_subcommand=False)
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, func: Callable[[argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        _global_flags(sp, on_subcommand=True)
        sp.set_defaults(func=func)
        return sp

    up = command("up", cmd_up, "run the embedded stack (Redis, S3, workers, API) until Ctrl-C or `nightshift down`")
    up.add_argument("--port", type=int, default=8787)
    command("down", cmd_down, "stop the stack `nightshift up` runs (from --data-dir)")
    demo = command("demo", cmd_demo, "start the stack, stylize sample photos end to end, download the results")
    demo.add_argument("--port", type=int, default=8787)
    demo.add_argument("--out", default="nightshift-results")
    demo.add_argument("--keep", action="store_true", help="keep the stack running afterwards")

    def job_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--label", help="a name for the job, shown by `nightshift jobs` and the web page")
        sp.add_argument("--wait", action="store_true", help="follow the job with a progress bar")
        sp.add_argument("--download", metavar="DIR", help="wait, then download results into DIR/<job>")

    st = command("style", cmd_style, "stylize photos")
    st.add_argument("photos", nargs="+", help="photos, folders, archives or a store prefix (s3://prefix)")
    st.add_argument("--style", action="append", help="a painting to use as the style (repeatable)")
    st.add_argument(
        "--builtin",
        action="append",
        help="a built-in style or blend, e.g. 7 or 3:0.5,12:0.5 (repeatable; `nightshift styles`)",
    )
    st.add_argument("--gatys", action="store_true", help="use the (slow) Gatys optimisation method")
    st.add_argument("--strength", type=float, default=1.0, help="0-1: how much of the style (default 1)")
    st.add_argument("--preserve-colors", choices=["none", "luminance", "histogram"], default="none")
    st.add_argument("--size", type=int, help="long side of the output in pixels")
    st.add_argument("--style-scale", type=float, help="brush-stroke scale (2: strokes twice as big)")
    st.add_argument("--format", choices=["png", "jpeg", "webp"])
    st.add_argument("--quality", type=int, help="JPEG/WebP quality 1-100")
    st.add_argument(
        "--protect-faces",
        type=float,
        metavar="0-1",
        help="how much of the photo comes back inside faces, which most styles paint over (default "
        "0.65, 0.8 for styles 15 and 17; 0: none)",
    )
    st.add_argument(
        "--strip-metadata",
        action="store_true",
        help="drop the photos' EXIF (date, camera, GPS) and colour profile from the outputs",
    )
    job_opts(st)

    fc = command("faces", cmd_faces, "index every face in folders, photos, archives or a store prefix (s3://prefix)")
    fc.add_argument("sources", nargs="*", help="photos, folders, archives or a store prefix (s3://prefix)")
    fc.add_argument(
        "--unassigned", action="store_true", help="list the library's faces that belong to nobody yet (no indexing)"
    )
    fc.add_argument("--detector", choices=["yunet", "mtcnn", "hog"], help="default: the server's (yunet)")
    fc.add_argument("--try-rotations", action="store_true")
    fc.add_argument("--force", action="store_true", help="re-index photos already indexed")
    job_opts(fc)

    s = command("status", cmd_status, "one job, or the recent jobs")
    s.add_argument("job", nargs="?")
    s.add_argument("--limit", type=int, default=20)
    j = command("jobs", cmd_jobs, "list recent jobs (newest first) with their labels and dates")
    j.add_argument("--state")
    j.add_argument("--limit", type=int, default=20)
    w = command("wait", cmd_wait, "follow a job until it finishes")
    w.add_argument("job")
    c = command("cancel", cmd_cancel, "cancel a job")
    c.add_argument("job")
    r = command("results", cmd_results, "list or download a job's results")
    r.add_argument("job")
    r.add_argument("--download", metavar="DIR", help="download into DIR/<job>")
    se = command("search", cmd_search, "find faces like the one in a photo")
    se.add_argument("photo")
    se.add_argument("-k", type=int, default=10)
    add_library_parsers(command, _client, _print)
    command("styles", cmd_styles, "the 26 built-in styles: index, name, preview")
    command("models", cmd_models, "every model: weights present on the workers, source, licence")
    k = command("keys", cmd_keys, "create an API key for a tenant, or revoke one (talks to Redis directly)")
    k.add_argument("tenant", nargs="?")
    k.add_argument("--name")
    k.add_argument("--revoke", metavar="KEY", help="revoke this key (its requests get 401 from now on)")
    return p


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _error_line(args: argparse.Namespace, exc: BaseException) -> str:
    if isinstance(exc, Unauthorized) and getattr(args, "target", None) is not None:
        return f"{exc.message} (401): {key_hint(args.target)}"
    if isinstance(exc, Unreachable):
        return f"{exc.message}: start a local stack with `nightshift up`, or give --url / --data-dir"
    if isinstance(exc, ApiError):
        return f"{exc.message} ({exc.status} {exc.code})"
    if isinstance(exc, ClientError):
        return exc.message
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    return str(exc)


def _debug() -> bool:
    try:
        return CliEnv().debug
    except ValidationError:  # NIGHTSHIFT_DEBUG=maybe: no traceback either
        return False


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.on_interrupt = None
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print(f"\nnightshift: {args.on_interrupt or 'interrupted'}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (CliError, ClientError, OSError) as exc:
        print(f"nightshift: {_one_line(_error_line(args, exc))}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        if _debug():
            raise
        first = (str(exc).strip().splitlines() or [""])[0]
        print(
            f"nightshift: unexpected error ({type(exc).__name__}: {first[:300]}); NIGHTSHIFT_DEBUG=1 shows the "
            "traceback; please report it",
            file=sys.stderr,
        )
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
