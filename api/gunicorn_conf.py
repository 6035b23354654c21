"""gunicorn settings for the API in production: `gunicorn -c python:api.gunicorn_conf api.wsgi:app`.

gevent workers: each connection is a greenlet, so slow clients (a slow upload, a slowloris holding
half-sent headers) cost memory, not a worker. Sync workers were starved by 8 slow connections; the
API also waits on Redis, S3 and, for verify/search, up to `api.sync_timeout_s` on a faces worker.
"""

import os

bind = os.environ.get("NIGHTSHIFT_API_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("NIGHTSHIFT_API_WORKERS", "4"))
worker_class = "gevent"
worker_connections = 1000
timeout = 120  # a worker silent this long is restarted (gevent workers heartbeat while greenlets wait)
graceful_timeout = 30
keepalive = 5
limit_request_line = 8190
limit_request_fields = 100
