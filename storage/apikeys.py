"""API keys (stored as SHA-256 hashes, each bound to a tenant) and per-key rate limits in Redis."""

from __future__ import annotations

import hashlib
import secrets
import time

import redis

from storage.errors import StoreUnavailable
from storage.keys import check_tenant

KEY_PREFIX = "nsk_"


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


class ApiKeys:
    def __init__(self, client: redis.Redis, prefix: str = "ns") -> None:
        self.r = client
        self.p = prefix

    def create(self, tenant: str, name: str = "") -> str:
        """Make a new key for a tenant; the plain key is returned once and never stored."""
        check_tenant(tenant)
        api_key = KEY_PREFIX + secrets.token_urlsafe(24)
        self.add(api_key, tenant, name)
        return api_key

    def add(self, api_key: str, tenant: str, name: str = "") -> None:
        """Register a key chosen elsewhere (e.g. the local stack's generated key)."""
        check_tenant(tenant)
        try:
            self.r.hset(f"{self.p}:apikey:{hash_key(api_key)}", mapping={"tenant": tenant, "name": name,
                                                                         "created_at": time.time()})
        except redis.RedisError as exc:
            raise StoreUnavailable(f"redis unreachable: {type(exc).__name__}") from exc

    def tenant_of(self, api_key: str) -> str | None:
        try:
            return self.r.hget(f"{self.p}:apikey:{hash_key(api_key)}", "tenant")  # type: ignore[return-value]
        except redis.RedisError as exc:
            raise StoreUnavailable(f"redis unreachable: {type(exc).__name__}") from exc

    def revoke(self, api_key: str) -> bool:
        return bool(self.r.delete(f"{self.p}:apikey:{hash_key(api_key)}"))

    def hit(self, api_key: str, limit_per_minute: int) -> tuple[bool, int, int]:
        """Count a request in the current minute window: (allowed, remaining, seconds to reset)."""
        window = int(time.time() // 60)
        k = f"{self.p}:rate:{hash_key(api_key)[:32]}:{window}"
        try:
            pipe = self.r.pipeline(transaction=True)
            pipe.incr(k)
            pipe.expire(k, 120)
            count = int(pipe.execute()[0])
        except redis.RedisError as exc:
            raise StoreUnavailable(f"redis unreachable: {type(exc).__name__}") from exc
        reset = 60 - int(time.time()) % 60
        return count <= limit_per_minute, max(limit_per_minute - count, 0), reset
