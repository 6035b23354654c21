"""The built-in styles: index, name and a preview (rendered once per deployment by a style worker)."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify
from flask_openapi3 import APIBlueprint
from pydantic import ValidationError

from api.context import svc
from api.schemas import AUTH_ERRORS, StyleList
from storage import keys
from storage.errors import ObjectNotFound
from workers.contract import BUILTIN_STYLE_NAMES, StylePreviews

bp = APIBlueprint("styles", __name__, url_prefix="/v1", abp_responses=AUTH_ERRORS)


def _previews() -> StylePreviews | None:
    store = svc().store
    try:
        return StylePreviews.model_validate(store.get_json(keys.style_previews_index()))
    except (ObjectNotFound, ValidationError):
        return None


@bp.get("/styles", responses={200: StyleList})
def list_styles() -> Response:
    """Every built-in style; `thumbnail_url` is null until a style worker has rendered the previews."""
    store = svc().store
    previews = _previews()
    styles: list[dict[str, Any]] = []
    for index, name in enumerate(BUILTIN_STYLE_NAMES):
        key = previews.keys[index] if previews and index < len(previews.keys) else None
        styles.append({"index": index, "name": name, "thumbnail_url": store.presigned_get(key) if key else None})
    return jsonify(
        {
            "styles": styles,
            "previews": "ready" if previews else "pending",
            "sample": previews.sample if previews else None,
            "urls_expire_in_s": svc().settings.s3.presign_expiry_s,
        }
    )
