"""API-key authentication (hashed keys bound to a tenant) and per-key rate limits."""

from __future__ import annotations

from flask import Flask, Response, g, request

from api.context import svc
from api.errors import RateLimited, Unauthorized
from storage.apikeys import ApiKeys

PUBLIC_PATHS = ("/healthz", "/readyz", "/openapi.json", "/metrics", "/docs", "/ui", "/static", "/favicon.ico")


def api_key_from_request() -> str | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return request.headers.get("X-API-Key") or None


def install_auth(app: Flask) -> None:
    @app.before_request
    def _authenticate() -> None:
        if request.path == "/" or request.path.startswith(PUBLIC_PATHS) or request.method == "OPTIONS":
            return
        key = api_key_from_request()
        if not key:
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        keys: ApiKeys = svc().apikeys
        tenant = keys.tenant_of(key)
        if tenant is None:
            raise Unauthorized("unknown or revoked API key")
        limit = svc().settings.api.rate_limit_per_minute
        allowed, remaining, reset = keys.hit(key, limit)
        g.rate = (limit, remaining, reset)
        if not allowed:
            raise RateLimited(
                f"more than {limit} requests per minute for this key; retry in {reset}s",
                headers={"Retry-After": str(reset)},
            )
        g.tenant = tenant

    @app.after_request
    def _rate_headers(resp: Response) -> Response:
        rate = g.get("rate")
        if rate:
            resp.headers["X-RateLimit-Limit"] = str(rate[0])
            resp.headers["X-RateLimit-Remaining"] = str(rate[1])
        return resp


def tenant() -> str:
    return str(g.tenant)
