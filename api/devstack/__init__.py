"""The embedded local stack (no Docker): a Redis-compatible server, an S3 server, Celery workers and the API,
started as processes on loopback with their data, ports and credentials kept in one folder."""
