"""A Python client for the Nightshift API (the CLI is built on it).

    from api.client import Client
    c = Client("http://127.0.0.1:8787", api_key)
    job = c.submit("style", files=["a.jpg"], params={"method": "builtin", "builtin": [7]})
    job = c.wait(job["id"], on_progress=print)
    c.download_results(job["id"], "out/")
"""

from __future__ import annotations

import json
import mimetypes
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import requests

FINISHED = {"succeeded", "failed", "cancelled", "partial"}


class ApiError(Exception):
    """An error answered by the API; carries its status, code, message and details."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.details = status, code, message, details


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
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"

    # -- plumbing ------------------------------------------------------------------------------
    def request(self, method: str, path: str, **kw: Any) -> Any:
        kw.setdefault("timeout", self.timeout)
        resp = self.session.request(method, self.url + path, **kw)
        if resp.status_code >= 400:
            try:
                err = resp.json()["error"]
            except (ValueError, KeyError, TypeError):
                err = {"code": "http_error", "message": resp.text[:500]}
            cls = _ERRORS.get(resp.status_code, ApiError)
            raise cls(resp.status_code, err.get("code", ""), err.get("message", ""), err.get("details"))
        return resp.json() if resp.content else None

    # -- jobs ----------------------------------------------------------------------------------
    def submit(self, kind: str, *, files: Sequence[str | Path] = (), styles: Sequence[str | Path] = (),
               archives: Sequence[str | Path] = (), params: dict[str, Any] | None = None,
               inputs: dict[str, Any] | None = None, label: str | None = None,
               idempotency_key: str | None = None,
               on_upload: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """Submit a job; local files are uploaded in the same request (multipart)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        if not (files or styles or archives):
            body = {"kind": kind, "params": params or {}, "inputs": inputs or {}}
            if label:
                body["label"] = label
            return self.request("POST", "/v1/jobs", json=body, headers=headers)  # type: ignore[no-any-return]
        with ExitStack() as stack:
            parts: list[tuple[str, Any]] = []
            for field, paths in (("files", files), ("style", styles), ("archive", archives)):
                for p in paths:
                    path = Path(p)
                    ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                    parts.append((field, (path.name, stack.enter_context(open(path, "rb")), ctype)))
            data = {"kind": kind, "params": json.dumps(params or {}), "inputs": json.dumps(inputs or {})}
            if label:
                data["label"] = label
            if on_upload:
                on_upload(len(parts), sum(Path(p).stat().st_size for p in [*files, *styles, *archives]))
            return self.request("POST", "/v1/jobs", data=data, files=parts,  # type: ignore[no-any-return]
                                headers=headers)

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

    def wait(self, job_id: str, *, timeout: float | None = None, poll: float = 0.5,
             on_progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
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
        dest.parent.mkdir(parents=True, exist_ok=True)
        with requests.get(url, stream=True, timeout=self.timeout) as resp:
            resp.raise_for_status()
            with open(dest, "wb") as fh:
                for block in resp.iter_content(1 << 20):
                    fh.write(block)
        return dest

    def download_results(self, job_id: str, folder: str | Path,
                         on_file: Callable[[Path], None] | None = None) -> list[Path]:
        """Download every output and job artefact of a job into `folder`."""
        folder = Path(folder)
        paths = []
        for item in self.results(job_id):
            for out in item["outputs"]:
                paths.append(self.download(out["url"], folder / out["name"]))
                if on_file:
                    on_file(paths[-1])
        for art in self.artifacts(job_id):
            paths.append(self.download(art["url"], folder / art["name"]))
            if on_file:
                on_file(paths[-1])
        return paths

    # -- uploads & health ---------------------------------------------------------------------
    def upload(self, path: str | Path) -> str:
        """Upload a large file straight to the store (presigned PUT); returns its key for `inputs`."""
        path = Path(path)
        grant = self.request("POST", "/v1/uploads", json={"names": [path.name]})["uploads"][0]
        with open(path, "rb") as fh:
            resp = requests.post(grant["url"], data=grant["fields"], files={"file": (path.name, fh)},
                                 timeout=max(self.timeout, 600))
        if resp.status_code >= 300:
            raise ApiError(resp.status_code, "upload_failed", resp.text[:300])
        return str(grant["key"])

    def ready(self) -> dict[str, Any]:
        return self.request("GET", "/readyz")  # type: ignore[no-any-return]

    # -- faces & people (present when the server has them) -------------------------------------
    def verify(self, a: str | Path, b: str | Path) -> dict[str, Any]:
        with open(a, "rb") as fa, open(b, "rb") as fb:
            return self.request("POST", "/v1/faces/verify",  # type: ignore[no-any-return]
                                files=[("a", (Path(a).name, fa)), ("b", (Path(b).name, fb))])

    def identify(self, photo: str | Path) -> dict[str, Any]:
        """Who is in a photo: each face with the library person it clearly is, or nobody."""
        with open(photo, "rb") as fh:
            return self.request("POST", "/v1/faces/identify",  # type: ignore[no-any-return]
                                files=[("photo", (Path(photo).name, fh))])

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
        return self.request("GET", f"/v1/people/{person_id}",  # type: ignore[no-any-return]
                            params={"offset": offset, "limit": limit})

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
        return self.request("POST", "/v1/people/merge",  # type: ignore[no-any-return]
                            json={"into": into, "from": other})

    def unassigned(self) -> Iterator[dict[str, Any]]:
        offset: int | None = 0
        while offset is not None:
            page = self.request("GET", "/v1/faces", params={"unassigned": "true", "offset": offset, "limit": 500})
            yield from page["faces"]
            offset = page.get("next_offset")

    def set_face_person(self, face_id: str, person_id: str | None) -> dict[str, Any]:
        """Say who a face is (None: not the person it is with now)."""
        return self.request("POST", f"/v1/faces/{face_id}/person",  # type: ignore[no-any-return]
                            json={"person": person_id})

    def recluster(self) -> dict[str, Any]:
        return self.request("POST", "/v1/people/recluster", json={})  # type: ignore[no-any-return]

    def learn(self, **params: Any) -> dict[str, Any]:
        """Start learning a head from the library's names (an `adapt` job)."""
        return self.request("POST", "/v1/people/learn", json=params)  # type: ignore[no-any-return]

    def learned(self) -> dict[str, Any]:
        return self.request("GET", "/v1/people/learn")  # type: ignore[no-any-return]

    def rollback_learning(self, recluster: bool = False) -> dict[str, Any]:
        return self.request("POST", "/v1/people/learn/rollback",  # type: ignore[no-any-return]
                            json={"recluster": recluster})

    def search(self, photo: str | Path, k: int = 10) -> dict[str, Any]:
        with open(photo, "rb") as fh:
            return self.request("POST", "/v1/faces/search", data={"k": str(k)},  # type: ignore[no-any-return]
                                files=[("photo", (Path(photo).name, fh))])
