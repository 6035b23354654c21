"""The intake API: validation answers, auth, tenant isolation, idempotency, uploads, OpenAPI."""

from __future__ import annotations

import io
import json
import re

import requests

from api.devstack.servers import wait_until
from api.devstack.stack import ApiServer
from storage.names import JobState
from tests.conftest import Services, new_tenant_key, photo


def _error(resp) -> dict:
    body = resp.get_json()
    assert set(body) == {"error"} and {"code", "message", "details"} <= set(body["error"]), body
    return body["error"]


def test_health_and_ready(workers, http) -> None:
    assert http.get("/healthz").get_json() == {"status": "ok"}
    ready = wait_until(lambda: (r := http.get("/readyz")).status_code == 200 and r, timeout=30)
    body = ready.get_json()
    assert body["checks"] == {"redis": True, "s3": True}
    assert body["workers"]["style"] >= 1 and body["workers"]["faces"] >= 1


def test_missing_and_bad_api_key(api_server: ApiServer) -> None:
    c = api_server.app.test_client()
    resp = c.get("/v1/jobs")
    assert resp.status_code == 401 and "missing API key" in _error(resp)["message"]
    resp = c.get("/v1/jobs", headers={"Authorization": "Bearer nsk_nope"})
    assert resp.status_code == 401 and _error(resp)["code"] == "unauthorized"


def test_malformed_json_wrong_type_unknown_fields_and_ranges(http) -> None:
    resp = http.post("/v1/jobs", data="{not json", content_type="application/json")
    assert resp.status_code == 400 and "JSON object" in _error(resp)["message"]
    resp = http.post("/v1/jobs", data="kind=style", content_type="text/plain")
    assert resp.status_code == 415 and "multipart/form-data" in _error(resp)["message"]
    resp = http.post(
        "/v1/jobs",
        json={"kind": "style", "params": {"method": "builtin", "builtin": [1], "zz": 1}, "inputs": {"keys": ["a.jpg"]}},
    )
    err = _error(resp)
    assert resp.status_code == 422 and err["details"][0]["field"] == "zz" and "unknown field" in err["message"]
    resp = http.post(
        "/v1/jobs",
        json={
            "kind": "style",
            "params": {"method": "builtin", "builtin": [1], "strength": 3},
            "inputs": {"keys": ["a.jpg"]},
        },
    )
    err = _error(resp)
    assert resp.status_code == 422 and err["details"][0]["field"] == "strength"
    assert "less than or equal to 1" in err["message"]
    resp = http.post("/v1/jobs", json={"kind": "paint"})
    assert resp.status_code == 422 and _error(resp)["details"][0]["field"] == "kind"
    resp = http.post(
        "/v1/jobs",
        json={"kind": "style", "params": {"method": "builtin", "builtin": [99]}, "inputs": {"keys": ["a.jpg"]}},
    )
    err = _error(resp)
    # the validator's own words, without pydantic's "Value error, " prefix
    assert resp.status_code == 422 and err["message"] == "builtin: built-in style index must be 0-25, got 99"
    assert err["details"] == [{"field": "builtin", "message": "built-in style index must be 0-25, got 99"}]


def test_no_inputs_and_traversal_keys_rejected(http) -> None:
    resp = http.post("/v1/jobs", json={"kind": "faces"})
    assert resp.status_code == 422 and "no photos" in _error(resp)["message"]
    resp = http.post("/v1/jobs", json={"kind": "faces", "inputs": {"keys": ["../other/x.jpg"]}})
    assert resp.status_code == 400 and "'..'" in _error(resp)["message"]


def test_style_image_must_exist(http) -> None:
    resp = http.post(
        "/v1/jobs", json={"kind": "style", "params": {"styles": ["uploads/none.jpg"]}, "inputs": {"keys": ["a.jpg"]}}
    )
    assert resp.status_code == 422 and "not found" in _error(resp)["message"]


def test_submit_returns_202_location_and_idempotency(http) -> None:
    body = {"kind": "faces", "inputs": {"keys": ["uploads/x/a.jpg"]}}
    r1 = http.post("/v1/jobs", json=body, headers={"Idempotency-Key": "abc-1"})
    assert r1.status_code == 202
    job = r1.get_json()
    assert r1.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert job["state"] in (JobState.QUEUED, JobState.RUNNING, JobState.FAILED, JobState.PARTIAL)
    r2 = http.post("/v1/jobs", json=body, headers={"Idempotency-Key": "abc-1"})
    assert r2.status_code == 202 and r2.get_json()["id"] == job["id"]
    assert r2.headers["Idempotent-Replayed"] == "true"
    r3 = http.post("/v1/jobs", json=body, headers={"Idempotency-Key": "abc-2"})
    assert r3.get_json()["id"] != job["id"]


def test_tenant_isolation_on_every_job_endpoint(services: Services, api_server: ApiServer, http) -> None:
    job = http.post("/v1/jobs", json={"kind": "faces", "inputs": {"keys": ["a.jpg"]}}).get_json()
    _, other_key = new_tenant_key(services)
    other = api_server.app.test_client()
    other.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {other_key}"
    for method, path in (
        ("get", f"/v1/jobs/{job['id']}"),
        ("get", f"/v1/jobs/{job['id']}/results"),
        ("post", f"/v1/jobs/{job['id']}/cancel"),
    ):
        resp = getattr(other, method)(path)
        assert resp.status_code == 404, path
    assert all(j["id"] != job["id"] for j in other.get("/v1/jobs").get_json()["jobs"])
    assert any(j["id"] == job["id"] for j in http.get("/v1/jobs").get_json()["jobs"])


def test_multipart_files_are_stored_under_the_tenant(services: Services, http, tenant_key) -> None:
    data = {
        "kind": "faces",
        "params": json.dumps({"detector": "hog"}),
        "files": [(io.BytesIO(photo(1)), "one.jpg"), (io.BytesIO(photo(2)), "tw\u00f6 \u263a.jpg")],
    }
    resp = http.post("/v1/jobs", data=data, content_type="multipart/form-data")
    assert resp.status_code == 202, resp.get_json()
    job = resp.get_json()
    assert job["counts"]["total"] == 2 and job["params"]["detector"] == "hog"
    items = services.records.get_items(job["id"], [0, 1])
    assert all(it.key.startswith(f"t/{tenant_key[0]}/jobs/{job['id']}/inputs/") for it in items)
    assert services.store.get_bytes(items[0].key) == photo(1)
    assert items[1].name == "tw\u00f6 \u263a.jpg"


def test_uploaded_files_keep_their_relative_paths_as_unique_names(services: Services, http) -> None:
    names = [
        "DCIM/100CANON/IMG_0001.JPG",
        "DCIM/101CANON/IMG_0001.JPG",
        "DCIM/100CANON/IMG_0001.JPG",
        "../../etc/passwd.jpg",
    ]
    data = {
        "kind": "faces",
        "params": json.dumps({"detector": "hog"}),
        "files": [(io.BytesIO(photo(i)), name) for i, name in enumerate(names)],
    }
    resp = http.post("/v1/jobs", data=data, content_type="multipart/form-data")
    assert resp.status_code == 202, resp.get_json()
    items = services.records.get_items(resp.get_json()["id"], range(4))
    assert [it.name for it in items] == [
        "DCIM/100CANON/IMG_0001.JPG",
        "DCIM/101CANON/IMG_0001.JPG",
        "DCIM/100CANON/IMG_0001~2.JPG",
        "etc/passwd.jpg",
    ]
    assert len({it.key for it in items}) == 4 and all("/inputs/" in it.key and ".." not in it.key for it in items)
    page = http.get(f"/v1/jobs/{resp.get_json()['id']}/results").get_json()
    assert page["urls_expire_in_s"] == services.settings.s3.presign_expiry_s
    assert page["items"][1]["input"]["name"] == "DCIM/101CANON/IMG_0001.JPG"


def test_bad_form_json_and_unknown_file_field(http) -> None:
    resp = http.post("/v1/jobs", data={"kind": "faces", "params": "{oops"}, content_type="multipart/form-data")
    assert resp.status_code == 400 and "params" in _error(resp)["message"]
    resp = http.post(
        "/v1/jobs", data={"kind": "faces", "photo": (io.BytesIO(b"x"), "a.jpg")}, content_type="multipart/form-data"
    )
    assert resp.status_code == 400 and "'files'" in _error(resp)["message"]


def test_cancel_and_list_filters(http) -> None:
    resp = http.get("/v1/jobs?state=bogus")
    assert resp.status_code == 400
    resp = http.get("/v1/jobs?limit=0")
    assert resp.status_code == 400 and "between 1 and 500" in _error(resp)["message"]
    message = _error(http.get("/v1/jobs?limit=abc"))["message"]
    assert "should be a valid integer" in message and message.endswith("it must be between 1 and 500")
    assert http.get("/v1/jobs/nope").status_code == 404
    assert http.get("/v1/nothing-here").status_code == 404


def test_presigned_upload_flow(http, services: Services, tenant_key) -> None:
    resp = http.post("/v1/uploads", json={"names": ["photos.zip"]})
    assert resp.status_code == 201
    body = resp.get_json()
    grant = body["uploads"][0]
    assert grant["key"].startswith("uploads/") and grant["method"] == "POST"
    up = requests.post(grant["url"], data=grant["fields"], files={"file": ("photos.zip", b"PK-ish")}, timeout=10)
    assert up.status_code in (200, 201, 204)
    assert services.store.get_bytes(f"t/{tenant_key[0]}/{grant['key']}") == b"PK-ish"
    assert services.settings.s3.secret_key not in json.dumps(body)
    assert http.post("/v1/uploads", json={"names": []}).status_code == 422


def test_a_json_string_is_not_an_object_even_when_it_holds_one(http) -> None:
    """flask-openapi3 parses a string body again as a document: the API refuses it as it refuses any non-object."""
    for path in ("/v1/uploads", "/v1/people/merge", "/v1/galleries"):
        resp = http.post(path, json=json.dumps({"names": ["photos.zip"]}))
        assert resp.status_code == 400 and _error(resp)["code"] == "bad_json", (path, resp.get_json())


def test_oversized_request_gets_413(services: Services) -> None:
    small = ApiServer(
        services.settings.model_copy(update={"api": services.settings.api.model_copy(update={"max_request_mb": 1})})
    )
    _, key = new_tenant_key(services)
    c = small.app.test_client()
    resp = c.post(
        "/v1/jobs",
        data={"kind": "faces", "files": (io.BytesIO(b"x" * (2 * 1024 * 1024)), "a.jpg")},
        content_type="multipart/form-data",
        headers={"Authorization": f"Bearer {key}"},
    )
    assert resp.status_code == 413 and "presigned" in _error(resp)["message"]


def test_rate_limit_per_key(services: Services) -> None:
    limited = ApiServer(
        services.settings.model_copy(
            update={"api": services.settings.api.model_copy(update={"rate_limit_per_minute": 3})}
        )
    )
    _, key = new_tenant_key(services)
    c = limited.app.test_client()
    codes = [c.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"}).status_code for _ in range(8)]
    assert codes[:3] == [200, 200, 200] and 429 in codes[3:]  # 8 > 2 windows x 3


def test_openapi_document(http, api_server: ApiServer) -> None:
    """flask-openapi3 builds the document from the routes' models: every /v1 operation, its errors, the key."""
    spec = http.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    routes = {
        (re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method.lower())
        for rule in api_server.app.url_map.iter_rules()
        if rule.rule.startswith("/v1/")
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    documented = {(path, method) for path, item in spec["paths"].items() for method in item}
    assert len(routes) > 25 and routes <= documented
    assert spec["components"]["securitySchemes"] == {"bearer": {"type": "http", "scheme": "bearer"}}
    assert spec["security"] == [{"bearer": []}] and spec["paths"]["/healthz"]["get"]["security"] == []
    assert {"StyleParams", "FacesParams", "JobRequest", "JobForm"} <= set(spec["components"]["schemas"])
    jobs = spec["paths"]["/v1/jobs"]
    assert set(jobs["post"]["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
    assert {p["name"] for p in jobs["get"]["parameters"]} == {"state", "kind", "limit", "before"}
    error = {"$ref": "#/components/schemas/Error"}
    answers = [
        (code, answer)
        for item in spec["paths"].values()
        for op in item.values()
        for code, answer in op["responses"].items()
        if code >= "400" and code != "503"
    ]
    assert answers and all(a["content"]["application/json"]["schema"] == error for _, a in answers)
    assert {"400", "401", "413", "415", "422", "429"} <= set(jobs["post"]["responses"])


def test_a_mistyped_id_is_not_found_and_a_wrong_method_says_which_fit(http) -> None:
    for path, what in (("/v1/jobs/jnope", "job 'jnope'"), ("/v1/jobs/jnope/results", "job 'jnope'")):
        resp = http.get(path)
        assert resp.status_code == 404 and _error(resp)["message"].startswith(f"{what} not found (job ids look like")
    resp = http.post("/v1/faces/nope/person", json={"person": None})
    assert resp.status_code == 404 and _error(resp)["message"].startswith("face 'nope' not found")
    assert "no such endpoint" in _error(http.get("/v1/nothing-here"))["message"]
    resp = http.delete("/v1/jobs/j0123456789abcdef")
    assert (
        resp.status_code == 405
        and "DELETE is not allowed on /v1/jobs/j0123456789abcdef; it takes GET" in (_error(resp)["message"])
    )


def test_a_question_without_a_body_says_both_ways_to_ask(http) -> None:
    resp = http.post("/v1/faces/verify")
    assert resp.status_code == 400 and _error(resp)["code"] == "bad_json"
    assert "send a JSON object (a, b, threshold), or photos a and b as multipart/form-data" in _error(resp)["message"]
