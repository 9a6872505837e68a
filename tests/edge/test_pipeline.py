"""The camera pipeline: wiring with drawn faces and a stand-in engine, then the real models on real clips."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from revisit.edge.capture import Frame, iter_file_frames
from revisit.edge.config import CameraConfig, EdgeConfig
from revisit.edge.pipeline import CameraPipeline, NaivePipeline
from revisit.shared.align import align_face
from revisit.shared.quality import assess
from revisit.shared.schema import Observation, decode, encode
from tests.edge.conftest import make_face

W, H = 320, 240
SIZE = 64  # drawn face side


class FakeEngine:
    """Finds drawn faces (pixels with red == 255); a face's identity is its blue level / 50, which the
    embedder turns into a one-hot vector. Alignment and quality are the real ones."""

    recognizer_id = "fake@1"

    def __init__(self) -> None:
        self.embedder = self
        self.embedded = 0

    def detect(self, image: np.ndarray):
        mask = (image[:, :, 2] == 255).astype(np.uint8)
        count, _, boxes, _ = cv2.connectedComponentsWithStats(mask)
        return [make_face(x, y, x + w, y + h) for x, y, w, h, area in boxes[1:count] if area > 100]

    def complete(self, image, faces, embed=True):
        for face in faces:
            face.crop = align_face(image, face.landmarks)
            face.quality = assess(face.score, face.box, face.landmarks, face.crop)
        return faces

    def embed(self, crops):
        self.embedded += len(crops)
        out = np.zeros((len(crops), 8), np.float32)
        for row, crop in zip(out, crops, strict=True):
            row[int(round(float(np.median(crop[40:70, 40:70, 0])) / 50))] = 1.0
        return out


def draw(people: list[tuple[int, float, float]], seed: int = 0) -> np.ndarray:
    """A frame with textured faces: (identity, x, y) of each face's top-left corner."""
    rng = np.random.default_rng(seed)
    image = np.full((H, W, 3), 40, np.uint8)
    for identity, x, y in people:
        x, y = int(x), int(y)
        image[y : y + SIZE, x : x + SIZE, 0] = 50 * identity
        image[y : y + SIZE, x : x + SIZE, 1] = rng.integers(0, 255, (SIZE, SIZE))  # texture: sharp crops
        image[y : y + SIZE, x : x + SIZE, 2] = 255
    return image


def config(**camera) -> EdgeConfig:
    return EdgeConfig(site="s", device="d", cameras=[CameraConfig(id="cam", source="x.mp4", **camera)])


def run(pipeline: CameraPipeline, frames: list[np.ndarray], t0: float = 1000.0, flush: bool = True):
    out = []
    for i, image in enumerate(frames):
        out += pipeline.process(Frame("cam", image, t0 + 0.2 * i, 0.2 * i, i))
    if flush:
        out += pipeline.flush()
    return out


def walk(identity: int, n: int, x0: float = 20, y: float = 60, vx: float = 8) -> list[list[tuple[int, float, float]]]:
    return [[(identity, x0 + vx * i, y)] for i in range(n)]


def test_one_person_one_observation():
    engine = FakeEngine()
    pipe = CameraPipeline(config().cameras[0], config(), engine)
    scenes = walk(1, 15) + [[]] * 15 + [[(2, 200, 100)]] * 20  # walks by; empty 3 s; stands still 4 s
    obs = run(pipe, [draw(p, seed=i if p and p[0][0] == 1 else 0) for i, p in enumerate(scenes)])
    s = pipe.stats
    assert [o.track_id for o in obs] == [1, 2]
    assert [int(np.argmax(o.vector())) for o in obs] == [1, 2]
    assert s.tracks_started == 2 and s.embed_calls == 4 == engine.embedded  # two shots a track (mean_shots = 2)
    assert s.tracks_published == 2 and s.observations == 2 and s.tracks_unembeddable == 0
    assert s.frames_analyzed == 50 and s.motion_skipped > 15  # the empty and the still scenes
    assert s.detector_calls == 50 - s.motion_skipped
    assert obs[0].frames_seen == 15 and obs[0].first_ts == 1000.0 and obs[0].last_ts == pytest.approx(1002.8)
    assert obs[1].frames_seen < 20  # standing still: detected every idle_detect_s only
    assert all(o.co_tracks == () for o in obs)
    assert len(s.detect_ms) == s.detector_calls and len(s.embed_ms) == 2  # a track's two shots: one call
    assert set(s.latencies()) == {"detect", "track", "quality", "embed"}
    assert s.counters()["embed_calls"] == 4 and "detect_ms" not in s.counters()


def test_ended_track_is_published_after_max_age():
    pipe = CameraPipeline(config().cameras[0], config(), FakeEngine())
    frames = [draw(p, seed=i) for i, p in enumerate(walk(1, 5))] + [draw([])] * 12
    obs = run(pipe, frames, flush=False)
    assert len(obs) == 1 and obs[0].last_ts == pytest.approx(1000.8)
    assert pipe.flush() == []


def test_people_together_are_co_tracks_and_annotated():
    engine = FakeEngine()
    pipe = CameraPipeline(config().cameras[0], config(), engine)
    frames = [draw([(1, 10 + 4 * i, 40), (3, 220 - 4 * i, 120)], seed=i) for i in range(10)]
    obs = run(pipe, frames, flush=False)
    assert obs == []
    shown = pipe.annotate(frames[-1])
    green = (shown[:, :, 0] == 0) & (shown[:, :, 1] == 255) & (shown[:, :, 2] == 0)
    assert green.sum() > 4 * SIZE and not np.shares_memory(shown, frames[-1])
    half = pipe.annotate(cv2.resize(frames[-1], (W // 2, H // 2)))  # boxes scale to a smaller view
    assert ((half[:, :, 1] == 255) & (half[:, :, 2] == 0)).any()
    obs = pipe.flush()
    assert sorted((o.track_id, o.co_tracks) for o in obs) == [(1, (2,)), (2, (1,))]
    assert pipe.annotate(frames[-1]).tobytes() == frames[-1].tobytes()  # no tracks left: nothing drawn


def test_dead_zones_and_small_faces():
    left = [[(0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0)]]
    pipe = CameraPipeline(config(dead_zones=left).cameras[0], config(dead_zones=left), FakeEngine())
    run(pipe, [draw(p, seed=i) for i, p in enumerate(walk(1, 8, x0=10, vx=2))])
    assert pipe.stats.faces_in_dead_zones == pipe.stats.faces_detected > 0 and pipe.stats.tracks_started == 0
    big = config(min_face_px=100)  # drawn faces are 64 px: tracked, never embedded
    pipe = CameraPipeline(big.cameras[0], big, FakeEngine())
    assert run(pipe, [draw(p, seed=i) for i, p in enumerate(walk(1, 8))]) == []
    assert pipe.stats.tracks_started == 1 and pipe.stats.tracks_unembeddable == 1 and pipe.stats.embed_calls == 0


def test_naive_pipeline_embeds_every_face():
    engine = FakeEngine()
    naive = NaivePipeline(engine)
    faces = []
    for i in range(6):
        faces += naive.process(Frame("cam", draw([(1, 10, 10), (2, 150, 100)], seed=i), float(i), float(i), i))
    assert len(faces) == 12 == naive.stats.embed_calls == engine.embedded
    assert naive.stats.detector_calls == 6 and all(f.embedding is not None for f in faces)


# -- real models, real clips -------------------------------------------------------------------------------


def real_run(engine, clip, **camera):
    cfg = EdgeConfig(site="s", device="d", cameras=[CameraConfig(id="cam", source=str(clip), **camera)])
    pipe = CameraPipeline(cfg.cameras[0], cfg, engine)
    obs, last = [], None
    for frame in iter_file_frames(clip, cfg.cameras[0].fps, camera="cam"):
        obs += pipe.process(frame)
        last = frame
    return pipe, obs + pipe.flush(), last


def check_observation(obs: Observation, engine) -> None:
    assert decode(encode(obs)) == obs
    assert obs.embedding_dim == 512 and obs.recognizer_id == engine.recognizer_id
    assert np.linalg.norm(obs.vector()) == pytest.approx(1, abs=1e-3)
    crop = cv2.imdecode(np.frombuffer(obs.crop_jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert crop is not None and max(crop.shape[:2]) <= 256
    assert obs.quality.score >= 0.25


@pytest.mark.models
@pytest.mark.facedata
def test_real_clip_of_one_speaker(engine, grid_clip):
    pipe, obs, last = real_run(engine, grid_clip)
    assert len(obs) == 1, [o.track_id for o in obs]
    check_observation(obs[0], engine)
    assert obs[0].frames_seen >= 5 and obs[0].frame_size == (360, 288)
    assert pipe.stats.embed_calls == 2  # the track's best two shots (mean_shots = 2)
    assert pipe.stats.detector_calls < pipe.stats.frames_analyzed
    # a face crop of the speaker embeds close to the published embedding
    face = max(engine.analyze(last.image), key=lambda f: f.quality.score)
    assert float(face.embedding @ obs[0].vector()) > 0.5


@pytest.mark.models
@pytest.mark.facedata
@pytest.mark.slow
def test_real_crowd_clip(engine, crowd_clip):
    pipe, obs, _ = real_run(engine, crowd_clip)
    assert len(obs) >= 3
    for o in obs:
        check_observation(o, engine)
        assert o.frame_size == (1920, 1080)
    assert any(o.co_tracks for o in obs)
    assert pipe.stats.embed_calls <= 2.5 * len(obs)  # two shots a track, a re-embed now and then
    assert len({o.track_id for o in obs}) == len(obs)
