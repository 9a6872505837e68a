import uuid

import msgpack
import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from revisit.shared.schema import (
    MAX_ACK_IDS,
    MAX_CROP_BYTES,
    DeliveryAck,
    DeviceStatus,
    Ident,
    Observation,
    QualityFields,
    SchemaError,
    acks_topic,
    decode,
    encode,
    faces_topic,
    is_ident,
    parse_topic,
    status_topic,
)


def _vector(dim=512, seed=0):
    v = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
    return v / np.linalg.norm(v)


def observation_dict(**overrides):
    data = dict(
        v=1,
        observation_id=str(uuid.uuid4()),
        site="store-1",
        device="box-a",
        camera="door",
        track_id=7,
        first_ts=1000.0,
        last_ts=1004.0,
        best_ts=1002.0,
        recognizer_id="w600k_mbf@5e03a553209a",
        embedding=Observation.pack_vector(_vector()),
        embedding_dim=512,
        det_score=0.9,
        quality=dict(detector=0.9, size=1.0, sharpness=0.6, pose=0.8, score=0.8),
        box=(10.0, 20.0, 90.0, 120.0),
        landmarks=((30, 50), (70, 50), (50, 70), (35, 95), (65, 95)),
        crop_jpeg=b"\xff\xd8\xff\xe0fakejpeg",
        frame_size=(640, 480),
        frames_seen=12,
        co_tracks=(3, 9),
    )
    data.update(overrides)
    return data


def test_round_trip():
    obs = Observation(**observation_dict())
    back = decode(encode(obs))
    assert back == obs
    np.testing.assert_array_equal(back.vector(), _vector())


def test_landmarks_are_optional_and_quality_comes_from_the_engine_record():
    """Older edges send landmarks (accepted); newer ones leave them out. `QualityFields.of` drops the raw
    measurements of `face.Quality`."""
    from revisit.shared.face import Quality

    without = observation_dict()
    del without["landmarks"]
    assert decode(msgpack.packb(without, use_bin_type=True)).landmarks is None
    q = Quality(detector=0.9, size=1.0, sharpness=0.6, pose=0.8, score=0.8, face_px=64.0, yaw_deg=5.0)
    assert QualityFields.of(q).model_dump() == observation_dict()["quality"]


def test_status_round_trip():
    status = DeviceStatus(site="s", device="d", state="online", ts=5.0, stats={"frames_read": 10})
    assert decode(encode(status), DeviceStatus) == status


@pytest.mark.parametrize(
    ("overrides", "reason", "text"),
    [
        ({"v": 2}, "bad_version", "version 2"),
        ({"embedding_dim": 128}, "bad_embedding", "expected 4 x 128"),
        ({"embedding": Observation.pack_vector(_vector() * 2)}, "bad_embedding", "norm"),
        ({"embedding": Observation.pack_vector(np.full(512, np.nan))}, "bad_embedding", "non-finite"),
        ({"site": "../etc"}, "invalid", "site"),
        ({"observation_id": "not-a-uuid"}, "invalid", "observation_id"),
        ({"best_ts": 2000.0}, "invalid", "first_ts <= best_ts"),
        ({"first_ts": 1e12, "best_ts": 1e12, "last_ts": 1e12}, "invalid", "first_ts"),  # a broken clock
        ({"first_ts": -5.0}, "invalid", "first_ts"),
        ({"crop_jpeg": b"GIF89a"}, "invalid", "not a JPEG"),
        ({"crop_jpeg": b"\xff\xd8" + b"\0" * MAX_CROP_BYTES}, "invalid", "crop_jpeg"),
        ({"track_id": "seven"}, "invalid", "track_id"),
        ({"det_score": float("nan")}, "invalid", "det_score"),
        ({"quality": {"detector": 2}}, "invalid", "quality"),
        ({"extra_field": 1}, "invalid", "extra_field"),
        ({"co_tracks": (7,)}, "invalid", "own co-track"),
        ({"landmarks": ((1, 2),) * 4}, "invalid", "5 points"),  # still checked when an older edge sends them
        ({"frames_seen": 0}, "invalid", "frames_seen"),
    ],
)
def test_invalid_messages_have_reasons(overrides, reason, text):
    data = msgpack.packb(observation_dict(**overrides), use_bin_type=True)
    with pytest.raises(SchemaError) as info:
        decode(data)
    assert info.value.reason == reason
    assert text in str(info.value)


@pytest.mark.parametrize("data", [b"", b"\xc1", b"random bytes", msgpack.packb([1, 2]), msgpack.packb("x")])
def test_garbage(data):
    with pytest.raises(SchemaError):
        decode(data)


def test_random_bytes_never_escape_as_other_errors():
    rng = np.random.default_rng(0)
    for _ in range(2000):
        blob = rng.integers(0, 256, rng.integers(0, 300), dtype=np.uint8).tobytes()
        with pytest.raises(SchemaError):
            decode(blob)


def test_topics():
    assert faces_topic("s1", "d1") == "revisit/v1/s1/d1/faces"
    assert parse_topic(status_topic("s1", "d1")) == ("s1", "d1", "status")
    with pytest.raises(ValueError):
        faces_topic("a/b", "d")
    with pytest.raises(SchemaError):
        parse_topic("revisit/v1/+/d/faces")
    with pytest.raises(SchemaError):
        parse_topic("revisit/v1/s1\n/d/faces")


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("s1", True),
        ("_x", True),
        ("a.b-c_9", True),
        ("x" * 64, True),
        ("x" * 65, False),
        ("", False),
        ("s1\n", False),
        ("a/b", False),
        ("a b", False),
        ("+", False),
        ("é", False),
    ],
)
def test_ident_is_one_rule(value, ok):
    """Configs (pydantic `Ident`) and `is_ident` (topics, certificates, user scopes) agree."""
    assert is_ident(value) is ok
    try:
        TypeAdapter(Ident).validate_python(value)
        config_ok = True
    except ValidationError:
        config_ok = False
    assert config_ok is ok


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"v": True}, "bad_version"),  # bool is an int in Python: not in a message
        ({"v": 1.0}, "bad_version"),
        ({"track_id": True}, "invalid"),
        ({"track_id": 7.0}, "invalid"),
        ({"embedding_dim": 512.0}, "bad_embedding"),
        ({"frames_seen": True}, "invalid"),
        ({"frame_size": (640.0, 480)}, "invalid"),
        ({"co_tracks": (True,)}, "invalid"),
        ({"det_score": True}, "invalid"),
        ({"first_ts": False}, "invalid"),
        ({"box": (True, 20.0, 90.0, 120.0)}, "invalid"),
    ],
)
def test_types_are_strict(overrides, reason):
    raw = msgpack.packb(observation_dict(**overrides), use_bin_type=True)
    with pytest.raises(SchemaError) as err:
        decode(raw)
    assert err.value.reason == reason


def test_ints_are_accepted_where_floats_are_expected():
    obs = decode(msgpack.packb(observation_dict(first_ts=1000, best_ts=1002, last_ts=1004), use_bin_type=True))
    assert obs.first_ts == 1000.0


def test_delivery_ack_round_trip_and_limits():
    ids = tuple(str(uuid.uuid4()) for _ in range(3))
    ack = DeliveryAck(site="s", device="d", ts=5.0, stored=ids[:2], rejected=ids[2:])
    assert decode(encode(ack), DeliveryAck) == ack
    assert acks_topic("s", "d") == "revisit/v1/s/d/acks" and parse_topic(acks_topic("s", "d"))[2] == "acks"
    for bad in ({"stored": ["not-a-uuid"]}, {"stored": [str(uuid.uuid4())] * (MAX_ACK_IDS + 1)}, {"v": True}):
        raw = {"v": 1, "site": "s", "device": "d", "ts": 5.0} | bad
        with pytest.raises(SchemaError):
            decode(msgpack.packb(raw), DeliveryAck)
