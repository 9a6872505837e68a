"""Orders and guests' phones in headless Chromium against the real app under uvicorn (as test_routes_browser):
a guest orders two photos at the kiosk and gets a reference; staff mark the order delivered on the orders page
and download its ZIP, which holds exactly the ordered originals. A phone: a narrow portrait viewport opened at
the QR code's URL (code filled in), the fake front camera, a second selfie, and a photo picked from the phone."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import cv2
import pytest

from tests.central.kiosk.support import y4m
from tests.central.kiosk.test_routes_browser import open_browser, server, sync_api  # noqa: F401 (fixtures)
from tests.central.webapp import PASSWORD, USER

pytestmark = [pytest.mark.models, pytest.mark.facedata, pytest.mark.slow]

PHONE = {"width": 390, "height": 844}


def results_shown(page) -> list[str]:
    page.wait_for_selector("#step-results:not([hidden])")
    return page.eval_on_selector_all("#results .result", "els => els.map(e => e.dataset.photo)")


def test_order_at_the_kiosk_then_fulfil_it(server, sync_api, tmp_path):  # noqa: F811
    base, ka, event, people, ids = server
    video = y4m(cv2.imread(str(people.selfie)), tmp_path / "selfie.y4m")
    p, context, page = open_browser(sync_api, tmp_path / "profile", video, timeout_ms=30_000)
    try:
        page.goto(f"{base}/kiosk?countdown=0&code={event.code}")  # the QR code's URL: straight to the camera
        page.wait_for_function("() => document.getElementById('video').videoWidth > 0")
        page.click("#capture")
        shown = results_shown(page)
        assert len(shown) >= 2
        for i in (0, 1):  # two photos into one order
            page.click(f"#results .result >> nth={i}")
            page.click("#order-open")
            if i == 0:
                page.click("#viewer-close")
        assert "2 photos in this order" in page.inner_text("#order-count")
        page.fill("#order-form input[name=name]", "Jen")
        page.fill("#order-form input[name=contact]", "jen@example.com")
        page.click("#order-form button[type=submit]")
        page.wait_for_function("() => document.getElementById('order-message').textContent.includes('Thank you')")
        page.click("#viewer-close")
        reference = page.inner_text("#order-reference")
        assert len(reference) == 7 and reference[3] == "-"
        ordered = {pid for pid in shown[:2]}

        # staff: the events list counts it; the orders page shows it; mark delivered; download the ZIP
        page.goto(f"{base}/login?next=/events")
        page.fill("input[name=username]", USER)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/events")
        assert page.inner_text(f'tr[data-event="{event.id}"] .orders-count').startswith("1")
        page.goto(f"{base}/events/{event.id}")
        page.click("#orders-link")
        row = f'#orders tr[data-reference="{reference}"]'
        assert "Jen" in page.inner_text(row) and "jen@example.com" in page.inner_text(row)
        assert page.eval_on_selector_all(f"{row} img.thumb", "els => els.length") == 2
        page.select_option(f"{row} select[name=status]", "delivered")
        page.fill(f"{row} textarea[name=notes]", "handed over at the door")
        page.click(f"{row} .order-edit button[type=submit]")
        page.wait_for_selector(f'{row}[data-status="delivered"]')
        assert page.input_value(f"{row} textarea[name=notes]") == "handed over at the door"
        with page.expect_download() as download:
            page.click("#download-zip")
        with zipfile.ZipFile(io.BytesIO(Path(download.value.path()).read_bytes())) as zf:
            names = zf.namelist()
            assert all(n.startswith(reference) for n in names)
            got = sorted(zf.read(n) for n in names)
        by_id = {str(pid): path for path, pid in ids.items()}
        assert got == sorted(by_id[pid].read_bytes() for pid in ordered)  # exactly the ordered originals
        with page.expect_download() as download:
            page.click("#export-csv")
        csv_text = Path(download.value.path()).read_text()
        assert reference in csv_text and "delivered" in csv_text
    finally:
        context.close()
        p.stop()


def test_guest_phone_portrait_front_camera_more_angles_and_a_picked_photo(server, sync_api, tmp_path):  # noqa: F811
    base, ka, event, people, ids = server
    video = y4m(cv2.imread(str(people.selfie)), tmp_path / "selfie.y4m", width=480, height=640)
    p, context, page = open_browser(
        sync_api, tmp_path / "phone", video, PHONE, 30_000, is_mobile=True, has_touch=True, device_scale_factor=2
    )
    try:
        page.goto(f"{base}/kiosk?countdown=0&code={event.code.lower()}")
        page.wait_for_function("() => document.getElementById('video').videoWidth > 0")
        layout = page.evaluate("""() => {
            const cam = document.querySelector('.camera').getBoundingClientRect();
            const go = document.getElementById('capture').getBoundingClientRect();
            return {camW: cam.width, camH: cam.height, page: document.documentElement.scrollWidth,
                    keypad: getComputedStyle(document.getElementById('keypad')).display, button: go.width};
        }""")
        assert layout["page"] <= PHONE["width"]  # nothing wider than the phone
        assert layout["camH"] > layout["camW"] and layout["camW"] <= PHONE["width"]  # portrait preview
        assert layout["keypad"] == "none" and layout["button"] > PHONE["width"] * 0.8  # phone keyboard, wide buttons
        facing = page.evaluate("() => document.getElementById('video').srcObject.getVideoTracks()[0].getConstraints()")
        assert facing.get("facingMode") == "user"  # the front camera
        page.click("#capture")
        first = results_shown(page)
        want = {str(ids[path]) for path in people.own}
        assert set(first) == want
        # another angle: the second selfie is searched together with the first
        page.click("#add-angle")
        page.wait_for_function("() => document.getElementById('video').videoWidth > 0")
        assert "Selfie 2 of 3" in page.inner_text("#camera-hint")
        page.click("#capture")
        page.wait_for_function("() => document.getElementById('selfie-count').textContent.includes('2 selfies')")
        assert set(results_shown(page)) >= set(first)
        # a photo picked from the phone instead of the camera (never stored: only searched)
        page.click("#retake")
        page.set_input_files("#selfie-file", str(people.selfie))
        assert set(results_shown(page)) == want
        assert page.inner_text("#selfie-count") == "" or page.is_hidden("#selfie-count")
    finally:
        context.close()
        p.stop()
