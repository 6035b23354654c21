"""The web page: one HTML shell, plain CSS and vanilla JS modules, no build step and no CDN.

The page talks to the same /v1 API as every other client, with the key the user gives it; these routes
are public (see api.auth.PUBLIC_PATHS) because they serve nothing but the page itself.
"""

from __future__ import annotations

from flask import Blueprint, Response, redirect, render_template, url_for

bp = Blueprint("web", __name__, static_folder="static", static_url_path="/ui/static", template_folder="templates")

# Presigned S3 URLs live on another host, hence http:/https: for images and videos; everything else is same-origin.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob: http: https:",
        "media-src 'self' blob: http: https:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


@bp.after_request
def _security_headers(resp: Response) -> Response:
    resp.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "no-referrer"
    resp.headers["X-Frame-Options"] = "DENY"
    return resp


@bp.get("/")
def root() -> Response:
    """The site root is the page."""
    return redirect(url_for("web.page"))  # type: ignore[return-value]


@bp.get("/ui")
@bp.get("/ui/<path:path>")
def page(path: str = "") -> Response:
    """The single-page app; its views are hash routes (#/jobs, #/submit, #/people), so any path serves it."""
    resp = Response(render_template("app.html"), mimetype="text/html")
    resp.headers["Cache-Control"] = "no-cache"
    return resp
