"""A Python client for the Nightshift API (the CLI is built on it).

    from api.client import Client
    c = Client("http://127.0.0.1:8787", api_key)
    job = c.submit("style", files=["a.jpg"], params={"method": "builtin", "builtin": [7]})
    job = c.wait(job["id"], on_progress=print)
    c.download_results(job["id"], "out/")

Every failure is one of the exceptions below (`ClientError` and its subclasses), with a message that
says what to do; the CLI prints that message, never a traceback.
"""

from __future__ import annotations

import json
import mimetypes
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import requests

FINISHED = {"succeeded", "failed", "cancelled", "partial"}


class ClientError(Exception):
    """Anything the client could not do; `message` says what happened and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadUrl(ClientError):
    """The API address is not an http(s) URL."""


class Unreachable(ClientError):
    """Nothing answered at the API address (refused, unknown host, timeout)."""


class DownloadError(ClientError):
    """A download would overwrite a file, or a file name from the server is not a safe relative path."""


class ApiError(ClientError):
    """An error answered by the API; carries its status, code, message and details."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status, self.code, self.details = status, code, details

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


class NotFound(ApiError):
    pass


class Unauthorized(ApiError):
    pass


class RateLimited(ApiError):
    pass


class InvalidRequest(ApiError):
    pass


_ERRORS = {401: Unauthorized, 404: NotFound, 422: InvalidRequest, 429: RateLimited}


class Client:
    """Typed methods for every endpoint; raises ApiError subclasses with the API's message."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 60.0) -> None:
        self.url = check_url(url)
        self.timeout = timeout
        self.session = requests.Session()
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"

    # -- plumbing ------------------------------------------------------------------------------
    def request(self, method: str, path: str, **kw: Any) -> Any:
        """One API call: the parsed JSON body, or an ApiError / Unreachable that says what went wrong."""
        kw.setdefault("timeout", self.timeout)
        resp = self._send(method, self.url + path, **kw)
        if resp.status_code >= 400:
            try:
                err = resp.json()["error"]
                err["message"]  # noqa: B018 - our error shape, or not the API at all
            except (ValueError, KeyError, TypeError):
                raise ApiError(
                    resp.status_code,
                    "http_error",
                    f"{self.url} answered HTTP {resp.status_code} "
                    "without a Nightshift error: is this the Nightshift API?",
                ) from None
            cls = _ERRORS.get(resp.status_code, ApiError)
            raise cls(resp.status_code, err.get("code", ""), err.get("message", ""), err.get("details"))
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            raise ApiError(
                resp.status_code,
                "bad_response",
                f"{self.url} answered something that is not JSON: is this the Nightshift API?",
            ) from None

    def _send(self, method: str, url: str, **kw: Any) -> requests.Response:
        try:
            return self.session.request(method, url, **kw)
        except requests.Timeout:
            raise Unreachable(f"the API at {self.url} did not answer within {kw['timeout']:.0f} s") from None
        except requests.ConnectionError as exc:
            raise Unreachable(f"cannot reach the API at {self.url} ({_reason(exc)})") from None
        except requests.RequestException as exc:
            raise Unreachable(f"cannot call the API at {self.url}: {exc}") from None

    # -- jobs ----------------------------------------------------------------------------------
    def submit(
        self,
        kind: str,
        *,
        files: Sequence[str | Path | tuple[str | Path, str]] = (),
        styles: Sequence[str | Path] = (),
        archives: Sequence[str | Path] = (),
        params: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        label: str | None = None,
        idempotency_key: str | None = None,
        on_upload: Callable[[int, int], None] | None = None,
    ) -> dict[str, Any]:
        """Submit a job; local files are uploaded in the same request (multipart).

        A file is a path (named by its file name) or ``(path, name)``, where the name is the photo's path
        relative to the folder it came from (``DCIM/100CANON/IMG_0001.JPG``): the API keeps it as the item's
        name, and results are named and downloaded after it.
        """
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        if not (files or styles or archives):
            body = {"kind": kind, "params": params or {}, "inputs": inputs or {}}
            if label:
                body["label"] = label
            return self.request("POST", "/v1/jobs", json=body, headers=headers)  # type: ignore[no-any-return]
        named = [(Path(f[0]), f[1]) if isinstance(f, tuple) else (Path(f), Path(f).name) for f in files]
        with ExitStack() as stack:
            parts: list[tuple[str, Any]] = []
            for field, entries in (
                ("files", named),
                ("style", [(Path(p), Path(p).name) for p in styles]),
                ("archive", [(Path(p), Path(p).name) for p in archives]),
            ):
                for path, name in entries:
                    ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                    parts.append((field, (name, stack.enter_context(open(path, "rb")), ctype)))
            data = {"kind": kind, "params": json.dumps(params or {}), "inputs": json.dumps(inputs or {})}
            if label:
                data["label"] = label
            if on_upload:
                on_upload(
                    len(parts),
                    sum(p.stat().st_size for p, _ in named) + sum(Path(p).stat().st_size for p in [*styles, *archives]),
                )
            return self.request(
                "POST",
                "/v1/jobs",
                data=data,
                files=parts,  # type: ignore[no-any-return]
                headers=headers,
            )

    def job(self, job_id: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/jobs/{job_id}")  # type: ignore[no-any-return]

    def jobs(self, state: str | None = None, kind: str | None = None, page_size: int = 50) -> Iterator[dict[str, Any]]:
        """All jobs, newest first, across pages."""
        before: float | None = None
        while True:
            params: dict[str, Any] = {"limit": page_size}
            for k, v in (("state", state), ("kind", kind), ("before", before)):
                if v is not None:
                    params[k] = v
            page = self.request("GET", "/v1/jobs", params=params)
            yield from page["jobs"]
            before = page.get("next_before")
            if before is None:
                return

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self.request("POST", f"/v1/jobs/{job_id}/cancel")  # type: ignore[no-any-return]

    def results_page(self, job_id: str, offset: int = 0, limit: int = 100, state: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"offset": offset, "limit": limit}
        if state:
            params["state"] = state
        return self.request("GET", f"/v1/jobs/{job_id}/results", params=params)  # type: ignore[no-any-return]

    def results(self, job_id: str, state: str | None = None) -> Iterator[dict[str, Any]]:
        """Every item of a job with its outputs (presigned URLs), across pages."""
        offset: int | None = 0
        while offset is not None:
            page = self.results_page(job_id, offset, 500, state)
            yield from page["items"]
            offset = page.get("next_offset")

    def artifacts(self, job_id: str) -> list[dict[str, Any]]:
        return self.results_page(job_id, 0, 1)["artifacts"]  # type: ignore[no-any-return]

    def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        poll: float = 0.5,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the job finishes; calls `on_progress(job)` on every poll."""
        deadline = time.monotonic() + timeout if timeout else None
        while True:
            job = self.job(job_id)
            if on_progress:
                on_progress(job)
            if job["state"] in FINISHED:
                return job
            if deadline and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['state']} after {timeout}s")
            time.sleep(poll)

    def download(self, url: str, dest: Path) -> Path:
        """Write one presigned URL's object to `dest`, which must not exist yet (never overwritten)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            resp = requests.get(url, stream=True, timeout=self.timeout)
        except requests.RequestException as exc:
            raise Unreachable(f"cannot download {dest.name} from the object store ({_reason(exc)})") from None
        with resp:
            if resp.status_code >= 400:
                raise DownloadError(
                    f"the object store refused {dest.name} (HTTP {resp.status_code}): the link may "
                    "have expired; run the download again"
                )
            try:
                fh = open(dest, "xb")
            except FileExistsError:
                raise DownloadError(f"{dest} already exists: not overwritten") from None
            with fh:
                try:
                    for block in resp.iter_content(1 << 20):
                        fh.write(block)
                except (requests.RequestException, OSError):
                    fh.close()
                    dest.unlink(missing_ok=True)  # never leave half a file under the final name
                    raise
        return dest

    def download_plan(self, job_id: str, folder: str | Path) -> dict[str, Path]:
        """Where each output and job file of a job would go under `folder`, by name.

        Raises DownloadError, before anything is written, when a name is not a safe relative path,
        when two files would share a path, or when a file is already there (it is never overwritten).
        """
        folder = Path(folder)
        plan: dict[str, Path] = {}
        for item in self.results(job_id):
            for out in item["outputs"]:
                _plan(plan, folder, out["name"])
        for art in self.artifacts(job_id):
            _plan(plan, folder, art["name"])
        existing = [p for p in plan.values() if p.exists() or p.is_symlink()]
        if existing:
            more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
            raise DownloadError(
                f"{existing[0]}{more} already exist{'' if more else 's'}: nothing was overwritten "
                f"or downloaded; move them away or download into another folder"
            )
        return plan

    def download_results(
        self, job_id: str, folder: str | Path, on_file: Callable[[Path], None] | None = None
    ) -> list[Path]:
        """Download every output and job file of a job into `folder`, keeping the items' relative paths.

        Returns the files written. Nothing is overwritten (see `download_plan`); links are listed afresh
        page by page, so a long download never meets an expired presigned URL.
        """
        plan = self.download_plan(job_id, folder)
        paths = []
        for item in self.results(job_id):
            for out in item["outputs"]:
                paths.append(self.download(out["url"], plan[out["name"]]))
                if on_file:
                    on_file(paths[-1])
        for art in self.artifacts(job_id):
            paths.append(self.download(art["url"], plan[art["name"]]))
            if on_file:
                on_file(paths[-1])
        return paths

    # -- uploads & health ---------------------------------------------------------------------
    def upload(self, path: str | Path) -> str:
        """Upload a large file straight to the store (presigned PUT); returns its key for `inputs`."""
        path = Path(path)
        grant = self.request("POST", "/v1/uploads", json={"names": [path.name]})["uploads"][0]
        with open(path, "rb") as fh:
            try:
                resp = requests.post(
                    grant["url"], data=grant["fields"], files={"file": (path.name, fh)}, timeout=max(self.timeout, 600)
                )
            except requests.RequestException as exc:
                raise Unreachable(f"cannot upload {path.name} to the object store ({_reason(exc)})") from None
        if resp.status_code >= 300:
            raise ApiError(resp.status_code, "upload_failed", resp.text[:300])
        return str(grant["key"])

    def ready(self) -> dict[str, Any]:
        return self.request("GET", "/readyz")  # type: ignore[no-any-return]

    def styles(self) -> list[dict[str, Any]]:
        """The built-in styles: index, name, and a preview URL once a style worker has rendered them."""
        return self.request("GET", "/v1/styles")["styles"]  # type: ignore[no-any-return]

    def models(self) -> list[dict[str, Any]]:
        """Every model: what selects it, whether the live workers have its weights, source and licence."""
        return self.request("GET", "/v1/models")["models"]  # type: ignore[no-any-return]

    # -- faces & people (present when the server has them) -------------------------------------
    def verify(self, a: str | Path, b: str | Path) -> dict[str, Any]:
        with open(a, "rb") as fa, open(b, "rb") as fb:
            return self.request(
                "POST",
                "/v1/faces/verify",  # type: ignore[no-any-return]
                files=[("a", (Path(a).name, fa)), ("b", (Path(b).name, fb))],
            )

    def identify(self, photo: str | Path) -> dict[str, Any]:
        """Who is in a photo: each face with the library person it clearly is, or nobody."""
        with open(photo, "rb") as fh:
            return self.request(
                "POST",
                "/v1/faces/identify",  # type: ignore[no-any-return]
                files=[("photo", (Path(photo).name, fh))],
            )

    # -- the library of people -----------------------------------------------------------------------
    def library(self) -> dict[str, Any]:
        return self.request("GET", "/v1/library")  # type: ignore[no-any-return]

    def people(self, which: str = "visible") -> Iterator[dict[str, Any]]:
        """The library's people (named first), across pages."""
        offset: int | None = 0
        while offset is not None:
            page = self.request("GET", "/v1/people", params={"filter": which, "offset": offset, "limit": 500})
            yield from page["people"]
            offset = page.get("next_offset")

    def person(self, person_id: str, offset: int = 0, limit: int = 100) -> dict[str, Any]:
        """A person and a page of their photos (newest first)."""
        return self.request(
            "GET",
            f"/v1/people/{person_id}",  # type: ignore[no-any-return]
            params={"offset": offset, "limit": limit},
        )

    def person_photos(self, person_id: str) -> Iterator[dict[str, Any]]:
        offset: int | None = 0
        while offset is not None:
            page = self.person(person_id, offset, 500)
            yield from page["photos"]
            offset = page.get("next_offset")

    def update_person(self, person_id: str, **fields: Any) -> dict[str, Any]:
        """Name (`name`), hide (`hidden`) or choose the cover (`cover`) of a person."""
        return self.request("PATCH", f"/v1/people/{person_id}", json=fields)  # type: ignore[no-any-return]

    def merge(self, into: str, other: str) -> dict[str, Any]:
        return self.request(
            "POST",
            "/v1/people/merge",  # type: ignore[no-any-return]
            json={"into": into, "from": other},
        )

    def unassigned(self) -> Iterator[dict[str, Any]]:
        offset: int | None = 0
        while offset is not None:
            page = self.request("GET", "/v1/faces", params={"unassigned": "true", "offset": offset, "limit": 500})
            yield from page["faces"]
            offset = page.get("next_offset")

    def set_face_person(self, face_id: str, person_id: str | None) -> dict[str, Any]:
        """Say who a face is (None: not the person it is with now)."""
        return self.request(
            "POST",
            f"/v1/faces/{face_id}/person",  # type: ignore[no-any-return]
            json={"person": person_id},
        )

    def recluster(self) -> dict[str, Any]:
        return self.request("POST", "/v1/people/recluster", json={})  # type: ignore[no-any-return]

    def learn(self, **params: Any) -> dict[str, Any]:
        """Start learning a head from the library's names (an `adapt` job)."""
        return self.request("POST", "/v1/people/learn", json=params)  # type: ignore[no-any-return]

    def learned(self) -> dict[str, Any]:
        return self.request("GET", "/v1/people/learn")  # type: ignore[no-any-return]

    def rollback_learning(self, recluster: bool = False) -> dict[str, Any]:
        return self.request(
            "POST",
            "/v1/people/learn/rollback",  # type: ignore[no-any-return]
            json={"recluster": recluster},
        )

    def search(self, photo: str | Path, k: int = 10) -> dict[str, Any]:
        with open(photo, "rb") as fh:
            return self.request(
                "POST",
                "/v1/faces/search",
                data={"k": str(k)},  # type: ignore[no-any-return]
                files=[("photo", (Path(photo).name, fh))],
            )


def check_url(url: str) -> str:
    """The API address without a trailing slash; raises BadUrl unless it is an http(s) URL with a host."""
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise BadUrl(f"{url!r} is not a URL: give the API address like http://127.0.0.1:8787") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        hint = f"http://{url.strip()}" if "://" not in url else "http://host:port"
        raise BadUrl(f"{url!r} is not an http(s) URL: give the API address with its scheme, like {hint}")
    return url.strip().rstrip("/")


def _reason(exc: BaseException) -> str:
    """The root cause of a connection error in a few words (requests nests urllib3's errors deeply)."""
    text = str(exc)
    for needle, words in (
        ("Connection refused", "connection refused: is the server running?"),
        ("Name or service not known", "unknown host"),
        ("nodename nor servname", "unknown host"),
        ("Failed to resolve", "unknown host"),
        ("timed out", "timed out"),
        ("Network is unreachable", "network unreachable"),
        ("CERTIFICATE_VERIFY_FAILED", "TLS certificate not trusted"),
        ("Connection reset", "connection reset"),
    ):
        if needle in text:
            return words
    return type(exc).__name__


def _plan(plan: dict[str, Path], folder: Path, name: str) -> None:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not parts or name.startswith(("/", "\\")) or any(p in ("..", ".", "") or ":" in p for p in parts):
        raise DownloadError(
            f"the server named a file {name!r}, which is not a safe relative path: nothing was downloaded"
        )
    target = folder.joinpath(*parts)
    # case-insensitive disks (macOS, Windows) would put IMG.JPG and img.jpg in one file
    if any(str(other).casefold() == str(target).casefold() for other in plan.values()):
        raise DownloadError(
            f"two results of this job would both be written to {target}: nothing was downloaded (please report this)"
        )
    plan[name] = target
