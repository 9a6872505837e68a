"""Ingest with the real parts: Mosquitto or the embedded amqtt broker, observations from the real face engine,
redelivery, a SIGKILL mid-ingest, and 10,000 malformed payloads."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import msgpack
import numpy as np
import pytest
from sqlmodel import func, select

from revisit.central.config import CentralConfig
from revisit.central.ingest import Ingestor
from revisit.central.service import CentralService
from revisit.central.store import Device, Sighting, Site, Store, Visit, Visitor
from revisit.shared.dataset import by_identity, load_labels
from revisit.shared.schema import MAX_CROP_BYTES, DeviceStatus, encode, faces_topic, peek_observation_id, status_topic
from tests.central.conftest import DIM, REC, make_obs, near, people, publisher, wait_for

REPO = Path(__file__).resolve().parents[2]


def count(store: Store, model, **where) -> int:
    with store.session() as s:
        stmt = select(func.count()).select_from(model)
        for k, v in where.items():
            stmt = stmt.where(getattr(model, k) == v)
        return int(s.exec(stmt).one())


def service_config(tmp_path: Path, broker_port: int | None, **extra) -> CentralConfig:
    # The test observations are of 2027: no clock-skew stamping ahead (tests of it set their own bounds).
    data: dict = {"data_dir": str(tmp_path / "central"), "ingest": {"recognizers": {REC: DIM}, "max_future_s": None}}
    if broker_port is None:
        data["embedded_broker"] = {"port": 0}
    else:
        data["broker"] = {"host": "127.0.0.1", "port": broker_port, "client_id": f"central-{uuid.uuid4().hex[:6]}"}
    return CentralConfig.model_validate(data | extra)


@pytest.fixture(scope="module")
def photo_observations(request):
    """Observations made by the real engine from ../shared photos: 3 people x 3 photos, two visits apart."""
    models_dir = request.getfixturevalue("models_dir")
    facedata = request.getfixturevalue("facedata")
    engine = request.getfixturevalue("engine")
    from revisit.shared.engine import central_face
    from revisit.shared.image import read_image

    groups = [(name, photos) for name, photos in by_identity(load_labels(facedata)).items() if len(photos) >= 3][:3]
    out = []
    for k, (name, photos) in enumerate(groups):
        for j, record in enumerate(photos[:3]):
            image = read_image(record.path)
            face = central_face(engine.analyze(image), image.shape)
            assert face is not None, record.path
            ts = 1_800_000_000.0 + 86400 * j + 60 * k  # photo j of each person on day j: 3 visits each
            x1, y1, x2, y2 = (int(max(0, v)) for v in face.box)
            crop = image[y1:y2, x1:x2]
            import cv2

            obs = make_obs(
                face.embedding,
                ts,
                track=10 * k + j,
                quality=face.quality.score,
                recognizer=engine.recognizer_id,
                crop=bytes(cv2.imencode(".jpg", crop)[1]),
            )
            out.append((name, obs))
    del models_dir
    return out


def _run_photo_flow(service: CentralService, port: int, photo_observations) -> None:
    pub = publisher(port)
    try:
        for _, obs in photo_observations:
            pub.publish(faces_topic(obs.site, obs.device), encode(obs), qos=1).wait_for_publish(10)
        first = photo_observations[0][1]
        pub.publish(faces_topic(first.site, first.device), encode(first), qos=1).wait_for_publish(10)  # redelivery
        status = DeviceStatus(
            site="s1", device="d1", state="online", ts=1_800_000_000.0, version="1.2", stats={"fps": 4.5}
        )
        pub.publish(status_topic("s1", "d1"), encode(status), qos=1, retain=True).wait_for_publish(10)
    finally:
        pub.loop_stop()
        pub.disconnect()
    n = len(photo_observations)
    wait_for(
        lambda: (
            service.counters.get("stored") == n
            and service.counters.get("duplicate") == 1
            and service.counters.get("status") >= 1
        ),
        what="all photos stored",
    )
    store = service.store
    assert count(store, Sighting) == n
    with store.session() as s:
        visitors = list(s.exec(select(Visitor)))
        assert len(visitors) == 3 and all(v.sighting_count == 3 and v.visit_count == 3 for v in visitors)
        by_visitor: dict = {}
        for (name, obs), sighting in zip(
            photo_observations,
            [
                s.exec(select(Sighting).where(Sighting.observation_id == uuid.UUID(o.observation_id))).one()
                for _, o in photo_observations
            ],
            strict=True,
        ):
            by_visitor.setdefault(sighting.visitor_id, set()).add(name)
            assert service.crops.path(sighting.crop_path).read_bytes() == obs.crop_jpeg
        assert all(len(names) == 1 for names in by_visitor.values())
        device = s.exec(select(Device)).one()
        assert device.state == "online" and device.version == "1.2" and device.stats == {"fps": 4.5}
    assert count(store, Visit) == 9


@pytest.mark.models
@pytest.mark.facedata
def test_photos_through_mosquitto(tmp_path, mosquitto, photo_observations):
    rec = photo_observations[0][1].recognizer_id
    config = service_config(tmp_path, mosquitto.port, ingest={"recognizers": {rec: 512}, "max_future_s": None})
    with CentralService(config) as service:
        assert service.mqtt.subscribed.wait(10)
        _run_photo_flow(service, mosquitto.port, photo_observations)


@pytest.mark.models
@pytest.mark.facedata
def test_photos_through_the_embedded_broker(tmp_path, photo_observations):
    with CentralService(service_config(tmp_path, None)) as service:
        assert service.broker is not None and service.broker.port
        assert service.mqtt.subscribed.wait(10)
        _run_photo_flow(service, service.broker.port, photo_observations)


def _malformed(rng: np.random.Generator, i: int) -> tuple[str, bytes]:
    """One of many kinds of bad message (topic, payload)."""
    good = make_obs(people(1, seed=i % 7)[0], track=i)
    raw = good.model_dump()
    topic = faces_topic("s1", "d1")
    kind = i % 12
    if kind == 0:
        return topic, rng.bytes(int(rng.integers(0, 300)))
    if kind == 1:
        return topic, msgpack.packb([1, 2, 3])
    if kind == 2:
        return topic, msgpack.packb({**raw, "track_id": "seven"})
    if kind == 3:
        vec = good.vector().copy()
        vec[i % DIM] = math.nan
        return topic, msgpack.packb({**raw, "embedding": vec.astype("<f4").tobytes()})
    if kind == 4:  # wrong dimension for the recognizer (unit norm, consistent sizes)
        vec = np.ones(DIM * 2, "<f4") / math.sqrt(DIM * 2)
        return topic, msgpack.packb({**raw, "embedding": vec.tobytes(), "embedding_dim": DIM * 2})
    if kind == 5:  # an oversized crop; the first time, a message over the size limit
        size = 1_100_000 if i == 5 else MAX_CROP_BYTES + 10
        return topic, msgpack.packb({**raw, "crop_jpeg": b"\xff\xd8" + b"\0" * size})
    if kind == 6:
        return topic, msgpack.packb({**raw, "crop_jpeg": b"\xff\xd8 not really a jpeg"})
    if kind == 7:
        return topic, msgpack.packb({**raw, "recognizer_id": "unknown@123"})
    if kind == 8:
        return faces_topic("other-site", "d1"), encode(good)
    if kind == 9:
        return f"revisit/v1/s1@{'x' * (i % 5)}/d1/faces", encode(good)  # matches the subscription, bad id
    if kind == 10:
        return status_topic("s1", "d1"), msgpack.packb({"v": 1, "site": "s1", "device": "d1", "state": "??"})
    return topic, msgpack.packb({**raw, "v": 2})


def test_malformed_payloads_are_counted_and_never_crash(tmp_path, make_clusterer):
    """Every kind of bad message, straight into the ingestor: each is a counted rejection with a reason."""
    c = make_clusterer()
    ingestor = Ingestor(c, c.store, {REC: DIM}, retry_delays=())
    rng = np.random.default_rng(0)
    reasons = set()
    per_topic: Counter[str] = Counter()
    for i in range(240):
        topic, payload = _malformed(rng, i)
        outcome = ingestor.handle(topic, payload)
        assert outcome.kind == "rejected" and outcome.ack, (i, outcome)
        reasons.add(outcome.reason)
        per_topic[topic] += 1
    assert reasons >= {
        "not_msgpack",
        "not_a_map",
        "invalid",
        "bad_embedding",
        "bad_dimension",
        "too_large",
        "bad_crop",
        "unknown_recognizer",
        "topic_mismatch",
        "bad_topic",
        "bad_version",
    }
    assert sum(ingestor.counters.rejected().values()) == 240 and count(c.store, Sighting) == 0
    # Each device (of the topic it came on) counts what was rejected from it; a topic naming none counts nowhere.
    expected = {
        ("s1", "d1"): per_topic[faces_topic("s1", "d1")] + per_topic[status_topic("s1", "d1")],
        ("other-site", "d1"): per_topic[faces_topic("other-site", "d1")],
    }
    with c.store.session() as s:
        got = {(site.name, dev.name): dev.rejected for dev, site in s.exec(select(Device, Site).join(Site))}
    assert got == expected and 0 < sum(expected.values()) < 240
    assert ingestor.handle(faces_topic("s1", "d1"), encode(make_obs(people(1)[0]))).kind == "stored"


@pytest.mark.slow
def test_ten_thousand_malformed_payloads_through_mosquitto(tmp_path, mosquitto):
    # A queue for the whole burst: counting is the point here (flow control: tests/central/test_delivery.py,
    # where a message whose PUBACK was lost in the reconnect is processed again: stored once, counted twice).
    ingest = {"recognizers": {REC: DIM}, "max_future_s": None, "queue_size": 20_000}
    config = service_config(tmp_path, mosquitto.port, ingest=ingest)
    rng = np.random.default_rng(1)
    payloads = [_malformed(rng, i) for i in range(10_000)]
    with CentralService(config) as service:
        assert service.mqtt.subscribed.wait(10)
        pub = publisher(mosquitto.port)
        for topic, payload in payloads:
            info = pub.publish(topic, payload, qos=1)
        info.wait_for_publish(60)
        good = make_obs(people(1)[0])
        pub.publish(faces_topic("s1", "d1"), encode(good), qos=1).wait_for_publish(10)
        wait_for(lambda: service.counters.get("stored") == 1, timeout=120, what="the good message after the bad")
        pub.loop_stop()
        pub.disconnect()
        rejected = service.counters.rejected()
        assert sum(rejected.values()) == 10_000, {k: v for k, v in service.counters.snapshot().items() if "." not in k}
        assert service.mqtt.connected.is_set() and count(service.store, Sighting) == 1


def _start_central(config_path: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "revisit.cli", "central", "run", "--config", str(config_path)],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env=env,
        cwd=REPO,
    )


@pytest.mark.slow
def test_sigkill_mid_ingest_loses_nothing(tmp_path, mosquitto):
    data = tmp_path / "central"
    config_path = tmp_path / "central.toml"
    config_path.write_text(
        f'data_dir = "{data}"\n[broker]\nhost = "127.0.0.1"\nport = {mosquitto.port}\nclient_id = "central-kill"\n'
        f'[ingest]\nmax_future_s = 1e9\n[ingest.recognizers]\n"{REC}" = {DIM}\n[web]\nport = 0\n'
    )
    log = tmp_path / "central.log"
    store = Store(f"sqlite:///{data / 'revisit.db'}")
    proc = _start_central(config_path, log)
    try:
        # wait until the service's persistent session is subscribed: a status message reaches the database
        pub = publisher(mosquitto.port)
        status = encode(DeviceStatus(site="s1", device="d1", state="online", ts=1_800_000_000.0))

        def subscribed() -> bool:
            pub.publish(status_topic("s1", "d1"), status, qos=1).wait_for_publish(5)
            try:
                return count(store, Device) == 1
            except Exception:  # tables not created yet
                return False

        wait_for(subscribed, timeout=60, interval=0.3, what=f"central to subscribe; log: {log}")
        faces = people(40, seed=5)
        total = 240
        observations = [
            make_obs(near(faces[i % 40], seed=i), ts=1_800_000_000.0 + 97 * i, track=i) for i in range(total)
        ]
        for obs in observations:
            info = pub.publish(faces_topic("s1", "d1"), encode(obs), qos=1)
        info.wait_for_publish(30)
        wait_for(lambda: count(store, Sighting) >= 40, timeout=60, interval=0.02, what="ingest to begin")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        stored_at_kill = count(store, Sighting)
        assert stored_at_kill < total, "too fast to kill mid-ingest"
        # more arrive while it is down: the broker queues them for the persistent session
        extra = [
            make_obs(near(faces[i % 40], seed=1000 + i), ts=1_900_000_000.0 + 97 * i, track=1000 + i) for i in range(30)
        ]
        for obs in extra:
            info = pub.publish(faces_topic("s1", "d1"), encode(obs), qos=1)
        info.wait_for_publish(30)
        proc = _start_central(config_path, log)
        wait_for(lambda: count(store, Sighting) == total + len(extra), timeout=120, what=f"all sightings; {log}")
        pub.loop_stop()
        pub.disconnect()
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)
    with store.session() as s:
        ids = {str(x) for x in s.exec(select(Sighting.observation_id))}
        assert ids == {o.observation_id for o in observations + extra}  # each exactly once (unique column)
        assert int(s.exec(select(func.sum(Visitor.sighting_count))).one()) == total + len(extra)
        assert count(store, Visitor) == 40
    store.dispose()
    # the restarted service repaired the vector index up to the database: reopen it (the service has exited)
    from revisit.central.vectors import open_vectors

    vectors = open_vectors("embedded", path=data / "vectors")
    vectors.ensure(REC, DIM)
    assert vectors.count(REC, "sightings") == total + len(extra) and vectors.count(REC) == 40
    vectors.close()
    assert proc.returncode == 0, log.read_text()[-3000:]


def test_transient_store_errors_are_retried_not_acknowledged(make_clusterer):
    # A pool timeout is not a bug: it is retried, and only a lasting failure leaves the message unacknowledged.
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    c = make_clusterer()
    failures = {"left": 2}
    real = c.ingest_batch

    def flaky(observations, *a, **kw):
        if failures["left"]:
            failures["left"] -= 1
            raise PoolTimeout("QueuePool limit reached")
        return real(observations, *a, **kw)

    c.ingest_batch = flaky
    ingestor = Ingestor(c, c.store, {REC: DIM}, retry_delays=(0.01, 0.01))
    obs = make_obs(people(1)[0])
    outcome = ingestor.handle(faces_topic("s1", "d1"), encode(obs))
    assert outcome.kind == "stored" and outcome.ack
    failures["left"] = 5
    outcome = ingestor.handle(faces_topic("s1", "d1"), encode(make_obs(people(2)[1])))
    assert outcome.kind == "error" and not outcome.ack


def test_schema_strictness_is_counted(make_clusterer):
    c = make_clusterer()
    ingestor = Ingestor(c, c.store, {REC: DIM}, retry_delays=())
    raw = make_obs(people(1)[0]).model_dump()
    for v in (True, 1.0):
        outcome = ingestor.handle(faces_topic("s1", "d1"), msgpack.packb({**raw, "v": v}))
        assert (outcome.kind, outcome.reason) == ("rejected", "bad_version")
        assert outcome.observation_id == raw["observation_id"]  # named in the edge's ack as rejected
    outcome = ingestor.handle(faces_topic("s1", "d1"), msgpack.packb({**raw, "track_id": True}))
    assert (outcome.kind, outcome.reason) == ("rejected", "invalid")
    assert ingestor.counters.rejected() == {"bad_version": 2, "invalid": 1} and count(c.store, Sighting) == 0


def test_clock_skew_is_counted_and_stamped_and_backfill_is_not(make_clusterer):
    """1970 and 2100 from a broken clock: stored at the receive time, flagged, counted; the same through the
    backfill path keeps its own times, flagged as backfill."""
    import time as _time

    from revisit.central.store import SightingFlag

    c = make_clusterer()
    ingestor = Ingestor(c, c.store, {REC: DIM}, max_past_s=86400, max_future_s=300)
    person = people(1)[0]
    now = _time.time()
    old = make_obs(near(person, seed=1), ts=0.0, duration=4.0)
    future = make_obs(near(person, seed=2), ts=4_102_444_000.0, duration=4.0)
    fine = make_obs(near(person, seed=3), ts=now - 600)
    for obs in (old, future, fine):
        assert ingestor.handle(faces_topic("s1", "d1"), encode(obs)).kind == "stored"
    assert ingestor.counters.get("clock_skew") == 2
    with c.store.session() as s:
        visitor = s.exec(select(Visitor)).one()
        assert visitor.sighting_count == 3
        assert now - 700 <= visitor.first_seen.timestamp() and visitor.last_seen.timestamp() <= _time.time() + 1
        flags = {str(f.sighting_id): f for f in s.exec(select(SightingFlag))}
        rows = {str(r.observation_id): r for r in s.exec(select(Sighting))}
        stamped = rows[old.observation_id]
        assert abs(stamped.last_ts.timestamp() - now) < 30 and stamped.last_ts - stamped.first_ts <= (
            __import__("datetime").timedelta(seconds=4)
        )
        assert flags[str(stamped.id)].kind == "clock_skew" and flags[str(stamped.id)].device_ts == old.best_ts
        assert str(rows[fine.observation_id].id) not in flags
    back = make_obs(near(person, seed=4), ts=1_000_000_000.0)
    assert ingestor.handle(faces_topic("s1", "d1"), encode(back), backfill=True).kind == "stored"
    assert ingestor.counters.get("clock_skew") == 2 and ingestor.counters.get("backfill") == 1
    with c.store.session() as s:
        row = s.exec(select(Sighting).where(Sighting.observation_id == uuid.UUID(back.observation_id))).one()
        assert row.best_ts.timestamp() == back.best_ts
        assert s.get(SightingFlag, row.id).kind == "backfill"


def test_ingest_batch_assigns_like_one_by_one(make_clusterer):
    """A batch sees its own earlier observations (new visitors, moved prototypes, duplicates inside it)."""
    faces = people(5, seed=9)
    obs = [make_obs(near(faces[i % 5], seed=i), ts=1_800_000_000.0 + 60 * i, track=i) for i in range(40)]
    one, batch = make_clusterer(), make_clusterer()
    singles = [one.ingest(o) for o in obs]
    together = batch.ingest_batch(obs[:25] + [obs[3]]) + batch.ingest_batch(obs[25:])
    assert [a.created for a in singles] == [a.created for a in together[:25] + together[26:]]
    assert together[25].duplicate and together[25].visitor_id == together[3].visitor_id
    assert count(batch.store, Visitor) == count(one.store, Visitor) == 5

    def groups(results):
        return sorted(
            sorted(i for i, a in enumerate(results) if a.visitor_id == v) for v in {a.visitor_id for a in results}
        )

    assert groups(singles) == groups(together[:25] + together[26:])
    assert batch.vectors.count(REC, "sightings") == 40 and batch.vectors.count(REC) == 5


def test_backfill_cli_ingests_files_and_streams(tmp_path, capsys):
    """One message per file and a msgpack stream; a bad message is rejected and counted (exit 1); a rerun
    finds everything stored (duplicates, exit 0)."""
    import json as _json

    from revisit.central.store import SightingFlag
    from revisit.cli import main

    faces = people(3, seed=11)
    obs = [make_obs(near(faces[i % 3], seed=i), ts=1_000_000_000.0 + 3600 * i, track=i) for i in range(9)]
    (tmp_path / "one.msgpack").write_bytes(encode(obs[0]))
    (tmp_path / "stream.msgpack").write_bytes(b"".join(encode(o) for o in obs[1:]))
    bad = msgpack.packb({**obs[0].model_dump(), "observation_id": str(uuid.uuid4()), "v": True})
    (tmp_path / "bad.msgpack").write_bytes(bad)
    config = tmp_path / "central.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n[ingest.recognizers]\n"{REC}" = {DIM}\n')
    files = [str(tmp_path / n) for n in ("one.msgpack", "stream.msgpack", "bad.msgpack")]
    assert main(["central", "backfill", "--config", str(config), *files]) == 1
    report = _json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["stored"] == 9 and report["rejected"] == {"bad_version": 1} and report["messages"] == 10
    assert main(["central", "backfill", "--config", str(config), *files[:2]]) == 0
    assert _json.loads(capsys.readouterr().out.strip().splitlines()[-1])["duplicate"] == 9
    store = Store(f"sqlite:///{tmp_path / 'data' / 'revisit.db'}")
    assert count(store, Sighting) == 9 and count(store, SightingFlag, kind="backfill") == 9
    with store.session() as s:
        assert min(x.timestamp() for x in s.exec(select(Sighting.first_ts))) == 1_000_000_000.0  # trusted times
    store.dispose()


def test_a_poison_observation_is_dead_lettered_rejected_acked_and_replayed(tmp_path, make_clusterer, capsys):
    """A real fault inside the assignment of one observation of a batch: the others are stored, the bad one is
    kept as a dead letter (payload, topic, error) and acknowledged to the edge as rejected; a resend of it keeps
    one row; once the fault is gone, `backfill --dead-letters` stores it and deletes the dead letter."""
    import json as _json

    from revisit.central.store import DeadLetter
    from revisit.cli import main

    config = CentralConfig.model_validate(
        {"data_dir": str(tmp_path / "data"), "ingest": {"recognizers": {REC: DIM}, "max_future_s": None}}
    )
    service = CentralService(config).open()
    ingestor = service.make_ingestor()
    c = service.clusterer
    faces = people(4, seed=21)
    now = float(int(__import__("time").time()))  # recent: the replay checks clock skew against the first receive time
    obs = [make_obs(near(faces[i], seed=i), ts=now - 3600 + 60 * i, track=i) for i in range(4)]
    poison = obs[2].observation_id
    real = c._ingest_in

    def faulty(s, o, *a, **kw):
        if o.observation_id == poison:
            raise KeyError("a bug that only this observation meets")
        return real(s, o, *a, **kw)

    c._ingest_in = faulty
    topic = faces_topic("s1", "d1")
    outcomes = ingestor.handle_batch([(topic, encode(o)) for o in obs])
    assert [o.kind for o in outcomes] == ["stored", "stored", "dead_letter", "stored"]
    bad = outcomes[2]
    assert bad.ack and (bad.site, bad.device, bad.observation_id) == ("s1", "d1", poison)
    assert ingestor.counters.get("dead_letters") == 1 and ingestor.counters.get("error") == 0
    assert count(c.store, Sighting) == 3
    with c.store.session() as s:
        row = s.exec(select(DeadLetter)).one()
        assert (row.topic, row.site, row.observation_id, row.payload) == (topic, "s1", poison, encode(obs[2]))
        assert "KeyError" in row.error and row.attempts == 1
        assert s.exec(select(Device)).one().rejected == 1

    # The edge is told: the poison id is in the rejected list of its DeliveryAck, the others in stored.
    from revisit.central.ingest import MqttIngest
    from revisit.shared.schema import DeliveryAck, decode

    sent: list[tuple[str, bytes]] = []
    mq = MqttIngest(ingestor, "127.0.0.1", 1)
    mq.client.publish = lambda t, payload, qos: sent.append((t, payload))  # the network is not under test here
    mq._send_acks(outcomes)
    ack = decode(sent[0][1], DeliveryAck)
    assert ack.rejected == (poison,) and set(ack.stored) == {o.observation_id for o in obs} - {poison}

    # A resend before the fix: one dead letter still, attempts counted.
    assert ingestor.handle(topic, encode(obs[2])).kind == "dead_letter"
    assert count(c.store, DeadLetter) == 1
    with c.store.session() as s:
        assert s.exec(select(DeadLetter)).one().attempts == 2
    service.stop()

    # The fault fixed (a new process): the replay stores it and deletes the dead letter.
    config_file = tmp_path / "central.toml"
    config_file.write_text(f'data_dir = "{tmp_path / "data"}"\n[ingest.recognizers]\n"{REC}" = {DIM}\n')
    assert main(["central", "backfill", "--config", str(config_file), "--dead-letters"]) == 0
    report = _json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["dead_letters"] == {"replayed": 1, "outcomes": {"stored": 1}, "left": 0}
    store = Store(f"sqlite:///{tmp_path / 'data' / 'revisit.db'}")
    assert count(store, Sighting) == 4 and count(store, DeadLetter) == 0
    with store.session() as s:
        row = s.exec(select(Sighting).where(Sighting.observation_id == uuid.UUID(poison))).one()
        assert row.best_ts.timestamp() == obs[2].best_ts
    store.dispose()


def test_a_dead_letter_that_cannot_be_saved_is_not_acknowledged_to_the_edge(make_clusterer):
    c = make_clusterer()
    ingestor = Ingestor(c, c.store, {REC: DIM}, retry_delays=())
    c._ingest_in = lambda *a, **kw: (_ for _ in ()).throw(KeyError("bug"))
    with c.store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE dead_letter")  # the dead-letter store is broken too
    outcome = ingestor.handle(faces_topic("s1", "d1"), encode(make_obs(people(1)[0])))
    assert (outcome.kind, outcome.observation_id) == ("error", "")  # no application ack: the edge resends it
    assert ingestor.counters.get("dead_letters") == 0 and ingestor.counters.get("error") == 1


def test_mqtt_delivery_counters_count_a_message_refused_again_once(make_clusterer):
    """paho's own messages through the ingest's callback, the queue full: a message the broker resends after
    each reconnect (same packet id, DUP set) is one refused message and several refusals; a resend of a message
    still queued is skipped, not queued twice."""
    import paho.mqtt.client as paho

    from revisit.central.ingest import MqttIngest

    c = make_clusterer()
    ingestor = Ingestor(c, c.store, {REC: DIM})
    mq = MqttIngest(ingestor, "127.0.0.1", 1, queue_size=2)
    topic = faces_topic("s1", "d1").encode()

    def deliver(mid: int, dup: bool) -> None:
        msg = paho.MQTTMessage(mid, topic)
        msg.qos, msg.dup, msg.payload = 1, dup, encode(make_obs(people(1)[0]))
        mq._on_message(mq.client, None, msg)

    deliver(1, False)
    deliver(2, False)  # the queue is full now
    for dup in (False, True, True):  # refused, then the broker's resends after two reconnects
        deliver(3, dup)
    deliver(2, True)  # a resend of a message still queued: skipped
    counts = ingestor.counters.snapshot()
    assert counts == {
        "deliveries": 6,
        "redelivered": 3,
        "flow_refused": 3,
        "flow_refused_messages": 1,
        "resend_skipped": 1,
    }
    assert [m.mid for m in mq._take()] == [1, 2]  # the queue drains (what the worker does)
    deliver(3, True)  # queued at last
    deliver(4, False)
    deliver(5, False)  # refused: a new message
    counts = ingestor.counters.snapshot()
    assert (counts["flow_refused"], counts["flow_refused_messages"], counts["deliveries"]) == (4, 2, 9)


def test_a_bug_in_validation_dead_letters_the_message_too(make_clusterer):
    c = make_clusterer()
    ingestor = Ingestor(c, c.store, {REC: DIM})
    obs = make_obs(people(1)[0])
    real = ingestor._prepare_faces

    def buggy(site, device, payload, *a, **kw):
        if peek_observation_id(payload) == obs.observation_id:
            raise AttributeError("a bug in a check")
        return real(site, device, payload, *a, **kw)

    ingestor._prepare_faces = buggy
    other = make_obs(people(2)[1], track=2)
    outcomes = ingestor.handle_batch([(faces_topic("s1", "d1"), encode(x)) for x in (obs, other)])
    assert [(o.kind, o.observation_id) for o in outcomes] == [
        ("dead_letter", obs.observation_id),
        ("stored", other.observation_id),
    ]
    from revisit.central.store import DeadLetter

    with c.store.session() as s:
        assert s.exec(select(DeadLetter)).one().error == "AttributeError: a bug in a check"
    ingestor._prepare_faces = real
    assert ingestor.replay_dead_letters() == {"stored": 1} and count(c.store, DeadLetter) == 0
