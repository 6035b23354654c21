"""The production compose file, checked by parsing it (Docker is not available here)."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def load() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_present() -> None:
    services = load()["services"]
    assert {"redis", "minio", "minio-init", "api", "worker-style", "worker-faces", "flower"} <= set(services)


def test_redis_is_durable_and_never_evicts() -> None:
    cmd = " ".join(load()["services"]["redis"]["command"])
    assert "--appendonly yes" in cmd and "--appendfsync everysec" in cmd
    assert "--maxmemory-policy noeviction" in cmd
    assert any(v.endswith(":/data") for v in load()["services"]["redis"]["volumes"])


def test_workers_reserve_a_gpu_each_and_run_one_process_per_gpu() -> None:
    services = load()["services"]
    for name, queue in (("worker-style", "style"), ("worker-faces", "faces")):
        svc = services[name]
        devices = svc["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
        cmd = svc["command"]
        assert cmd[cmd.index("-Q") + 1] == queue
        assert cmd[cmd.index("-c") + 1] == "1"


def test_env_points_at_internal_services_and_public_endpoint_for_presigning() -> None:
    services = load()["services"]
    for name in ("api", "worker-style", "worker-faces"):
        env = services[name]["environment"]
        assert env["NIGHTSHIFT_REDIS_URL"].startswith("redis://:${REDIS_PASSWORD")
        assert env["NIGHTSHIFT_REDIS_URL"].endswith("@redis:6379/0")
        assert env["NIGHTSHIFT_S3__ENDPOINT"] == "minio:9000"
        assert "NIGHTSHIFT_S3__PUBLIC_ENDPOINT" in env
        assert env["NIGHTSHIFT_S3__SECRET_KEY"].startswith("${")  # never a literal secret
        assert "MINIO_ROOT" not in env["NIGHTSHIFT_S3__ACCESS_KEY"] + env["NIGHTSHIFT_S3__SECRET_KEY"]


def test_api_runs_under_gunicorn_and_bucket_is_initialised() -> None:
    services = load()["services"]
    cmd = services["api"]["command"]
    assert cmd[0] == "gunicorn" and "api.wsgi:app" in cmd
    assert cmd[cmd.index("-c") + 1] == "python:api.gunicorn_conf"
    from api import gunicorn_conf

    assert gunicorn_conf.worker_class == "gevent"  # slow clients cost greenlets, not workers
    init = " ".join(services["minio-init"]["command"])
    assert "mc mb" in init and "mc admin user add" in init and "arn:aws:s3:::nightshift/*" in init
    assert services["api"]["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"


def test_volumes_declared() -> None:
    doc = load()
    assert {"redis-data", "minio-data"} <= set(doc["volumes"])
    assert any(v.startswith("minio-data:") for v in doc["services"]["minio"]["volumes"])


def test_env_names_match_settings() -> None:
    """Every NIGHTSHIFT_ variable in the compose file is a real setting (a typo would be silently ignored)."""
    import os

    from storage.config import Settings

    env = load()["services"]["worker-style"]["environment"]
    names = {k: "x" for k in env}
    old = dict(os.environ)
    try:
        os.environ.update(
            {
                k: v
                for k, v in {
                    "NIGHTSHIFT_REDIS_URL": "redis://redis:6379/0",
                    "NIGHTSHIFT_S3__ENDPOINT": "minio:9000",
                    "NIGHTSHIFT_S3__PUBLIC_ENDPOINT": "example:9000",
                    "NIGHTSHIFT_S3__ACCESS_KEY": "a",
                    "NIGHTSHIFT_S3__SECRET_KEY": "b",
                    "NIGHTSHIFT_S3__BUCKET": "nightshift",
                    "NIGHTSHIFT_WORKER__DEVICE": "auto",
                    "NIGHTSHIFT_WORKER__BATCH_SIZE": "8",
                }.items()
                if k in names
            }
        )
        s = Settings()
        assert s.s3.public_endpoint == "example:9000" and s.worker.batch_size == 8
    finally:
        os.environ.clear()
        os.environ.update(old)


def test_operator_ports_are_local_and_guarded() -> None:
    services = load()["services"]
    assert services["flower"]["ports"] == ["127.0.0.1:5555:5555"]
    assert any(a.startswith("--basic-auth=") for a in services["flower"]["command"])
    assert "127.0.0.1:9001:9001" in services["minio"]["ports"]
    assert "--requirepass" in services["redis"]["command"]
    assert "ports" not in services["redis"]
