"""`revisit edge doctor` against the real parts: the production broker with enrolled certificates, a video file
camera, the real models; then each failure it must name, with its fix."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from revisit.cli import main
from revisit.edge.config import load
from revisit.edge.doctor import Check, diagnose, render
from tests.deploy.conftest import PKI
from tests.mosquitto import free_port


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("video") / "door.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    for i in range(10):
        writer.write(np.full((120, 160, 3), 20 * i, np.uint8))
    writer.release()
    return path


def write_config(
    tmp_path: Path,
    pki: PKI,
    port: int,
    camera: str,
    device: str = "s1/d1",
    ca: Path | None = None,
    site_device: str | None = None,
    extra: str = "",
) -> Path:
    ca_pem, cert, key = pki.device(device)
    site, dev = (site_device or device).split("/")
    path = tmp_path / "edge.toml"
    path.write_text(
        f'site = "{site}"\ndevice = "{dev}"\nstate_dir = "{tmp_path / "state"}"\n{extra}\n'
        f'[broker]\nhost = "localhost"\nport = {port}\n'
        f'[broker.tls]\nca = "{ca or ca_pem}"\ncert = "{cert}"\nkey = "{key}"\n'
        f'[[cameras]]\nid = "door"\nsource = "{camera}"\n'
    )
    return path


def doctor(config: Path, models: Path, capsys, *only: str) -> tuple[int, dict[str, dict]]:
    args = ["edge", "doctor", "--config", str(config), "--models", str(models), "--json", "--timeout", "5"]
    for name in only:
        args += ["--only", name]
    code = main(args)
    rows = json.loads(capsys.readouterr().out)
    return code, {r["name"]: r for r in rows}


def test_everything_passes_on_a_ready_box(pki, secure_broker, models_dir, video, tmp_path, capsys):
    config = write_config(tmp_path, pki, secure_broker.port, str(video))
    code, rows = doctor(config, models_dir, capsys)
    assert code == 0, rows
    for name in ("config", "camera door", "broker identity", "broker tls", "broker login", "models", "disk"):
        assert rows[name]["status"] in ("pass", "warn"), rows[name]
    assert rows["camera door"]["status"] == "pass" and "160x120" in rows["camera door"]["detail"]
    assert rows["broker login"]["status"] == "pass" and rows["broker tls"]["status"] == "pass"
    # This machine may or may not run an NTP client; "unknown" is an honest answer, never a failure.
    assert rows["clock"]["status"] in ("pass", "unknown")
    assert all(r["status"] != "fail" for r in rows.values())


def test_closed_camera_port_and_wrong_ca_fail_with_fixes(pki, secure_broker, models_dir, tmp_path, capsys):
    closed = f"rtsp://viewer:s3cret@127.0.0.1:{free_port()}/stream1"
    wrong_ca = pki.device("foreign")[0]  # another CA's certificate: it did not sign the broker's
    config = write_config(tmp_path, pki, secure_broker.port, closed, ca=wrong_ca)
    code, rows = doctor(config, models_dir, capsys)
    assert code == 1
    camera = rows["camera door"]
    assert camera["status"] == "fail" and "s3cret" not in camera["detail"] and "viewer:***@" in camera["detail"]
    assert "ping" in camera["fix"] and "ffprobe" in camera["fix"]
    assert rows["broker identity"]["status"] == "fail" and "different CAs" in rows["broker identity"]["fix"]
    tls = rows["broker tls"]
    assert tls["status"] == "fail" and "not trusted" in tls["detail"] and "ca.pem" in tls["fix"]
    assert "broker login" not in rows  # no point logging in without TLS
    assert rows["models"]["status"] == "pass"


def test_revoked_certificate_is_reported_by_the_handshake(pki, secure_broker, models_dir, video, tmp_path, capsys):
    config = write_config(tmp_path, pki, secure_broker.port, str(video), device="s1/gone")
    code, rows = doctor(config, models_dir, capsys, "broker")
    assert code == 1
    assert rows["broker identity"]["status"] == "pass"  # the files are fine; only the broker knows the CRL
    tls = rows["broker tls"]
    assert tls["status"] == "fail" and "certificate is revoked" in tls["detail"] and "enrol" in tls["fix"]


def test_certificate_for_another_box(pki, secure_broker, models_dir, video, tmp_path, capsys):
    config = write_config(tmp_path, pki, secure_broker.port, str(video), site_device="s1/d9")
    code, rows = doctor(config, models_dir, capsys, "broker")
    assert code == 1
    assert rows["broker identity"]["status"] == "fail"
    assert "'s1/d1'" in rows["broker identity"]["detail"] and "'s1/d9'" in rows["broker identity"]["detail"]


def test_broker_not_listening(pki, models_dir, video, tmp_path, capsys):
    config = write_config(tmp_path, pki, free_port(), str(video))
    code, rows = doctor(config, models_dir, capsys, "broker")
    assert code == 1 and "connection refused" in rows["broker tls"]["detail"]
    assert "Mosquitto running" in rows["broker tls"]["fix"]


def test_missing_models_full_disk_and_missing_engines(pki, video, tmp_path, capsys):
    empty = tmp_path / "no-models"
    empty.mkdir()
    config = write_config(tmp_path, pki, 8883, str(video), extra="[spool]\nmax_mb = 1e12\n")
    code, rows = doctor(config, empty, capsys, "models", "disk")
    assert code == 1
    assert rows["models"]["status"] == "fail" and "revisit models fetch" in rows["models"]["fix"]
    assert rows["disk"]["status"] == "fail" and "spool.max_mb" in rows["disk"]["fix"]


def test_tensorrt_engines_must_be_built(pki, models_dir, video, tmp_path):
    cache = tmp_path / "engines"
    config = load(
        write_config(
            tmp_path, pki, 8883, str(video), extra=f'[engine.backend]\ntype = "tensorrt"\ncache_dir = "{cache}"\n'
        )
    )
    rows = {r.name: r for r in diagnose(config, models_dir, only=["models"])}
    assert rows["models"].status == "pass"
    assert rows["engines"].status == "fail" and "revisit deploy build-engines" in rows["engines"].fix


def test_table_lists_fixes_for_failures():
    text = render(
        [
            Check("camera door", "pass", "ok"),
            Check("clock", "unknown", "no answer", "check it"),
            Check("disk", "fail", "full", "free space"),
        ]
    )
    assert "How to fix:" in text and "  disk: free space" in text and "  clock: check it" in text
    assert text.endswith("1 check(s) failed")


def test_doctor_is_a_subcommand_of_edge(capsys):
    with pytest.raises(SystemExit):
        main(["edge", "doctor", "--help"])
    assert "--only CHECK" in capsys.readouterr().out
