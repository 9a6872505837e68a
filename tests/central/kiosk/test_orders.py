"""Guests' orders and what staff do with them, on the real app: several photos per order with a short reference,
status and notes (role checks, CSRF, audit log), CSV export, the streamed ZIP holding exactly the ordered
originals, erasure, orders leaving with their event; multi-selfie search; the QR code decoding to the guest URL."""

from __future__ import annotations

import base64
import csv
import io
import uuid
import zipfile

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from revisit.central.kiosk.events import CODE_ALPHABET
from revisit.central.kiosk.models import GuestOrder, GuestOrderPhoto
from revisit.central.kiosk.orders import zip_stream
from revisit.central.store import AuditLog
from tests.central.kiosk.support import dev_people, kiosk_app, upload_and_wait
from tests.central.webapp import PASSWORD, csrf_from, login

pytestmark = [pytest.mark.models, pytest.mark.facedata]


@pytest.fixture(scope="module")
def site(tmp_path_factory, engine, facedata):
    people = dev_people(facedata)
    generous = {"search_per_client_min": 10_000, "lookup_per_client_min": 10_000, "burst": 1000}
    with kiosk_app(tmp_path_factory.mktemp("kiosk_orders"), engine, **generous) as ka:
        party = ka.kiosk.events.create_event("party")
        ids = upload_and_wait(ka.kiosk, party.id, [*people.own, people.group, *people.others[:3]])
        ka.app.state.accounts.add_user("viewer", PASSWORD, "head_office", [])
        ka.app.state.accounts.add_user("staffer", PASSWORD, "event_staff", [])
        with TestClient(ka.app) as client:
            yield client, ka, people, party, ids


def b64(path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def search(client, party, *paths) -> dict:
    body = {"event_id": str(party.id)}
    if len(paths) == 1:
        body["face_image"] = b64(paths[0])
    else:
        body["face_images"] = [b64(p) for p in paths]
    r = client.post("/api/v1/search/face", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def place(client, matches, **guest) -> dict:
    r = client.post("/api/v1/orders", json={"tokens": [m["token"] for m in matches], **guest})
    assert r.status_code == 201, r.text
    return r.json()


def test_order_of_several_photos_and_its_fulfilment(site):
    client, ka, people, party, ids = site
    matches = search(client, party, people.selfie)["matches"]
    assert len(matches) >= 2
    placed = place(client, matches[:2], name="Jen A", contact="+44 20 7946 0000")
    assert placed["photos"] == 2
    ref = placed["reference"]
    assert len(ref) == 7 and ref[3] == "-" and set(ref[:3] + ref[4:]) <= set(CODE_ALPHABET)  # ABC-DEF, no 0/O/1/I/L
    # refused: an expired/forged token, a bad contact, no photos, too many
    assert client.post("/api/v1/orders", json={"tokens": ["x" * 70]}).status_code == 404
    assert client.post("/api/v1/orders", json={"tokens": [matches[0]["token"]], "contact": "??"}).status_code == 422
    assert client.post("/api/v1/orders", json={"tokens": []}).status_code == 422
    assert client.post("/api/v1/orders", json={"tokens": [matches[0]["token"]] * 101}).status_code == 422

    oid = placed["order_id"]
    # anonymous and a role without "events" cannot read or change orders
    assert client.get(f"/api/v1/events/{party.id}/orders").status_code == 401
    token = login(client, "viewer")
    assert client.get(f"/api/v1/events/{party.id}/orders").status_code == 403
    assert (
        client.patch(
            f"/api/v1/events/{party.id}/orders/{oid}", json={"status": "ready"}, headers={"X-CSRF-Token": token}
        ).status_code
        == 403
    )
    client.cookies.clear()

    token = login(client, "staffer")
    listed = client.get(f"/api/v1/events/{party.id}/orders").json()["orders"]
    mine = next(o for o in listed if o["order_id"] == oid)
    assert mine["reference"] == ref and mine["status"] == "new" and mine["contact"] == "+44 20 7946 0000"
    assert {p["photo_id"] for p in mine["photos"]} == {m["photo_id"] for m in matches[:2]}
    # no CSRF token: refused; a bad status: refused; then ready with a note
    url = f"/api/v1/events/{party.id}/orders/{oid}"
    assert client.patch(url, json={"status": "ready"}).status_code == 403
    assert client.patch(url, json={"status": "lost"}, headers={"X-CSRF-Token": token}).status_code == 422
    r = client.patch(url, json={"status": "ready", "notes": "10x15 matte"}, headers={"X-CSRF-Token": token})
    assert r.status_code == 200 and (r.json()["status"], r.json()["notes"]) == ("ready", "10x15 matte")
    assert r.json()["updated_by"] == "staffer"

    # the page form: delivered
    page = client.get(f"/events/{party.id}/orders")
    assert page.status_code == 200 and ref in page.text and "10x15 matte" in page.text
    form = {"csrf_token": csrf_from(page.text), "status": "delivered", "notes": "collected"}
    assert client.post(f"/events/{party.id}/orders/{oid}", data=form, follow_redirects=False).status_code == 303
    assert ka.kiosk.orders.get(party.id, uuid.UUID(oid)).order.status == "delivered"
    assert client.get("/events").text.count("orders-count") >= 1

    # CSV: one row per order, formula-looking cells defused
    evil = place(client, matches[:1], name='=HYPERLINK("http://x")')
    rows = list(csv.DictReader(io.StringIO(client.get(f"/events/{party.id}/orders.csv").text)))
    by_ref = {r["reference"]: r for r in rows}
    assert by_ref[ref]["status"] == "delivered" and by_ref[ref]["photos"] == "2"
    assert by_ref[evil["reference"]]["name"].startswith("'=")

    # the ZIP of one order: exactly its originals, byte for byte
    r = client.get(f"/events/{party.id}/orders.zip", params={"order": oid})
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        assert zf.testzip() is None
        got = sorted(zf.read(n) for n in zf.namelist())
    originals = {str(pid): path for path, pid in ids.items()}
    want = sorted(originals[m["photo_id"]].read_bytes() for m in matches[:2])
    assert got == want

    audit = [(a.actor, a.action) for a in ka.service.store.session().exec(select(AuditLog))]
    assert ("staffer", "order_update") in audit and ("staffer", "order_export") in audit

    # erasure: the order goes with the guest's name and contact; the photos stay
    assert client.delete(url, headers={"X-CSRF-Token": token}).status_code == 200
    assert client.get(f"/api/v1/events/{party.id}/orders").json()["orders"][0]["order_id"] != oid
    assert client.delete(url, headers={"X-CSRF-Token": token}).status_code == 404
    with ka.service.store.session() as s:
        assert s.exec(select(GuestOrderPhoto).where(GuestOrderPhoto.order_id == uuid.UUID(oid))).all() == []
    assert len(ka.kiosk.events.photos(party.id)) == len(ids)
    client.cookies.clear()


def test_orders_leave_with_their_event(site, tmp_path):
    client, ka, people, _, _ = site
    gone = ka.kiosk.events.create_event("gone")
    upload_and_wait(ka.kiosk, gone.id, people.own[:2])
    matches = search(client, gone, people.selfie)["matches"]
    place(client, matches, name="Jo")
    assert ka.kiosk.orders.list(gone.id)
    ka.kiosk.events.delete_event(gone.id)
    with ka.service.store.session() as s:
        assert s.exec(select(GuestOrder).where(GuestOrder.event_id == gone.id)).all() == []
        assert s.exec(select(GuestOrderPhoto).where(GuestOrderPhoto.event_id == gone.id)).all() == []


def test_multi_selfie_search_is_backward_compatible_and_bounded(site):
    client, ka, people, party, ids = site
    one = search(client, party, people.selfie)
    assert one["selfies"] == 1
    two = search(client, party, people.selfie, people.own[0])
    assert two["selfies"] == 2
    # merged by the best similarity per photo: nothing one selfie found is lost
    assert {m["photo_id"] for m in one["matches"]} <= {m["photo_id"] for m in two["matches"]}
    sims = [m["similarity"] for m in two["matches"]]
    assert sims == sorted(sims, reverse=True)
    body = {"event_id": str(party.id), "face_images": [b64(people.selfie)] * 4}
    assert client.post("/api/v1/search/face", json=body).status_code == 422
    body = {"event_id": str(party.id), "face_images": "not a list"}
    assert client.post("/api/v1/search/face", json=body).status_code == 422
    # a selfie without a face refuses the search and says which one
    blank = base64.b64encode(cv2.imencode(".jpg", np.full((480, 640, 3), 128, np.uint8))[1].tobytes()).decode()
    r = client.post("/api/v1/search/face", json={"event_id": str(party.id), "face_images": [b64(people.selfie), blank]})
    assert r.status_code == 422 and r.json()["detail"].startswith("Selfie 2:")


def test_mean_merge_searches_once_with_the_mean_embedding(site):
    _, ka, people, party, _ = site
    images = [people.selfie.read_bytes(), people.own[0].read_bytes()]
    mean = ka.kiosk.search.search_many(party.id, images, merge="mean")
    best = ka.kiosk.search.search_many(party.id, images, merge="max")
    assert mean.selfies == best.selfies == 2
    assert {m.photo.id for m in mean.matches} and {m.photo.id for m in best.matches}
    with pytest.raises(ValueError):
        ka.kiosk.search.search_many(party.id, images, merge="median")


def test_qr_code_decodes_to_the_guest_url(site):
    client, ka, _, party, _ = site
    login(client, "staffer")
    r = client.get(f"/events/{party.id}/qr.svg")
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
    assert b"<svg" in r.content and b"href" not in r.content  # made here: no external reference
    poster = client.get(f"/events/{party.id}/poster")
    assert poster.status_code == 200 and party.code in poster.text and f"/events/{party.id}/qr.svg" in poster.text
    client.cookies.clear()
    assert decode_svg_qr(r.content) == f"http://testserver/kiosk?code={party.code}"


def decode_svg_qr(svg: bytes) -> str:
    """Rasterise segno's SVG (one path of unit moves, scaled) with numpy and decode it with OpenCV."""
    import re

    text = svg.decode()
    width = int(float(re.search(r'width="([\d.]+)"', text).group(1)))
    scale = float(re.search(r"scale\(([\d.]+)\)", text).group(1)) if "scale(" in text else 1.0
    d = re.search(r' d="([^"]+)"', text).group(1)
    n = int(round(width / scale))
    grid = np.full((n, n), 255, np.uint8)
    x = y = 0.0
    for cmd, a, b in re.findall(r"([MmhHvV])\s*([-\d.]+)(?:[ ,]([-\d.]+))?", d):
        if cmd in "Mm":
            x, y = (float(a), float(b)) if cmd == "M" else (x + float(a), y + float(b))
        elif cmd == "h":
            x0, x = x, x + float(a)
            grid[int(y - 0.5 + 0.01), int(min(x0, x)) : int(max(x0, x))] = 0
        elif cmd == "H":
            x0, x = x, float(a)
            grid[int(y - 0.5 + 0.01), int(min(x0, x)) : int(max(x0, x))] = 0
    image = cv2.resize(grid, (n * 8, n * 8), interpolation=cv2.INTER_NEAREST)
    text, _, _ = cv2.QRCodeDetector().detectAndDecode(image)
    return text


def test_zip_stream_holds_big_files_without_reading_them_whole(tmp_path):
    files = []
    for i in range(3):
        p = tmp_path / f"p{i}.jpg"
        p.write_bytes(np.random.default_rng(i).bytes(3 * 2**20 + i))
        files.append((f"A/p{i}.jpg", p))
    chunks = list(zip_stream(files, chunk=256 * 1024))
    assert max(len(c) for c in chunks) < 300 * 1024  # a chunk at a time, never a whole file
    with zipfile.ZipFile(io.BytesIO(b"".join(chunks))) as zf:
        assert zf.testzip() is None
        assert [zf.read(n) for n in zf.namelist()] == [p.read_bytes() for _, p in files]
