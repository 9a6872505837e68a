"""Recognise once per track: the shot decisions as tables, the lifecycle with a stand-in embedder."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from revisit.edge.config import CameraConfig, RecogniseConfig
from revisit.edge.recognise import (
    Recogniser,
    ShotRules,
    encode_jpeg,
    is_better_shot,
    padded_crop,
    should_reembed,
)
from revisit.edge.track import BoxFilter, Track
from revisit.shared.face import Face, Quality
from revisit.shared.schema import decode, encode
from tests.edge.conftest import make_face

RULES = ShotRules(min_quality=0.25, min_face_px=24, reembed_size_ratio=1.5, reembed_quality_delta=0.2, max_embeds=3)


def shot(score: float | None, px: float = 60) -> Face:
    """A face of `px` pixels with quality `score` (None: not assessed)."""
    face = make_face(0, 0, px, px)
    if score is not None:
        face.quality = Quality(detector=0.9, size=0.8, sharpness=0.7, pose=0.9, score=score, face_px=px)
        face.crop = np.zeros((112, 112, 3), np.uint8)
    return face


BETTER = {
    # name: (old, new, new is better)
    "first shot": (None, shot(0.1), True),
    "higher quality": (shot(0.5), shot(0.6), True),
    "lower quality": (shot(0.6), shot(0.5), False),
    "a tie keeps the old one": (shot(0.5), shot(0.5), False),
    "embeddable beats a sharper tiny face": (shot(0.9, px=20), shot(0.3, px=40), True),
    "a tiny face never replaces an embeddable one": (shot(0.3, px=40), shot(0.9, px=20), False),
    "embeddable beats below min_quality": (shot(0.2), shot(0.26), True),
    "two unembeddable: quality decides": (shot(0.1), shot(0.2), True),
    "unassessed never beats assessed": (shot(0.3), shot(None), False),
}


@pytest.mark.parametrize("old,new,expected", BETTER.values(), ids=BETTER.keys())
def test_is_better_shot(old, new, expected):
    assert is_better_shot(old, new, RULES) is expected


REEMBED = {
    # name: (embedded, best, embeds so far, expected)
    "first embeddable shot": (None, shot(0.5), 0, True),
    "nothing embeddable yet": (None, shot(0.2), 0, False),
    "too small to embed": (None, shot(0.9, px=20), 0, False),
    "slightly better: no": (shot(0.5), shot(0.6), 1, False),
    "quality + 0.2: yes": (shot(0.5), shot(0.7), 1, True),
    "1.5x larger: yes": (shot(0.5, px=40), shot(0.5, px=60), 1, True),
    "1.4x larger: no": (shot(0.5, px=40), shot(0.5, px=56), 1, False),
    "cap reached": (shot(0.3), shot(0.9), 3, False),
    "the same shot": ((same := shot(0.5)), same, 1, False),
}


@pytest.mark.parametrize("embedded,best,embeds,expected", REEMBED.values(), ids=REEMBED.keys())
def test_should_reembed(embedded, best, embeds, expected):
    assert should_reembed(embedded, best, embeds, RULES) is expected


# -- the lifecycle ---------------------------------------------------------------------------------------

CAMERA = CameraConfig(id="door", source="x.mp4", min_face_px=24)
IMAGE = np.full((240, 320, 3), 90, np.uint8)


def unit(seed: int, dim: int = 8) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


class Harness:
    """A recogniser, tracks made by hand, and an embedder that counts its calls."""

    def __init__(self, **config):
        self.rec = Recogniser(CAMERA, RecogniseConfig(**config), "site", "box", "test@1")
        self.tracks: dict[int, Track] = {}
        self.embedded = 0

    def track(self, key: int, track_id: int = 0) -> Track:
        t = self.tracks.get(key) or Track(key, 0.0, 0.0, None, BoxFilter(np.zeros(4), 0.0))
        t.id = track_id
        self.tracks[key] = t
        return t

    def see(self, key: int, track_id: int, face: Face, ts: float) -> None:
        self.rec.observe(self.track(key, track_id), face, IMAGE, ts)
        for k, f in self.rec.wanted():
            self.rec.set_embedding(k, f, unit(k + 100 * self.embedded))
            self.embedded += 1


def test_one_track_one_embedding_one_observation():
    h = Harness(mean_shots=1)  # one shot per track (the default is the mean of two: below)
    h.see(0, 0, shot(0.4), 10.0)  # tentative: not embedded yet
    assert h.embedded == 0
    for i, q in enumerate([0.5, 0.55, 0.6, 0.45]):
        h.see(0, 7, shot(q), 10.2 + 0.2 * i)
    assert h.embedded == 1
    obs = h.rec.end(h.tracks[0])
    assert obs is not None and decode(encode(obs)) == obs
    assert (obs.track_id, obs.camera, obs.site, obs.device) == (7, "door", "site", "box")
    assert obs.first_ts == 10.0 and obs.last_ts == pytest.approx(10.8) and obs.frames_seen == 5
    assert obs.best_ts == pytest.approx(10.2)  # the embedded shot (0.4 was tentative, 0.5 the first confirmed)
    assert obs.quality.score == pytest.approx(0.5) and obs.landmarks is None  # central does not use them
    assert obs.embedding_dim == 8 and obs.recognizer_id == "test@1"
    assert cv2.imdecode(np.frombuffer(obs.crop_jpeg, np.uint8), cv2.IMREAD_COLOR) is not None
    assert h.rec.stats.as_dict() == {
        "embeds": 1,
        "reembeds": 0,
        "observations": 1,
        "tracks_published": 1,
        "tracks_unembeddable": 0,
        "invalid": 0,
    }


def test_reembeds_only_when_clearly_better_and_capped():
    h = Harness(max_embeds_per_track=2, mean_shots=1)
    for i, q in enumerate([0.3, 0.35, 0.6, 0.65, 0.9, 0.95]):
        h.see(0, 1, shot(q), float(i))
    assert h.embedded == 2  # 0.3 (first), 0.6 (+0.3); 0.9 would be the third: capped
    obs = h.rec.end(h.tracks[0])
    assert obs.quality.score == pytest.approx(0.6) and obs.best_ts == 2.0
    assert np.allclose(obs.vector(), unit(100))
    assert h.rec.stats.reembeds == 1


def test_unembeddable_track_publishes_nothing_and_is_counted():
    h = Harness()
    for i in range(5):
        h.see(0, 3, shot(0.1), float(i))
    h.see(1, 0, shot(0.9), 0.0)  # never confirmed: neither published nor counted
    assert h.rec.end(h.tracks[0]) is None and h.rec.end(h.tracks[1]) is None
    assert h.rec.stats.tracks_unembeddable == 1 and h.rec.stats.observations == 0
    assert h.embedded == 0 and not h.rec.states


def test_co_tracks():
    h = Harness()
    for i in range(3):
        h.see(0, 1, shot(0.5), float(i))
        h.see(1, 2, shot(0.5), float(i))
        h.rec.together([1, 2])
    h.see(2, 3, shot(0.5), 5.0)
    h.rec.together([3])
    assert h.rec.end(h.tracks[0]).co_tracks == (2,)
    assert h.rec.end(h.tracks[1]).co_tracks == (1,)
    assert h.rec.end(h.tracks[2]).co_tracks == ()


def test_long_track_publishes_every_interval_with_the_same_id():
    h = Harness(publish_interval_s=10)
    published = []
    for i in range(125):  # 25 s at 5 fps
        ts = 1000.0 + i * 0.2
        h.see(0, 9, shot(0.5 + (i % 3) * 0.01), ts)
        published += h.rec.due(ts)
    published.append(h.rec.end(h.tracks[0]))
    assert [o.track_id for o in published] == [9, 9, 9]
    assert len({o.observation_id for o in published}) == 3
    for a, b in zip(published, published[1:], strict=False):
        assert a.last_ts < b.first_ts  # windows do not overlap
    assert published[0].first_ts == 1000.0 and published[-1].last_ts == pytest.approx(1024.8)
    assert h.embedded == 6  # two shots per window (mean_shots = 2, the default)
    assert h.rec.stats.tracks_published == 1 and h.rec.stats.observations == 3


def test_padded_crop_is_bounded_and_a_copy():
    image = np.random.default_rng(0).integers(0, 255, (1080, 1920, 3), dtype=np.uint8)
    crop = padded_crop(image, np.array([800, 300, 1400, 900]), 0.3, 256)
    assert max(crop.shape[:2]) == 256 and crop.base is None
    edge = padded_crop(image, np.array([0, 0, 50, 40]), 0.5, 256)  # clipped at the frame's corner
    assert edge.shape[:2] == (60, 75)
    small = padded_crop(image, np.array([10, 10, 30, 30]), 0.0, 256)
    assert small.shape[:2] == (20, 20) and small.base is None


def test_encode_jpeg_fits_the_limit():
    noise = np.random.default_rng(0).integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
    assert len(encode_jpeg(noise, 100, max_bytes=600_000)) <= 600_000
    assert encode_jpeg(noise[:64, :64], 90).startswith(b"\xff\xd8")


def test_mean_of_the_best_shots():
    h = Harness(mean_shots=3)
    for i, q in enumerate([0.5, 0.3, 0.6, 0.4]):
        h.see(0, 1, shot(q), float(i))
    assert h.embedded == 3  # 0.5 (first), 0.3 and 0.6 entered the best three; 0.4 came after the budget
    obs = h.rec.end(h.tracks[0])
    mean = unit(200) + unit(0) + unit(100)  # the best three embedded: 0.6, 0.5 and 0.3 (0.4 has no embedding)
    assert np.allclose(obs.vector(), mean / np.linalg.norm(mean), atol=1e-6)
    assert obs.quality.score == pytest.approx(0.6) and obs.best_ts == 2.0  # crop and quality: the best shot
    assert cv2.imdecode(np.frombuffer(obs.crop_jpeg, np.uint8), cv2.IMREAD_COLOR) is not None


def test_default_publishes_the_mean_of_two_shots():
    h = Harness()
    h.see(0, 0, shot(0.4), 10.0)  # tentative: not embedded yet
    for i, q in enumerate([0.5, 0.55, 0.6, 0.45]):
        h.see(0, 7, shot(q), 10.2 + 0.2 * i)
    assert h.embedded == 2  # at confirmation: the best shot (0.5) and the next (0.4); then the budget is spent
    obs = h.rec.end(h.tracks[0])
    mean = unit(0) + unit(100)  # later, better shots without embeddings do not push the embedded ones out
    assert np.allclose(obs.vector(), mean / np.linalg.norm(mean), atol=1e-6)
    assert obs.quality.score == pytest.approx(0.5) and obs.best_ts == pytest.approx(10.2)


def test_mean_shots_with_one_embedded_shot_is_that_shot():
    h = Harness(mean_shots=2)
    for i, q in enumerate([0.5, 0.1]):
        h.see(0, 1, shot(q), float(i))
    obs = h.rec.end(h.tracks[0])
    assert h.embedded == 1 and np.allclose(obs.vector(), unit(0))
