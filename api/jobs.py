"""Jobs: submit (JSON or multipart), poll, list, cancel, results."""

from __future__ import annotations

import hashlib
import json
import time
from itertools import islice
from typing import Any

from flask import Response, jsonify, request, url_for
from flask_openapi3 import APIBlueprint
from pydantic import BaseModel, Field
from werkzeug.datastructures import FileStorage

from api.auth import tenant
from api.context import svc
from api.errors import (
    BadJson,
    BadRequest,
    Conflict,
    IdempotencyMismatch,
    InvalidRequest,
    PayloadTooLarge,
    TooManyFiles,
    UnsupportedMediaType,
)
from api.metrics_bp import JOBS_SUBMITTED
from api.models import check_runnable
from api.schemas import (
    AUTH_ERRORS,
    JobAnswer,
    JobList,
    JobPath,
    JobsQuery,
    ResultsPage,
    ResultsQuery,
    SubmitHeaders,
    components,
    errors,
    page_of,
    read_body,
)
from storage import keys
from storage.coordination import LockBusy
from storage.errors import ObjectNotFound, RecordNotFound
from storage.jobs import finalize_job
from storage.manifest import iter_manifest_items, read_manifest
from storage.names import FINISHED_STATES, JobKind, JobState
from storage.records import Item, Job, new_id, now
from workers.contract import (
    ARCHIVE_SUFFIXES,
    PHOTO_KINDS,
    ClusterParams,
    FacesParams,
    IdentifyParams,
    Inputs,
    JobRequest,
    StyleParams,
    is_video_name,
    parse_params,
)
from workers.dispatch import enqueue_chunks, enqueue_ingest

bp = APIBlueprint("jobs", __name__, url_prefix="/v1", abp_responses=AUTH_ERRORS)
VIDEO_UPLOAD_BASE = 800_000  # uploaded videos' input keys (photos count from 0, archives from 900,000)


class JobForm(BaseModel):
    """A job submitted as multipart/form-data: the fields of a JobRequest, and files."""

    kind: JobKind
    params: str = Field("", description="JSON object")
    inputs: str = Field("", description="JSON object")
    label: str = ""
    files: list[bytes] = Field([], description="photos and videos (archives too)")
    style: list[bytes] = Field([], description="style images")
    archive: list[bytes] = Field([], description=".zip or .tar(.gz) archives of photos")


# JobRequest.params is any object, read by the model of its kind (workers.contract.parse_params): document those
components(bp, StyleParams, FacesParams, IdentifyParams, ClusterParams)


def _json_field(form: Any, name: str, default: Any) -> Any:
    raw = form.get(name)
    if raw is None or raw == "":
        return default
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadJson(f"form field '{name}' is not valid JSON: {exc.msg} at position {exc.pos}") from None


def _read_request() -> tuple[dict[str, Any], list[FileStorage], list[FileStorage], list[FileStorage]]:
    """The job body plus uploaded photos, style images and archives."""
    ctype = request.mimetype
    if ctype == "application/json":
        limit = svc().settings.api.max_json_mb
        if (request.content_length or 0) > limit * 1024 * 1024:
            raise PayloadTooLarge(
                f"a JSON body is at most {limit} MB: name a prefix or upload an archive instead of listing every key"
            )
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise BadJson(
                'the body must be a JSON object like {"kind": "style", "params": {...}, "inputs": {"keys": [...]}}'
            )
        return body, [], [], []
    if ctype == "multipart/form-data":
        form = request.form
        body = {
            "kind": form.get("kind"),
            "params": _json_field(form, "params", {}),
            "inputs": _json_field(form, "inputs", {}),
        }
        if form.get("label"):
            body["label"] = form.get("label")
        if body["kind"] is None:
            raise InvalidRequest("kind: missing form field 'kind' (style or faces)")
        files = [f for f in request.files.getlist("files") if f.filename is not None]
        styles = [f for f in request.files.getlist("style") if f.filename is not None]
        archives = [f for f in request.files.getlist("archive") if f.filename is not None]
        for f in list(files):
            if f.filename and f.filename.lower().endswith(ARCHIVE_SUFFIXES):
                files.remove(f)
                archives.append(f)
        unknown = set(request.files) - {"files", "style", "archive"}
        if unknown:
            raise BadRequest(f"unknown file field(s) {sorted(unknown)}: use 'files', 'style' or 'archive'")
        return body, files, styles, archives
    raise UnsupportedMediaType("send application/json or multipart/form-data")


def _check_limits(files: list[FileStorage]) -> None:
    limit = svc().settings.api.max_files
    if len(files) > limit:
        raise TooManyFiles(
            f"{len(files)} files in one request; the limit is {limit}: upload an archive or use an object prefix"
        )


def _store_upload(key: str, f: FileStorage) -> None:
    stream = f.stream
    stream.seek(0, 2)
    size = stream.tell()
    stream.seek(0)
    svc().store.put_stream(key, stream, size, f.mimetype or "application/octet-stream")


def _job_response(job: Job, status: int = 200) -> tuple[Response, int]:
    body = job.to_public()
    frames = svc().records.progress(job.id)
    if frames:
        body["frames"] = frames  # video work counts frames: items (segments) are coarse
    body["links"] = {
        "self": url_for("jobs.get_job", job_id=job.id),
        "results": url_for("jobs.job_results", job_id=job.id),
        "cancel": url_for("jobs.cancel_job", job_id=job.id),
    }
    return jsonify(body), status


def _check_inputs(t: str, inputs: Inputs) -> None:
    """Every key a request names is resolved inside the caller's tenant (`keys.tenant_key`, the one resolver
    workers use too), so another tenant's key is just a missing name here. Named archives and the prefix
    must exist now: the answer is a 422 at submit, never a job that cannot end."""
    for rel in inputs.keys + inputs.videos:
        keys.relative(rel)
    store = svc().store
    missing = [rel for rel in inputs.archives if not store.exists(keys.tenant_key(t, rel))]
    if missing:
        raise InvalidRequest(f"inputs.archives: {missing[0]!r} not found in your storage", {"missing": missing[:100]})
    if inputs.prefix and next(store.list(keys.tenant_key(t, inputs.prefix)), None) is None:
        raise InvalidRequest(f"inputs.prefix: no objects under {inputs.prefix!r} in your storage")


def _check_refs(t: str, kind: JobKind, params: Any) -> None:
    """Objects and jobs a job depends on must exist now, so the error comes at submit time."""
    store, records = svc().store, svc().records
    for rel in getattr(params, "styles", []) or []:
        if not store.exists(keys.tenant_key(t, rel)):
            raise InvalidRequest(f"params.styles: style image {rel!r} not found in your storage")
    gallery = getattr(params, "gallery", None)
    if gallery and next(store.list(keys.gallery_prefix(t, keys.safe_name(gallery))), None) is None:
        raise InvalidRequest(f"params.gallery: gallery {gallery} not found")
    for job_id in getattr(params, "index_jobs", []) or []:
        try:
            ref = records.get_job(job_id, t)
        except RecordNotFound:
            raise InvalidRequest(f"params.index_jobs: job {job_id} not found") from None
        if ref.kind != JobKind.FACES:
            raise InvalidRequest(f"params.index_jobs: job {job_id} is a {ref.kind} job, not a faces index job")


@bp.post(
    "/jobs",
    summary="Submit a job (JSON referencing stored objects, or multipart with files)",
    responses={202: JobAnswer, **errors(400, 413, 415, 422)},
    openapi_extensions=read_body(bp, json=JobRequest, form=JobForm),
)
def submit_job(header: SubmitHeaders) -> tuple[Response, int]:
    t = tenant()
    s = svc()
    body, files, style_files, archives = _read_request()
    _check_limits(files)
    req = JobRequest.model_validate(body)
    idem = header.idempotency_key
    job_id = new_id("j")
    if idem:
        fingerprint = _fingerprint(
            req,
            [("files", f) for f in files] + [("style", f) for f in style_files] + [("archive", f) for f in archives],
        )
        winner, bound = s.records.claim_idempotency(t, idem, job_id, fingerprint)
        if bound != fingerprint:
            raise IdempotencyMismatch(
                "this Idempotency-Key was already used with a different request: use a new key for a new job"
            )
        if winner != job_id:
            return _replay(t, winner)
    try:
        return _create(t, job_id, req, files, style_files, archives)
    except BaseException:
        if idem:
            s.records.release_idempotency(t, idem)
        raise


def _fingerprint(req: JobRequest, uploads: list[tuple[str, FileStorage]]) -> str:
    """What makes two submissions the same request: the body and the uploaded files' names and sizes."""
    digest = hashlib.sha256(req.model_dump_json().encode())
    for field, f in uploads:
        stream = f.stream
        stream.seek(0, 2)
        digest.update(json.dumps([field, f.filename, stream.tell()]).encode())
        stream.seek(0)
    return digest.hexdigest()


def _replay(t: str, job_id: str) -> tuple[Response, int]:
    """Answer a repeated submission with the job of its first submission."""
    deadline = now() + 10
    while True:
        try:
            resp, status = _job_response(svc().records.get_job(job_id, t), 202)
            break
        except RecordNotFound:
            if now() > deadline:
                raise Conflict("a submission with this Idempotency-Key is still being created; retry shortly") from None
            time.sleep(0.1)
    resp.headers["Idempotent-Replayed"] = "true"
    resp.headers["Location"] = url_for("jobs.get_job", job_id=job_id)
    return resp, status


def _create(
    t: str,
    job_id: str,
    req: JobRequest,
    files: list[FileStorage],
    style_files: list[FileStorage],
    archives: list[FileStorage],
) -> tuple[Response, int]:
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
    _check_inputs(t, inputs)
    items: list[Item] = []
    if req.kind in PHOTO_KINDS:
        # videos are probed and planned by ingest (a worker): one may become several items
        photo_keys = [rel for rel in inputs.keys if not is_video_name(rel)]
        videos = list(inputs.videos) + [rel for rel in inputs.keys if is_video_name(rel)]
        items = [Item(i, rel, keys.tenant_key(t, rel)) for i, rel in enumerate(photo_keys)]
        for f in files:
            if is_video_name(f.filename or ""):
                key = keys.job_input(t, job_id, VIDEO_UPLOAD_BASE + len(videos), f.filename or "video.mp4")
                _store_upload(key, f)
                videos.append(keys.strip_tenant(t, key))
                continue
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
        inputs = Inputs(keys=photo_keys, prefix=inputs.prefix, archives=archive_keys, videos=videos)
        if inputs.empty and not items:
            raise InvalidRequest(
                "inputs: no photos: upload 'files', an 'archive', or give inputs.keys / inputs.prefix / inputs.archives"
            )
    else:
        items = [Item(0, str(req.kind), "")]
    needs_ingest = bool(inputs.prefix or inputs.archives or inputs.videos)
    # the record keeps what ingest needs; named keys are already items (a 100,000-key body stays out of it)
    job = Job(
        id=job_id,
        kind=req.kind,
        tenant=t,
        state=JobState.QUEUED,
        params=params.model_dump(mode="json"),
        inputs=inputs.model_dump(mode="json", exclude={"keys"}),
        label=req.label,
        created_at=now(),
        ingested=not needs_ingest,
    )
    s.records.create_job(job, items)
    if items:
        enqueue_chunks(s.celery, job_id, req.kind, [it.index for it in items], s.settings.worker.chunk_size)
    if needs_ingest:
        enqueue_ingest(s.celery, job_id, req.kind)
    JOBS_SUBMITTED.labels(kind=str(req.kind)).inc()
    resp, status = _job_response(s.records.get_job(job_id), 202)
    resp.headers["Location"] = url_for("jobs.get_job", job_id=job_id)
    return resp, status


def submit_internal(kind: JobKind, params: dict[str, Any], label: str | None = None) -> tuple[Response, int]:
    """Submit a job of a kind that takes no photos (a re-cluster, an identification) on the caller's behalf."""
    req = JobRequest(kind=kind, params=params, label=label)
    return _create(tenant(), new_id("j"), req, [], [], [])


@bp.get(
    "/jobs/<job:job_id>", summary="A job's state, counts, throughput, ETA", responses={200: JobAnswer, **errors(404)}
)
def get_job(path: JobPath) -> tuple[Response, int]:
    t = tenant()
    try:
        job = svc().records.get_job(path.job_id, t)
    except RecordNotFound:
        job = _job_from_manifest(t, path.job_id)
    return _job_response(job)


def _job_from_manifest(t: str, job_id: str) -> Job:
    """A job whose Redis record expired still answers from its manifest."""
    try:
        return read_manifest(svc().store, t, job_id).to_job()
    except ObjectNotFound:
        raise RecordNotFound(f"job {job_id} not found") from None


@bp.get("/jobs", summary="List jobs, newest first", responses={200: JobList, **errors(400)})
def list_jobs(query: JobsQuery) -> Response:
    jobs = svc().records.list_jobs(tenant(), state=query.state, kind=query.kind, limit=query.limit, before=query.before)
    body: dict[str, Any] = {"jobs": [j.to_public() for j in jobs]}
    body["next_before"] = jobs[-1].created_at if len(jobs) == query.limit else None
    return jsonify(body)


@bp.post(
    "/jobs/<job:job_id>/cancel",
    summary="Cancel (cooperative, between batches)",
    responses={202: JobAnswer, **errors(404, 409)},
)
def cancel_job(path: JobPath) -> tuple[Response, int]:
    """Cancel: items nobody has started end now; running ones end at the worker's next check. A job with
    no running work ends at once (a worker that holds items ends it when they stop)."""
    job_id = path.job_id
    records = svc().records
    job = records.get_job(job_id, tenant())
    if job.state in FINISHED_STATES:
        raise Conflict(f"job {job_id} already finished ({job.state})")
    records.request_cancel(job_id)
    records.cancel_pending_items(job_id)
    try:
        finalize_job(records, svc().store, job_id)
    except LockBusy:
        pass  # a worker is ending it right now
    return _job_response(records.get_job(job_id), 202)


def _output_entry(t: str, key: str, name: str | None = None) -> dict[str, Any]:
    """A stored object as a client sees it: key, name (a relative path to download it to), presigned URL."""
    return {
        "key": keys.strip_tenant(t, key),
        "name": name or key.rsplit("/", 1)[-1],
        "url": svc().store.presigned_get(key),
    }


@bp.get(
    "/jobs/<job:job_id>/results",
    summary="Items with presigned URLs of their outputs (paginated)",
    responses={200: ResultsPage, **errors(400, 404)},
)
def job_results(path: JobPath, query: ResultsQuery) -> Response:
    t, job_id = tenant(), path.job_id
    (offset, limit), state = page_of(query), query.state
    job, items = _items_page(t, job_id, offset, limit)
    end = min(offset + limit, job.total)
    out = []
    for it in items:
        if state and it.state != state:
            continue
        out.append(
            {
                "index": it.index,
                "name": it.name,
                "state": str(it.state),
                "error": it.error,
                "error_code": it.error_code,
                "attempts": it.attempts,
                "info": it.info,
                "input": _output_entry(t, it.key, it.name) if it.key else None,
                "outputs": [_output_entry(t, k, keys.output_name(_output_stem(it), k)) for k in it.outputs],
            }
        )
    artifacts = []
    videos = []
    if job.state in FINISHED_STATES:
        artifacts.append(_output_entry(t, keys.manifest(t, job_id)))
        for rel in job.extra.get("artifacts", []):
            artifacts.append(_output_entry(t, keys.tenant_key(t, rel)))
        videos = [_video_links(t, v) for v in job.extra.get("videos", []) if isinstance(v, dict)]
    # the page refreshes links before they expire (they are presigned for this long)
    return jsonify(
        {
            "job": job.to_public(),
            "items": out,
            "artifacts": artifacts,
            "videos": videos,
            "offset": offset,
            "limit": limit,
            "next_offset": end if end < job.total else None,
            "urls_expire_in_s": svc().settings.s3.presign_expiry_s,
        }
    )


def _output_stem(item: Item) -> str:
    """What an item's outputs are named after: its name, or for a segment of a video the video's name
    (``clip.mp4 [1/3]`` has the joined ``clip__<variant>.mp4``)."""
    return keys.video_name(item.name) if keys.is_video_segment(item.key) else item.name


def _video_links(t: str, video: dict[str, Any]) -> dict[str, Any]:
    """Links for a style job's video on the job page (the original beside each stylized version). Not files to
    download: the outputs are their items' outputs already, and the original is the user's own file."""
    name = str(video.get("name", ""))
    source = video.get("source")
    return {
        "video": video.get("video"),
        "name": name,
        "source": _output_entry(t, keys.tenant_key(t, source), name) if source else None,
        "outputs": [
            {"variant": o.get("variant"), **_output_entry(t, keys.tenant_key(t, o["key"]))}
            for o in video.get("outputs") or []
            if isinstance(o, dict) and o.get("key")
        ],
    }


def _items_page(t: str, job_id: str, offset: int, limit: int) -> tuple[Job, list[Item]]:
    """A page of a job's items: from Redis, or from the manifest's items.jsonl once the records expired."""
    records = svc().records
    try:
        job = records.get_job(job_id, t)
    except RecordNotFound:
        try:
            manifest = read_manifest(svc().store, t, job_id)
        except ObjectNotFound:
            raise RecordNotFound(f"job {job_id} not found") from None
        page = list(islice(iter_manifest_items(svc().store, t, manifest), offset, offset + limit))
        return manifest.to_job(), page
    end = min(offset + limit, job.total)
    return job, records.get_items(job_id, range(offset, end)) if offset < job.total else []
