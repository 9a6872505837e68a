"""The pages in headless Chromium (Debian's /usr/bin/chromium driven by Playwright; no browser download) against
uvicorn on a free port: log in, the loyal customers with their photos, live crops arriving, merge, erase."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from revisit.central.web import create_app
from tests.central.webapp import PASSWORD, USER, day_time, feed, open_service, photo_faces, seed, web_config
from tests.mosquitto import free_port

pytestmark = [pytest.mark.models, pytest.mark.facedata, pytest.mark.slow]

CHROMIUM = os.environ.get("REVISIT_CHROMIUM", "/usr/bin/chromium")  # Debian's package
# Flags that work as root in a container; the profile is a fresh directory per test.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def playwright():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install playwright)")
    with sync_api.sync_playwright() as p:
        yield p


@pytest.fixture
def chromium() -> str:
    path = CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")
    if not path:
        pytest.skip(f"Chromium not found at {CHROMIUM} or on PATH (Debian: apt-get install -y chromium)")
    return path


@pytest.fixture
def browser_page(chromium, playwright, tmp_path):
    context = playwright.chromium.launch_persistent_context(
        str(tmp_path / "profile"), executable_path=chromium, headless=True, args=CHROMIUM_ARGS
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def server(tmp_path, facedata, engine):
    """The seeded service's app under uvicorn on a free port, in a thread."""
    import uvicorn

    faces = photo_faces(facedata, engine)
    dim = len(next(iter(faces.values()))[0].embedding)
    config = web_config(tmp_path, cluster={"scope": "site"}, ingest={"recognizers": {engine.recognizer_id: dim}})
    service = open_service(config)
    data = seed(service, faces, engine.recognizer_id)
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", service, data, faces
    uv.should_exit = True
    thread.join(15)
    service.stop()


def _images_loaded(page, selector: str) -> list[int]:
    return page.eval_on_selector_all(selector, "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")


def test_head_office_flow_in_chromium(browser_page, server, engine, tmp_path):
    base, service, data, faces = server
    page = browser_page
    loyal, once, _ = data.visitors.values()

    # log in: the loyal-customers tab sends us to the login form and back
    page.goto(f"{base}/loyal")
    assert "/login" in page.url
    page.fill("input[name=username]", USER)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit].primary")
    page.wait_for_url(f"{base}/loyal*")

    # the loyal customers: exactly the regular, with the reference photo and today's photo showing
    rows = page.locator("table.loyal tbody tr")
    assert rows.count() == 1 and rows.first.get_attribute("data-visitor") == str(loyal)
    page.wait_for_function("[...document.querySelectorAll('table.loyal img')].every(i => i.complete)")
    widths = _images_loaded(page, "table.loyal img")
    assert len(widths) == 2 and all(w > 0 for w in widths)
    assert "4 visits this week" in rows.first.inner_text()
    page.screenshot(path=str(tmp_path / "loyal.png"), full_page=True)

    # adjusting the filter in the page: one visit before today is enough for the second person too
    page.fill("input[name=min_visits]", "1")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**min_visits=1**")
    assert page.locator("table.loyal tbody tr").count() == 2

    # the live page: a face that arrives now shows up without reloading
    page.click("nav >> text=Live")
    page.wait_for_url(f"{base}/live")
    before = page.locator("#latest-crops li").count()
    new_visitor = feed(service, faces[next(iter(faces))][0], day_time(data.now, 0) + 60, engine.recognizer_id, track=99)
    page.wait_for_selector("#latest-crops li.new", timeout=10_000)
    assert page.locator("#latest-crops li").count() == before + 1
    assert page.locator("#latest-crops li.new a").first.get_attribute("href") == f"/visitors/{new_visitor}"

    # merge: the same person seen at the other site is the first merge candidate on the visitor page
    page.goto(f"{base}/visitors/{loyal}")
    candidate = page.locator(f'ul.similar li[data-visitor="{data.duplicate}"]')
    candidate.locator("button").click()
    page.wait_for_selector("text=merged into this one")
    assert "5 visits · 6 sightings" in page.inner_text(".visitor-head")
    page.screenshot(path=str(tmp_path / "visitor.png"), full_page=True)

    # erase: the second person, after ticking the confirmation
    page.click("nav >> text=Visitors")
    page.wait_for_url(f"{base}/visitors")
    assert page.locator(".tile[data-visitor]").count() == 3
    page.click(f'.tile[data-visitor="{once}"] a.visitor-name')
    page.wait_for_url(f"{base}/visitors/{once}")
    page.fill("#erase-form input[name=reason]", "browser test")
    page.check("#erase-form input[name=confirm]")
    page.click("#erase-form button[type=submit]")
    page.wait_for_url(f"{base}/visitors")
    assert "erased" in page.inner_text(".flash")
    assert page.locator(f'.tile[data-visitor="{once}"]').count() == 0
    assert page.locator(".tile[data-visitor]").count() == 2

    # log out: the pages ask for a login again
    page.click("form.logout button")
    page.wait_for_url(f"{base}/login")
    page.goto(f"{base}/visitors")
    assert "/login" in page.url
