"""API keys (stored as SHA-256 hashes, each bound to a tenant) and per-key rate limits in Redis."""

from __future__ import annotations

import hashlib
import secrets
import time

import redis

from storage.keys import check_tenant
from storage.redisdb import RedisKeys, unavailable_on_error

KEY_PREFIX = "nsk_"


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


class ApiKeys:
    """Keys and rate limits; built by `RecordStore.apikeys` on its connection."""

    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self._r = client
        self.keys = keys

    def create(self, tenant: str, name: str = "") -> str:
        """Make a new key for a tenant; the plain key is returned once and never stored."""
        check_tenant(tenant)
        api_key = KEY_PREFIX + secrets.token_urlsafe(24)
        self.add(api_key, tenant, name)
        return api_key

    def add(self, api_key: str, tenant: str, name: str = "") -> None:
        """Register a key chosen elsewhere (e.g. the local stack's generated key)."""
        check_tenant(tenant)
        with unavailable_on_error():
            self._r.hset(
                self.keys.api_key(hash_key(api_key)),
                mapping={"tenant": tenant, "name": name, "created_at": time.time()},
            )

    def tenant_of(self, api_key: str) -> str | None:
        with unavailable_on_error():
            return self._r.hget(self.keys.api_key(hash_key(api_key)), "tenant")  # type: ignore[return-value]

    def revoke(self, api_key: str) -> bool:
        """Remove a key; True if it existed."""
        with unavailable_on_error():
            return bool(self._r.delete(self.keys.api_key(hash_key(api_key))))

    def hit(self, api_key: str, limit_per_minute: int) -> tuple[bool, int, int]:
        """Count a request in the current minute window: (allowed, remaining, seconds to reset)."""
        window = int(time.time() // 60)
        k = self.keys.rate(hash_key(api_key), window)
        with unavailable_on_error():
            pipe = self._r.pipeline(transaction=True)
            pipe.incr(k)
            pipe.expire(k, 120)
            count = int(pipe.execute()[0])
        reset = 60 - int(time.time()) % 60
        return count <= limit_per_minute, max(limit_per_minute - count, 0), reset
