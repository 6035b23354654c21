"""The web page: served with a strict CSP, and driven end to end in a real headless Chromium."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from api import create_app
from api.devstack.servers import wait_until
from api.devstack.stack import ApiServer
from storage.config import Settings
from tests.browser import failure_screenshot, images_loaded, shot
from tests.conftest import photo

STATIC = Path(__file__).resolve().parents[1] / "api" / "static"
REQUIRED_CSP = (
    "default-src 'self'",
    "img-src 'self' data: blob: http: https:",
    "connect-src 'self'",
    "script-src 'self'",
)


@pytest.fixture(scope="module")
def app() -> Flask:
    # Nothing here touches Redis or S3: the app's clients connect lazily, and the page needs neither.
    return create_app(Settings(redis_url="redis://127.0.0.1:1/0"))


def test_ui_is_html_with_a_strict_csp(app: Flask) -> None:
    resp = app.test_client().get("/ui")
    assert resp.status_code == 200 and resp.mimetype == "text/html"
    csp = resp.headers["Content-Security-Policy"]
    for directive in REQUIRED_CSP:
        assert directive in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    html = resp.get_data(as_text=True)
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all('src="/ui/static/' in attrs and not body.strip() for attrs, body in scripts)
    assert "style=" not in html  # inline styles would need 'unsafe-inline'


def test_any_ui_path_serves_the_page_and_root_redirects(app: Flask) -> None:
    c = app.test_client()
    assert c.get("/ui/jobs/j123").get_data(as_text=True) == c.get("/ui").get_data(as_text=True)
    root = c.get("/")
    assert root.status_code == 302 and root.headers["Location"].endswith("/ui")


def test_every_module_the_page_imports_is_served(app: Flask) -> None:
    c = app.test_client()
    pending, seen = ["app.js"], set()
    while pending:
        name = pending.pop()
        seen.add(name)
        resp = c.get(f"/ui/static/{name}")
        assert resp.status_code == 200, name
        assert resp.mimetype in ("text/javascript", "application/javascript"), (name, resp.mimetype)
        assert "Content-Security-Policy" in resp.headers
        pending += [m for m in re.findall(r'from "\./([\w-]+\.js)"', resp.get_data(as_text=True)) if m not in seen]
    assert {"app.js", "api.js", "dom.js", "jobs.js", "gallery.js", "submit.js", "people.js"} <= seen
    assert c.get("/ui/static/app.css").mimetype == "text/css"


def test_scripts_never_write_html_or_evaluate_strings() -> None:
    banned = re.compile(
        r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|"
        r"setTimeout\(\s*['\"`]"
    )
    for path in STATIC.glob("*.js"):
        assert not banned.search(path.read_text()), path.name


# --- in a real browser ----------------------------------------------------------------------------------------


@pytest.mark.integration
def test_submit_a_style_job_and_see_the_gallery(
    workers, api_server: ApiServer, tenant_key, page: Any, tmp_path: Path
) -> None:
    photos = []
    for i in range(2):
        path = tmp_path / f"web{i}.jpg"
        path.write_bytes(photo(40 + i, (160, 120)))
        photos.append(str(path))

    with failure_screenshot(page, "web-failure.png"):
        drive_the_page(page, api_server.url, tenant_key[1], photos)


def drive_the_page(page: Any, url: str, key: str, photos: list[str]) -> None:
    page.goto(f"{url}/ui#key={key}")
    page.wait_for_selector("table.jobs, .empty")
    assert "key=" not in page.url
    assert page.evaluate("localStorage.getItem('nightshift.apiKey')") == key
    page.wait_for_selector("#key-state.key-ok")

    # the API's validation error reaches the user
    page.click("a[data-tab=submit]")
    page.set_input_files("input[name=files]", photos)
    page.fill("input[name=builtin]", "99")
    page.click("#submit-form button[type=submit]")
    error = page.wait_for_selector("#submit-error .error")
    assert "0-25" in error.inner_text() and "invalid_request" in error.inner_text()
    shot(page, "web-submit-error.png")

    # the picker shows every built-in style with its preview; picking one adds it to the field
    page.wait_for_selector("#style-picker .style-choice")
    assert page.locator("#style-picker .style-choice").count() == 26
    page.fill("input[name=builtin]", "7")
    page.click("#style-picker .style-choice[data-index='3']")
    assert page.input_value("input[name=builtin]") == "7 3"
    assert page.get_attribute("#style-picker .style-choice[data-index='7']", "aria-pressed") == "true"
    page.click("#style-picker .style-choice[data-index='3']")
    assert page.input_value("input[name=builtin]") == "7"
    page.wait_for_function("() => document.querySelectorAll('#style-picker img').length === 26", timeout=60_000)
    assert images_loaded(page, "#style-picker img") == 26
    assert page.locator("#submit-error pre").count() == 0  # the one detail repeats the message: not shown twice
    page.evaluate("window.scrollTo(0, 0)")
    shot(page, "web-style-picker.png")
    page.fill("input[name=label]", "browser test")
    page.click("#submit-form button[type=submit]")
    page.wait_for_url(re.compile(r".*#/jobs/\w+$"))
    job_id = page.url.rsplit("/", 1)[-1]
    page.wait_for_selector("#job-summary[data-state=succeeded]", timeout=45_000)
    page.wait_for_selector("#gallery .pair")
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    assert page.locator("#gallery .pair").count() == 2
    # per photo: its original and one output (built-in style 7); and the job's contact sheet
    assert images_loaded(page, "#gallery img") == 4
    assert images_loaded(page, "#contact-sheet img") == 1
    assert page.locator("#gallery .output figcaption").first.inner_text() == "7 · Primary-colour blocks"
    page.evaluate("window.scrollTo(0, 0)")
    shot(page, "web-gallery.png")

    page.click("a[data-tab=jobs]")
    row = page.wait_for_selector(f"tr[data-job-id={job_id}][data-state=succeeded]")
    assert "browser test" in row.inner_text() and "2 / 2" in row.inner_text()
    shot(page, "web-jobs.png")

    page.goto(f"{url}/ui#/people/{job_id}")
    found = page.wait_for_selector(".person, [data-unavailable], .error")
    assert found.inner_text().strip()
    shot(page, "web-people-wrong-kind.png")


@pytest.mark.integration
def test_a_wrong_key_in_the_address_is_not_called_saved(api_server: ApiServer, page: Any) -> None:
    page.goto(f"{api_server.url}/ui#key=nsk_not_a_key")
    state = page.wait_for_selector("#key-state.key-bad")
    assert state.inner_text() == "key refused" and "saved" not in state.inner_text()
    assert "unknown or revoked" in (state.get_attribute("title") or "")
    shot(page, "web-wrong-key.png")


@pytest.mark.integration
def test_result_links_are_refreshed_before_they_expire(
    workers, services, client, tenant_key, page: Any, tmp_path: Path
) -> None:
    """With links that live 6 s, a gallery left open still shows its images a minute later."""
    (tmp_path / "a.jpg").write_bytes(photo(5, (120, 90)))
    job = client.wait(
        client.submit("style", files=[tmp_path / "a.jpg"], params={"method": "builtin", "builtin": [7]})["id"],
        timeout=120,
    )
    short = services.settings.model_copy(update={"s3": services.settings.s3.model_copy(update={"presign_expiry_s": 6})})
    server = ApiServer(short).start()
    try:
        with failure_screenshot(page, "web-refresh-failure.png"):
            page.goto(f"{server.url}/ui#key={tenant_key[1]}")
            page.goto(f"{server.url}/ui#/jobs/{job['id']}")
            page.wait_for_selector("#gallery .pair")
            first = page.eval_on_selector_all("#gallery img", "imgs => imgs.map(i => i.src)")
            assert len(first) == 2 and images_loaded(page, "#gallery img, #contact-sheet img") == 3  # before, after
            wait_until(lambda: requests.get(first[1], timeout=5).status_code == 403, timeout=20)  # it did expire
            page.wait_for_function(
                "() => Number(document.querySelector('#gallery').closest('[data-links-refreshed]')"
                "?.dataset.linksRefreshed || 0) >= 1",
                timeout=20_000,
            )
            fresh = page.eval_on_selector_all("#gallery img", "imgs => imgs.map(i => i.src)")
            assert all(a != b for a, b in zip(first, fresh, strict=True))
            assert all(requests.get(url, timeout=5).status_code == 200 for url in fresh)
            assert images_loaded(page, "#gallery img, #contact-sheet img") == 3
            assert page.get_attribute("#gallery .output a", "href") == fresh[1]
    finally:
        server.stop()


@pytest.mark.integration
def test_face_search_captions_stay_in_their_cards(api_server: ApiServer, tenant_key, page: Any, tmp_path: Path) -> None:
    long_names = [f"Marie-Thérèse Annunziata de la Croix-Beaumont-Villeneuve the {i}th" for i in range(5)]
    page.route(
        "**/v1/faces/search",
        lambda route: route.fulfill(
            json={
                "matches": [
                    {
                        "distance": 0.3 + i / 20,
                        "photo": f"Family archive/2019 summer/DSC_{i:04d}_edited_final.jpg",
                        "photo_url": f"http://faces.test/p{i}.jpg",
                        "face": f"f{i}",
                        "person": f"p{i}",
                        "name": name,
                        "thumbnail_url": f"http://faces.test/m{i}.jpg",
                        "job": "jf1",
                    }
                    for i, name in enumerate(long_names)
                ]
            }
        ),
    )
    page.route("http://faces.test/**", lambda route: route.fulfill(body=photo(7, (64, 64)), content_type="image/jpeg"))
    query = tmp_path / "query.jpg"
    query.write_bytes(photo(3, (80, 80)))
    page.goto(f"{api_server.url}/ui#key={tenant_key[1]}")
    page.goto(f"{api_server.url}/ui#/people")
    page.set_input_files("#face-search input[name=photo]", str(query))
    page.click("#face-search button[type=submit]")
    page.wait_for_selector("#search-results .match")
    assert images_loaded(page, "#search-results img") == 5
    boxes = page.eval_on_selector_all(
        "#search-results .match",
        """cards => cards.map(c => {
        const card = c.getBoundingClientRect(), cap = c.querySelector('figcaption').getBoundingClientRect();
        return [card.left, card.right, cap.left, cap.right, c.querySelector('figcaption').scrollWidth,
                c.querySelector('figcaption').clientWidth]; })""",
    )
    for left, right, cap_left, cap_right, scroll_w, client_w in boxes:
        assert left - 0.5 <= cap_left and cap_right <= right + 0.5 and scroll_w <= client_w + 1
    page.locator("#face-search").scroll_into_view_if_needed()
    shot(page, "web-face-search.png")
