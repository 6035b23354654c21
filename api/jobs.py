"""Jobs: submit (JSON or multipart), poll, list, cancel, results."""

from __future__ import annotations

import json
import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, url_for
from werkzeug.datastructures import FileStorage

from api.auth import tenant
from api.errors import ApiError
from api.metrics_bp import JOBS_SUBMITTED
from api.models import check_runnable
from storage import keys
from storage.errors import ObjectNotFound, RecordNotFound
from storage.names import FINISHED_STATES, ItemState, JobKind, JobState
from storage.records import Item, Job, new_id, now
from workers.contract import PHOTO_KINDS, Inputs, JobRequest, parse_params
from workers.dispatch import enqueue_chunks, enqueue_ingest

bp = Blueprint("jobs", __name__, url_prefix="/v1")
ARCHIVE_TYPES = ("application/zip", "application/x-zip-compressed", "application/x-tar", "application/gzip",
                 "application/x-gtar", "application/x-gzip")
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tar.xz")


def svc() -> Any:
    return current_app.extensions["nightshift"]


def _json_field(form: Any, name: str, default: Any) -> Any:
    raw = form.get(name)
    if raw is None or raw == "":
        return default
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ApiError(400, "bad_json", f"form field '{name}' is not valid JSON: {exc.msg} at position {exc.pos}") \
            from None


def _read_request() -> tuple[dict[str, Any], list[FileStorage], list[FileStorage], list[FileStorage]]:
    """The job body plus uploaded photos, style images and archives."""
    ctype = request.mimetype
    if ctype == "application/json":
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise ApiError(400, "bad_json", "the body must be a JSON object like "
                           '{"kind": "style", "params": {...}, "inputs": {"keys": [...]}}')
        return body, [], [], []
    if ctype == "multipart/form-data":
        form = request.form
        body = {"kind": form.get("kind"), "params": _json_field(form, "params", {}),
                "inputs": _json_field(form, "inputs", {})}
        if form.get("label"):
            body["label"] = form.get("label")
        if body["kind"] is None:
            raise ApiError(422, "invalid_request", "kind: missing form field 'kind' (style or faces)")
        files = [f for f in request.files.getlist("files") if f.filename is not None]
        styles = [f for f in request.files.getlist("style") if f.filename is not None]
        archives = [f for f in request.files.getlist("archive") if f.filename is not None]
        for f in list(files):
            if f.filename and f.filename.lower().endswith(ARCHIVE_SUFFIXES):
                files.remove(f)
                archives.append(f)
        unknown = set(request.files) - {"files", "style", "archive"}
        if unknown:
            raise ApiError(400, "bad_request", f"unknown file field(s) {sorted(unknown)}: use 'files', 'style' "
                           "or 'archive'")
        return body, files, styles, archives
    raise ApiError(415, "unsupported_media_type", "send application/json or multipart/form-data")


def _check_limits(files: list[FileStorage]) -> None:
    limit = svc().settings.api.max_files
    if len(files) > limit:
        raise ApiError(413, "too_many_files", f"{len(files)} files in one request; the limit is {limit}: "
                       "upload an archive or use an object prefix")


def _store_upload(key: str, f: FileStorage) -> None:
    stream = f.stream
    stream.seek(0, 2)
    size = stream.tell()
    stream.seek(0)
    svc().store.put_stream(key, stream, size, f.mimetype or "application/octet-stream")


def _job_response(job: Job, status: int = 200) -> tuple[Response, int]:
    body = job.to_public()
    body["links"] = {"self": url_for("jobs.get_job", job_id=job.id),
                     "results": url_for("jobs.job_results", job_id=job.id),
                     "cancel": url_for("jobs.cancel_job", job_id=job.id)}
    return jsonify(body), status


def _check_refs(t: str, kind: JobKind, params: Any) -> None:
    """Objects and jobs a job depends on must exist now, so the error comes at submit time."""
    store, records = svc().store, svc().records
    for rel in getattr(params, "styles", []) or []:
        if not store.exists(keys.tenant_key(t, rel)):
            raise ApiError(422, "invalid_request", f"params.styles: style image {rel!r} not found in your storage")
    for job_id in getattr(params, "index_jobs", []) or []:
        try:
            ref = records.get_job(job_id, t)
        except RecordNotFound:
            raise ApiError(422, "invalid_request", f"params.index_jobs: job {job_id} not found") from None
        if ref.kind != JobKind.FACES:
            raise ApiError(422, "invalid_request", f"params.index_jobs: job {job_id} is a {ref.kind} job, "
                           "not a faces index job")


@bp.post("/jobs")
def submit_job() -> tuple[Response, int]:
    t = tenant()
    s = svc()
    body, files, style_files, archives = _read_request()
    _check_limits(files)
    req = JobRequest.model_validate(body)
    idem = request.headers.get("Idempotency-Key")
    if idem is not None and not 1 <= len(idem) <= 200:
        raise ApiError(400, "bad_request", "Idempotency-Key must be 1 to 200 characters")
    job_id = new_id("j")
    if idem and (winner := s.records.claim_idempotency(t, idem, job_id)) != job_id:
        return _replay(t, winner)
    try:
        return _create(t, job_id, req, files, style_files, archives)
    except BaseException:
        if idem:
            s.records.release_idempotency(t, idem)
        raise


def _replay(t: str, job_id: str) -> tuple[Response, int]:
    """Answer a repeated submission with the job of its first submission."""
    deadline = now() + 10
    while True:
        try:
            resp, status = _job_response(svc().records.get_job(job_id, t), 202)
            break
        except RecordNotFound:
            if now() > deadline:
                raise ApiError(409, "conflict", "a submission with this Idempotency-Key is still being created; "
                               "retry shortly") from None
            time.sleep(0.1)
    resp.headers["Idempotent-Replayed"] = "true"
    resp.headers["Location"] = url_for("jobs.get_job", job_id=job_id)
    return resp, status


def _create(t: str, job_id: str, req: JobRequest, files: list[FileStorage], style_files: list[FileStorage],
            archives: list[FileStorage]) -> tuple[Response, int]:
    s = svc()
    style_keys = []
    for n, f in enumerate(style_files):
        key = keys.job_input(t, job_id, n, "style-" + (f.filename or "style.jpg"))
        _store_upload(key, f)
        style_keys.append(keys.strip_tenant(t, key))
    params_in = dict(req.params)
    if style_keys:
        params_in["styles"] = list(params_in.get("styles", [])) + style_keys
    params = parse_params(req.kind, params_in)
    _check_refs(t, req.kind, params)
    check_runnable(req.kind, params)
    inputs = req.inputs
    for rel in inputs.keys + inputs.archives + ([inputs.prefix] if inputs.prefix else []):
        keys.relative(rel)
    items: list[Item] = []
    if req.kind in PHOTO_KINDS:
        items = [Item(i, rel, keys.tenant_key(t, rel)) for i, rel in enumerate(inputs.keys)]
        for f in files:
            index = len(items)
            name = f.filename or f"file-{index}"
            key = keys.job_input(t, job_id, index, name)
            _store_upload(key, f)
            items.append(Item(index, name, key))
        archive_keys = list(inputs.archives)
        for n, f in enumerate(archives):
            key = keys.job_input(t, job_id, 900_000 + n, f.filename or "archive.zip")
            _store_upload(key, f)
            archive_keys.append(keys.strip_tenant(t, key))
        inputs = Inputs(keys=inputs.keys, prefix=inputs.prefix, archives=archive_keys)
        if inputs.empty and not items:
            raise ApiError(422, "invalid_request", "inputs: no photos: upload 'files', an 'archive', or give "
                           "inputs.keys / inputs.prefix / inputs.archives")
    else:
        items = [Item(0, str(req.kind), "")]
    needs_ingest = bool(inputs.prefix or inputs.archives)
    job = Job(id=job_id, kind=req.kind, tenant=t, state=JobState.QUEUED,
              params=params.model_dump(mode="json"), inputs=inputs.model_dump(mode="json"), label=req.label,
              created_at=now(), ingested=not needs_ingest)
    s.records.create_job(job, items)
    s.records.set_job_fields(job_id, enqueued=len(items))
    if items:
        enqueue_chunks(s.celery, job_id, req.kind, [it.index for it in items], s.settings.worker.chunk_size)
    if needs_ingest:
        enqueue_ingest(s.celery, job_id, req.kind)
    JOBS_SUBMITTED.labels(kind=str(req.kind)).inc()
    resp, status = _job_response(s.records.get_job(job_id), 202)
    resp.headers["Location"] = url_for("jobs.get_job", job_id=job_id)
    return resp, status


@bp.get("/jobs/<job_id>")
def get_job(job_id: str) -> tuple[Response, int]:
    t = tenant()
    try:
        job = svc().records.get_job(job_id, t)
    except RecordNotFound:
        job = _job_from_manifest(t, job_id)
    return _job_response(job)


def _job_from_manifest(t: str, job_id: str) -> Job:
    """A job whose Redis record expired still answers from its manifest."""
    try:
        m = svc().store.get_json(keys.manifest(t, job_id))
    except (ObjectNotFound, keys.BadKey):
        raise RecordNotFound(f"job {job_id} not found") from None
    c = m.get("counts", {})
    return Job(id=job_id, kind=JobKind(m["kind"]), tenant=t, state=JobState(m["state"]), params=m.get("params", {}),
               inputs={}, label=m.get("label"), created_at=m.get("created_at") or 0, started_at=m.get("started_at"),
               finished_at=m.get("finished_at"), total=c.get("total", 0), done=c.get("done", 0),
               failed=c.get("failed", 0), skipped=c.get("skipped", 0), cancelled=c.get("cancelled", 0),
               ingested=True, error=m.get("error"), extra=m.get("summary") or {})


def _int_arg(name: str, default: int, lo: int, hi: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "bad_request", f"query parameter '{name}' must be an integer") from None
    if not lo <= value <= hi:
        raise ApiError(400, "bad_request", f"query parameter '{name}' must be between {lo} and {hi}")
    return value


@bp.get("/jobs")
def list_jobs() -> Response:
    state = request.args.get("state")
    if state is not None and state not in {s.value for s in JobState}:
        raise ApiError(400, "bad_request", f"state must be one of {[s.value for s in JobState]}")
    kind = request.args.get("kind")
    if kind is not None and kind not in {k.value for k in JobKind}:
        raise ApiError(400, "bad_request", f"kind must be one of {[k.value for k in JobKind]}")
    limit = _int_arg("limit", 50, 1, 500)
    before_raw = request.args.get("before")
    try:
        before = float(before_raw) if before_raw is not None else None
    except ValueError:
        raise ApiError(400, "bad_request", "query parameter 'before' must be a number (next_before)") from None
    jobs = svc().records.list_jobs(tenant(), state=state, kind=kind, limit=limit, before=before)
    body: dict[str, Any] = {"jobs": [j.to_public() for j in jobs]}
    body["next_before"] = jobs[-1].created_at if len(jobs) == limit else None
    return jsonify(body)


@bp.post("/jobs/<job_id>/cancel")
def cancel_job(job_id: str) -> tuple[Response, int]:
    records = svc().records
    job = records.get_job(job_id, tenant())
    if job.state in FINISHED_STATES:
        raise ApiError(409, "conflict", f"job {job_id} already finished ({job.state})")
    records.request_cancel(job_id)
    return _job_response(records.get_job(job_id), 202)


def _output_entry(t: str, key: str, name: str | None = None) -> dict[str, Any]:
    """A stored object as a client sees it: key, name (a relative path to download it to), presigned URL."""
    return {"key": keys.strip_tenant(t, key), "name": name or key.rsplit("/", 1)[-1],
            "url": svc().store.presigned_get(key)}


@bp.get("/jobs/<job_id>/results")
def job_results(job_id: str) -> Response:
    t = tenant()
    records = svc().records
    job = records.get_job(job_id, t)
    offset = _int_arg("offset", 0, 0, 10**9)
    limit = _int_arg("limit", 100, 1, svc().settings.api.page_size_max)
    state = request.args.get("state")
    if state is not None and state not in {s.value for s in ItemState}:
        raise ApiError(400, "bad_request", f"state must be one of {[s.value for s in ItemState]}")
    end = min(offset + limit, job.total)
    items = records.get_items(job_id, range(offset, end)) if offset < job.total else []
    out = []
    for it in items:
        if state and it.state != state:
            continue
        out.append({"index": it.index, "name": it.name, "state": str(it.state), "error": it.error,
                    "attempts": it.attempts, "info": it.info,
                    "input": _output_entry(t, it.key, it.name) if it.key else None,
                    "outputs": [_output_entry(t, k, keys.output_name(it.name, k)) for k in it.outputs]})
    artifacts = []
    if job.state in FINISHED_STATES:
        for key in [keys.manifest(t, job_id)] + list(job.extra.get("artifacts", [])):
            artifacts.append(_output_entry(t, key if key.startswith("t/") else keys.tenant_key(t, key)))
    # the page refreshes links before they expire (they are presigned for this long)
    return jsonify({"job": job.to_public(), "items": out, "artifacts": artifacts, "offset": offset,
                    "limit": limit, "next_offset": end if end < job.total else None,
                    "urls_expire_in_s": svc().settings.s3.presign_expiry_s})

