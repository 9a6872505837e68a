"""The kiosk and the staff upload page in headless Chromium (Debian's /usr/bin/chromium driven by Playwright; no
browser download), against the real app under uvicorn. The webcam is Chromium's fake device playing a y4m video
the test makes from a real photo: code -> live preview -> capture -> results on screen -> large view, download,
order. The staff page: log in, create an event, upload by the file picker, watch per-file progress and status."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.central.kiosk.support import bad_files, dev_people, kiosk_app, upload_and_wait, y4m
from tests.central.test_browser import CHROMIUM, CHROMIUM_ARGS
from tests.central.webapp import PASSWORD, USER
from tests.mosquitto import free_port

pytestmark = [pytest.mark.models, pytest.mark.facedata, pytest.mark.slow]


@pytest.fixture(scope="module")
def sync_api():
    api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install playwright)")
    if not Path(CHROMIUM).is_file() and not shutil.which("chromium"):
        pytest.skip(f"Chromium not found at {CHROMIUM} (Debian: apt-get install -y chromium)")
    return api


@pytest.fixture(scope="module")
def server(tmp_path_factory, engine, facedata):
    """The app under uvicorn on a free port, with one event holding the person's photos among strangers'."""
    import uvicorn

    people = dev_people(facedata, distractors=4)
    with kiosk_app(tmp_path_factory.mktemp("kiosk_browser"), engine) as ka:
        event = ka.kiosk.events.create_event("Browser party")
        ids = upload_and_wait(ka.kiosk, event.id, [*people.own, *people.others])
        port = free_port()
        uv = uvicorn.Server(uvicorn.Config(ka.app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=uv.run, name="uvicorn", daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not uv.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", ka, event, people, ids
        uv.should_exit = True
        thread.join(15)


def open_browser(
    sync_api, profile: Path, video: Path, viewport: dict | None = None, timeout_ms: int = 20_000, **options
):
    """A Chromium whose webcam plays `video` (`options`: Playwright's context options, e.g. a phone's);
    returns (playwright, context, page)."""
    p = sync_api.sync_playwright().start()
    args = [
        *CHROMIUM_ARGS,
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={video}",
    ]
    context = p.chromium.launch_persistent_context(
        str(profile),
        executable_path=CHROMIUM,
        headless=True,
        args=args,
        accept_downloads=True,
        viewport=viewport or {"width": 1280, "height": 900},
        **options,
    )
    context.set_default_timeout(timeout_ms)
    return p, context, context.new_page()


def enter_code(page, base: str, code: str) -> None:
    page.goto(f"{base}/kiosk?countdown=0")
    for ch in code:  # on the touch keypad
        page.click(f'#keypad [data-key="{ch}"]')
    page.click("#code-go")
    page.wait_for_selector("#step-camera:not([hidden])")
    page.wait_for_function("() => document.getElementById('video').videoWidth > 0")


def test_kiosk_finds_the_guest_by_webcam(server, sync_api, tmp_path):
    base, ka, event, people, ids = server
    video = y4m(cv2.imread(str(people.selfie)), tmp_path / "selfie.y4m")
    p, context, page = open_browser(sync_api, tmp_path / "profile", video)
    try:
        enter_code(page, base, event.code)
        assert page.inner_text("#event-name") == "Browser party"
        page.click("#capture")
        page.wait_for_selector("#step-results:not([hidden])")
        shown = page.eval_on_selector_all("#results .result", "els => els.map(e => e.dataset.photo)")
        assert set(shown) == {str(ids[path]) for path in people.own}  # hers only, from this event
        assert "3 photos of you" in page.inner_text("#results-title")
        page.wait_for_function("() => [...document.querySelectorAll('#results img')].every(i => i.naturalWidth)")
        widths = page.eval_on_selector_all("#results .simbar .fill", "els => els.map(e => parseFloat(e.style.width))")
        assert widths == sorted(widths, reverse=True) and widths[0] > 0  # best first, with a similarity bar
        # tap for the large view, download the original, order it
        page.click("#results .result >> nth=0")
        page.wait_for_function("() => document.getElementById('viewer-img').naturalWidth > 0")
        with page.expect_download() as download:
            page.click("#download")
        best = next(path for path, pid in ids.items() if str(pid) == shown[0])
        assert Path(download.value.path()).read_bytes() == best.read_bytes()
        page.click("#order-open")
        page.fill("#order-form input[name=name]", "Jen")
        page.click("#order-form button[type=submit]")
        page.wait_for_function("() => document.getElementById('order-message').textContent.includes('Thank you')")
        assert [v.order.name for v in ka.kiosk.orders.list(event.id)] == ["Jen"]
        # start over: the next guest sees nothing of this one
        page.click("#viewer-close")
        page.click("#step-results .restart")
        page.wait_for_selector("#step-code:not([hidden])")
        assert page.eval_on_selector_all("#results .result", "els => els.length") == 0
    finally:
        context.close()
        p.stop()


def test_kiosk_guides_when_no_face_is_seen(server, sync_api, tmp_path):
    base, _, event, _, _ = server
    video = y4m(np.full((480, 640, 3), 128, np.uint8), tmp_path / "empty.y4m")
    p, context, page = open_browser(sync_api, tmp_path / "profile", video)
    try:
        enter_code(page, base, event.code)
        page.click("#capture")
        page.wait_for_function("() => document.getElementById('camera-message').textContent.includes('No face')")
        page.wait_for_selector("#capture:not([disabled])")  # retake right away
        assert page.is_visible("#step-camera")
    finally:
        context.close()
        p.stop()


def test_staff_upload_through_the_page(server, sync_api, tmp_path):
    base, ka, _, people, _ = server
    p, context, page = open_browser(
        sync_api, tmp_path / "profile", y4m(np.zeros((48, 64, 3), np.uint8), tmp_path / "x.y4m")
    )
    try:
        page.goto(f"{base}/events")
        page.fill("input[name=username]", USER)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/events")
        page.fill("#create-event input[name=name]", "Staff upload")
        page.click("#create-event button[type=submit]")
        page.wait_for_selector("#dropzone")
        code = page.inner_text("#event-code")
        name, data, _ = bad_files()["truncated jpeg"]
        bad = tmp_path / name
        bad.write_bytes(data)
        page.set_input_files("#file-input", [str(people.own[0]), str(people.own[1]), str(bad)])
        done = "() => document.querySelectorAll('#uploads li[data-state=done]').length === 2"
        page.wait_for_function(done, timeout=60_000)
        page.wait_for_selector("#uploads li[data-state=rejected]")
        assert "truncated" in page.inner_text("#uploads li[data-state=rejected]")
        assert page.inner_text("#overall-text") == "3 of 3 files uploaded"
        assert page.eval_on_selector("#overall-progress", "e => e.value") == pytest.approx(1.0)
        page.wait_for_function("() => document.querySelectorAll('#photo-rows tr[data-status=done]').length === 2")
        event = ka.kiosk.events.by_code(code)
        status = ka.kiosk.events.photo_status(event.id)
        assert (status["total"], status["done"]) == (2, 2) and status["faces"] >= 2
    finally:
        context.close()
        p.stop()
