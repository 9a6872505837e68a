"""Input bounds of the web app: body size and JSON depth on every body, offsets and times in queries (422/413,
never 500), and a schemathesis fuzz run of the public and staff API from the OpenAPI schema that finds no 500."""

from __future__ import annotations

import itertools
import json
import uuid

import pytest
from fastapi.testclient import TestClient

from revisit.central.bounds import json_depth
from revisit.central.web import create_app
from tests.central.webapp import login, open_service, web_config


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    service = open_service(web_config(tmp_path_factory.mktemp("bounds")))
    app = create_app(service)
    with TestClient(app) as client:
        client.headers["X-CSRF-Token"] = login(client)
        yield client
    service.stop()


def nested(depth: int, leaf: str = "1") -> str:
    return "[" * depth + leaf + "]" * depth


@pytest.mark.parametrize(
    "text, depth",
    [
        ("1", 0),
        ("{}", 1),
        ('{"a": [1, {"b": []}]}', 4),
        ('["[[[[", "]]"]', 1),
        (r'["\"[[[["]', 1),
        (nested(40), 40),
        ('{"a": "' + "{" * 100 + '"}', 1),
    ],
)
def test_json_depth(text, depth):
    assert json_depth(text.encode()) == depth


@pytest.mark.parametrize(
    "method, path",
    [
        ("PATCH", f"/api/v1/visitors/{uuid.uuid4()}"),
        ("POST", f"/api/v1/visitors/{uuid.uuid4()}/merge"),
        ("POST", "/api/v1/events"),  # staff
        ("POST", "/api/v1/search/face"),  # public
        ("POST", "/api/v1/orders"),  # public
    ],
)
def test_deep_json_is_422_never_500(client, method, path):
    for depth in (33, 5000, 100_000):
        body = '{"label": ' + nested(depth) + "}"
        r = client.request(method, path, content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 422 and "nested too deeply" in r.json()["detail"], (depth, r.status_code)
    # just within the limit: on to the handler (which answers for itself, but not with a 500)
    body = '{"label": ' + nested(30) + "}"
    r = client.request(method, path, content=body, headers={"Content-Type": "application/json"})
    kiosk_down = r.status_code == 503 and "kiosk is unavailable" in r.text  # no models configured here
    assert (r.status_code < 500 or kiosk_down) and "nested" not in r.text


def test_bodies_over_the_limit_are_413(client):
    big = json.dumps({"label": "x" * (1024 * 1024)})
    r = client.patch(f"/api/v1/visitors/{uuid.uuid4()}", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    r = client.post(
        "/visitors/merge",
        content="visitor_ids=" + "a" * (2 * 1024 * 1024),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 413
    r = client.post("/login", content=b"x" * (2 * 1024 * 1024), headers={"Content-Type": "multipart/form-data; b=x"})
    assert r.status_code == 413  # no spooling of a big multipart body by the CSRF check
    # the selfie search has its own, larger limit (base64 photos)
    selfie = json.dumps({"event_code": "ZZZZ2345", "face_image": "A" * (3 * 1024 * 1024)})
    r = client.post("/api/v1/search/face", content=selfie, headers={"Content-Type": "application/json"})
    assert r.status_code != 413
    huge = json.dumps({"event_code": "ZZZZ2345", "face_image": "A" * (13 * 1024 * 1024)})
    assert client.post("/api/v1/search/face", content=huge).status_code == 413
    metrics = client.get("/metrics").text
    assert 'revisit_central_http_refused_total{reason="size"}' in metrics
    assert client.app.state.body_refusals["size"] >= 4  # counted (and logged)


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/visitors?offset=9223372036854775808",
        "/api/v1/visitors?offset=10000001",
        "/api/v1/visitors?offset=-1",
        "/api/v1/loyal?offset=9223372036854775808",
        f"/api/v1/visitors/{uuid.uuid4()}?offset=9223372036854775808",
        "/api/v1/audit?offset=99999999999",
        "/api/v1/sightings?since=0001-01-01T00:00:00%2B14:00",
        "/api/v1/sightings?since=9999-12-31T23:59:59-14:00",
        "/api/v1/sightings?since=1900-01-01T00:00:00Z",
        "/api/v1/sightings?since=2026-01-01T00:00:00",
        "/api/v1/visits?since=0001-01-01T00:00:00%2B14:00",
        "/api/v1/visits?since=not-a-date",
        "/loyal?page=100001",
        "/visitors?page=0",
        "/api/v1/analytics?end=0001-01-01",
        "/api/v1/analytics?start=9999-12-31",
        "/api/v1/loyal?as_of=0001-01-01",
        "/loyal?as_of=0001-01-01",
        "/analytics?end=0001-01-01",
        "/exports/analytics.csv?end=0001-01-01",
    ],
)
def test_out_of_range_queries_are_422(client, path):
    r = client.get(path)
    assert r.status_code == 422, (path, r.status_code, r.text[:200])


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/visitors?offset=10000000",
        "/api/v1/sightings?since=2026-01-01T00:00:00%2B14:00",
        "/api/v1/visits?since=1970-01-02T00:00:00Z",
        "/api/v1/analytics?end=1970-02-01",
        "/api/v1/loyal?as_of=2026-01-01",
    ],
)
def test_in_range_queries_work(client, path):
    assert client.get(path).status_code == 200


# --- fuzzing -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory, engine):
    """The whole app with the kiosk on the real engine, an event, and an admin API token (no CSRF needed)."""
    from tests.central.kiosk.support import kiosk_app

    generous = {"search_per_client_min": 100_000, "lookup_per_client_min": 100_000, "burst": 1000}
    with kiosk_app(tmp_path_factory.mktemp("fuzz"), engine, **generous) as ka:
        ka.kiosk.events.create_event("fuzz party")
        raw, _ = ka.app.state.accounts.create_token("fuzzer", "admin")
        ka.app.state.fuzz_token = raw
        yield ka.app


FUZZ_EXAMPLES = 12


@pytest.mark.slow
@pytest.mark.models
def test_fuzz_api_finds_no_server_error(fuzz_app):
    """Every operation of the OpenAPI schema with generated input, valid (positive) and invalid (negative), as an
    admin token and anonymously, then schemathesis' boundary values: no answer is a 5xx. Bounded: FUZZ_EXAMPLES
    examples per operation and mode (about 25 operations: ~2,500 requests, ~1 min here)."""
    schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is in the dev extra")
    from hypothesis import HealthCheck, given, settings  # schemathesis brings hypothesis
    from hypothesis.errors import Unsatisfiable

    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)
    token = {"Authorization": f"Bearer {fuzz_app.state.fuzz_token}"}
    failures: list[str] = []
    tried: dict[str, int] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 24  # the public kiosk, the staff kiosk, visitors, sites, admin, operations

    def fuzz(operation, mode) -> None:
        @settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case) -> None:
            for headers in (token, {}):
                response = case.call(headers=headers)
                tried[operation.label] = tried.get(operation.label, 0) + 1
                if response.status_code >= 500:
                    what = f"{case.method} {case.formatted_path} ({mode.value})"
                    failures.append(f"{what} -> {response.status_code}: {response.text[:200]}")

        try:
            run()
        except Unsatisfiable:  # nothing to make invalid (an operation without parameters or body)
            assert mode == schemathesis.GenerationMode.NEGATIVE, operation.label

    for operation, mode in itertools.product(operations, schemathesis.GenerationMode):
        fuzz(operation, mode)
    for operation in operations:  # and schemathesis' boundary values of every parameter (its coverage phase)
        config = schema.config.generation_for(operation=operation)
        modes = list(schemathesis.GenerationMode)
        for case in schema.iter_coverage_cases(operation, generation_modes=modes, generation_config=config):
            for headers in (token, {}):
                response = case.call(headers=headers)
                tried[operation.label] = tried.get(operation.label, 0) + 1
                if response.status_code >= 500:
                    what = f"{case.method} {case.formatted_path} {case.query} (coverage)"
                    failures.append(f"{what} -> {response.status_code}: {response.text[:200]}")
    print(f"fuzzed {len(tried)} operations, {sum(tried.values())} requests")
    assert not failures, "\n".join(failures[:20])
