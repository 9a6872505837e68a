"""`revisit eval video` on a real clip: the JSON line, our pipeline against the naive baseline, configs."""

from __future__ import annotations

import json

import pytest

from revisit.cli import main

KEYS = {
    "frames_read",
    "frames_analyzed",
    "motion_skipped",
    "detector_calls",
    "faces_detected",
    "tracks",
    "embed_calls",
    "embeddings_per_track",
    "identities",
    "cpu_s",
    "wall_s",
    "video",
    "naive",
    "fps",
}


def eval_json(capsys, *argv: str) -> dict:
    assert main(["eval", "video", "--json", *argv]) == 0
    out = capsys.readouterr().out
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.models
@pytest.mark.facedata
def test_one_speaker_clip_ours_and_naive(capsys, models_dir, grid_clip):
    ours = eval_json(capsys, "--video", str(grid_clip), "--models", str(models_dir))
    naive = eval_json(capsys, "--video", str(grid_clip), "--models", str(models_dir), "--naive")
    for result in (ours, naive):
        assert result.keys() >= KEYS
        assert result["frames_read"] == 75 and result["video"] == str(grid_clip)
    assert ours["identities"] == 1 and ours["tracks"] >= 1
    assert ours["embeddings_per_track"] <= 2.5  # two shots a track (mean_shots = 2), a re-embed now and then
    assert ours["fps"] == 5 and not ours["naive"] and ours["frames_analyzed"] == 15
    assert ours["detector_calls"] == ours["frames_analyzed"] - ours["motion_skipped"]
    assert naive["naive"] and naive["fps"] is None
    assert naive["frames_analyzed"] == naive["detector_calls"] == 75 and naive["motion_skipped"] == 0
    assert naive["embed_calls"] >= 20 * ours["embed_calls"]
    assert naive["identities"] == 1
    for result in (ours, naive):
        assert result["cpu_s"] > 0 and result["wall_s"] > 0  # measured, not judged


@pytest.mark.models
@pytest.mark.facedata
def test_config_camera_settings_and_fps(capsys, models_dir, grid_clip, tmp_path):
    config = tmp_path / "edge.toml"
    config.write_text(
        'site = "s"\ndevice = "d"\n'
        '[[cameras]]\nid = "door"\nsource = "ignored.mp4"\nfps = 2\n'
        "dead_zones = [[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]]\n"
        '[engine.detector]\nmodel = "scrfd_500m_kps"\n'
    )
    result = eval_json(capsys, "--video", str(grid_clip), "--models", str(models_dir), "--config", str(config))
    assert result["fps"] == 2 and result["frames_analyzed"] == 6 and result["detector"] == "scrfd_500m_kps"
    assert result["faces_detected"] > 0 and result["tracks"] == 0 and result["identities"] == 0
    result = eval_json(capsys, "--video", str(grid_clip), "--models", str(models_dir), "--fps", "10")
    assert result["fps"] == 10 and result["frames_analyzed"] == 30


def test_bad_config_and_missing_video_are_clear_errors(capsys, tmp_path):
    config = tmp_path / "edge.toml"
    config.write_text("[motion]\nenabeld = false\n")
    assert main(["eval", "video", "--video", "x.mp4", "--config", str(config)]) == 2
    assert "motion.enabeld: unknown key" in capsys.readouterr().err
    config.write_text("")
    assert (
        main(
            [
                "eval",
                "video",
                "--video",
                str(tmp_path / "missing.mp4"),
                "--config",
                str(config),
                "--models",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "no such video file" in capsys.readouterr().err
