"""Presigned uploads (POST forms with a size cap), so large archives go straight to the store, not through the API."""

from __future__ import annotations

from typing import Annotated

from flask import Response, jsonify
from flask_openapi3 import APIBlueprint
from pydantic import BaseModel, ConfigDict, Field

from api.auth import tenant
from api.context import svc
from api.schemas import AUTH_ERRORS, Answer, errors
from storage import keys
from storage.records import new_id


class UploadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    names: list[Annotated[str, Field(min_length=1, max_length=255)]] = Field(
        min_length=1, max_length=1000, description="file names to upload"
    )


bp = APIBlueprint("uploads", __name__, url_prefix="/v1", abp_responses=AUTH_ERRORS)


@bp.post("/uploads", summary="Presigned POST forms for large uploads", responses={201: Answer, **errors(400, 422)})
def create_uploads(body: UploadRequest) -> tuple[Response, int]:
    ctx = svc()
    t = tenant()
    upload_id = new_id("u")
    expiry = ctx.settings.s3.presign_expiry_s
    limit = ctx.settings.worker.max_archive_bytes  # nothing bigger could be used as an input anyway
    out = []
    for index, name in enumerate(body.names):
        key = keys.upload(t, upload_id, index, name)
        url, fields = ctx.store.presigned_post(key, limit)
        out.append(
            {
                "name": name,
                "key": keys.strip_tenant(t, key),
                "method": "POST",
                "url": url,
                "fields": fields,
                "max_bytes": limit,
                "expires_in": expiry,
            }
        )
    return jsonify(
        {
            "upload_id": upload_id,
            "uploads": out,
            "next": "POST each file as multipart form data to its url (its fields first, the file last "
            "in a field named 'file'), then POST /v1/jobs with inputs.keys or inputs.archives "
            f"(or inputs.prefix 'uploads/{upload_id}/')",
        }
    ), 201
