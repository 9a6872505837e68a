"""deploy/install-edge.sh from a bundle made by `revisit deploy bundle`, under a throw-away --prefix.

The bundle is a minimal one (`--no-deps`: the project's wheel, the verified models, the installer, the unit),
and the installer reuses this environment's packages (`--deps-from`) instead of a wheelhouse of dependencies:
everything else (venv, wheel install, models, identity, configuration, unit files, idempotence) is the real
path. Building a full wheelhouse needs the network and minutes; `revisit deploy bundle` without --no-deps does.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

import pytest

from revisit.deploy import DeployError, build_bundle
from revisit.edge.config import load
from revisit.pki import CertificateAuthority, device_cn, write_identity

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "install-edge.sh"
SITE_PACKAGES = sysconfig.get_paths()["purelib"]


def _can_build_offline() -> bool:
    try:
        import setuptools
        import wheel  # noqa: F401
    except ImportError:
        return False
    return int(setuptools.__version__.split(".")[0]) >= 68


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, models_dir) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "revisit-bundle.tar.gz"
    try:
        build_bundle(out, models_dir, deps=False, build_isolation=not _can_build_offline())
    except DeployError as exc:  # building the wheel fetches setuptools when this environment lacks it
        pytest.skip(f"cannot build the project's wheel here (no network for the build backend?): {exc}")
    return out


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ca")
    ca = CertificateAuthority.init(root / "ca")
    out = root / "box"
    write_identity(ca.issue("device", device_cn("s1", "box-a")), ca, out, "device")
    (out / "edge.toml").write_text('site = "s1"\ndevice = "box-a"\n[broker]\nhost = "mqtt.example.com"\nport = 8883\n')
    return out


def install(prefix: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [
        "bash",
        str(SCRIPT),
        "--prefix",
        str(prefix),
        "--python",
        sys.executable,
        "--deps-from",
        SITE_PACKAGES,
        "--no-doctor",
        *args,
    ]
    result = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})}
    )
    return result


def test_bundle_holds_wheel_models_installer_and_checksums(bundle):
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
        files = {m.name.removeprefix("revisit-bundle/") for m in tar.getmembers() if m.isfile()}
        manifest = json.load(tar.extractfile("revisit-bundle/MANIFEST.json"))
    assert "revisit-bundle/install-edge.sh" in names and "revisit-bundle/systemd/revisit-edge.service" in names
    assert any(n.startswith("revisit-bundle/wheelhouse/revisit-") and n.endswith(".whl") for n in names)
    assert "revisit-bundle/models/w600k_mbf.onnx" in names
    assert {"scrfd_2.5g_kps", "w600k_mbf"} <= set(manifest["models"])
    assert manifest["dependencies"] is False and set(manifest["files"]) == files - {"MANIFEST.json"}
    assert manifest["target"]["name"] == "this-machine" and manifest["target"]["machine"] == os.uname().machine


def test_install_twice_from_the_bundle(bundle, certs, tmp_path):
    prefix = tmp_path / "root"
    args = [
        "--bundle",
        str(bundle),
        "--certs",
        str(certs),
        "--camera",
        "door=rtsp://viewer:secret@10.0.0.5/s1",
        "--camera",
        "till=rtsp://10.0.0.6/h264",
    ]
    first = install(prefix, *args)
    assert first.returncode == 0, first.stdout + first.stderr
    config_path = prefix / "etc/revisit/edge.toml"
    config = load(config_path)
    assert (config.site, config.device, config.broker.host, config.broker.port) == (
        "s1",
        "box-a",
        "mqtt.example.com",
        8883,
    )
    assert [c.id for c in config.cameras] == ["door", "till"]
    assert config.broker.tls.key == prefix / "etc/revisit/tls/device.key"
    assert config.state_dir == prefix / "var/lib/revisit-edge" and config.state_dir.is_dir()
    assert stat.S_IMODE(config_path.stat().st_mode) == 0o640  # camera passwords
    assert stat.S_IMODE((prefix / "etc/revisit/tls/device.key").stat().st_mode) == 0o640
    assert (prefix / "etc/revisit/tls/device.pem").read_bytes() == (certs / "device.pem").read_bytes()
    # The models verify in the installed venv (which runs the installed wheel, not this checkout).
    revisit = prefix / "opt/revisit/.venv/bin/revisit"
    models = prefix / "opt/revisit/models"
    listed = subprocess.run(
        [revisit, "models", "list", "--json", "--models", models],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert {r["name"]: r["status"] for r in json.loads(listed.stdout)}["w600k_mbf"] == "verified"
    where = subprocess.run(
        [prefix / "opt/revisit/.venv/bin/python", "-c", "import revisit; print(revisit.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    assert where.startswith(str(prefix / "opt/revisit/.venv"))
    # systemd: the unit and this installation's drop-in are installed; systemctl is not run under --prefix.
    unit = prefix / "etc/systemd/system/revisit-edge.service"
    dropin = prefix / "etc/systemd/system/revisit-edge.service.d/10-install.conf"
    assert unit.read_text() == (REPO / "systemd/revisit-edge.service").read_text()
    assert f"ExecStart={revisit} edge run --config {config_path}" in dropin.read_text()
    assert "systemctl skipped (--prefix)" in first.stdout
    assert (prefix / "opt/revisit/deploy/edge.example.toml").is_file()  # the unit's Documentation=
    assert "creating virtual environment" in first.stdout

    before = {p: p.read_bytes() for p in (config_path, unit, dropin, prefix / "etc/revisit/tls/device.key")}
    second = install(prefix, *args)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "keeping the existing" in second.stdout and "virtual environment" in second.stdout
    assert "creating virtual environment" not in second.stdout
    assert "w600k_mbf.onnx: up to date" in second.stdout
    assert {p: p.read_bytes() for p in before} == before


def test_missing_flags_are_named_before_anything_is_installed(bundle, tmp_path):
    result = install(tmp_path / "root", "--bundle", str(bundle), "--site", "s1")
    assert result.returncode != 0
    assert "give --device --broker --camera ID=URL" in result.stderr
    assert not (tmp_path / "root" / "opt").exists()


def test_root_is_required_without_prefix(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("running as root: a real install would start")
    result = subprocess.run(["bash", str(SCRIPT), "--bundle", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode != 0 and "run as root" in result.stderr


@pytest.fixture
def unpacked(bundle, tmp_path) -> Path:
    """The bundle unpacked, so a test can say it was built for another target (MANIFEST.json is not hashed)."""
    with tarfile.open(bundle) as tar:
        tar.extractall(tmp_path, filter="data") if sys.version_info >= (3, 12) else tar.extractall(tmp_path)
    return tmp_path / "revisit-bundle"


def retarget(root: Path, **target) -> None:
    manifest = json.loads((root / "MANIFEST.json").read_text())
    manifest["target"].update(target)
    (root / "MANIFEST.json").write_text(json.dumps(manifest))


def fake_jetson(tmp_path: Path, release: str = "# R36 (release), REVISION: 4.3, GCID: 1, BOARD: generic") -> dict:
    path = tmp_path / "nv_tegra_release"
    path.write_text(release + "\n")
    return {"REVISIT_JETSON_RELEASE": str(path)}


def jetson_install(prefix: Path, root: Path, certs: Path, env: dict) -> subprocess.CompletedProcess:
    return install(
        prefix, "--bundle", str(root), "--certs", str(certs), "--camera", "c=rtsp://h/x", "--no-systemd", env=env
    )


def test_bundle_target_must_match_the_box(unpacked, certs, tmp_path):
    machine = os.uname().machine
    other = "aarch64" if machine == "x86_64" else "x86_64"
    retarget(unpacked, name=f"linux-{other}", machine=other)
    result = jetson_install(tmp_path / "a", unpacked, certs, {})
    assert result.returncode != 0
    assert f"the bundle is for {other} (linux-{other}) and this box is {machine}" in result.stderr
    assert f"--target linux-{machine}" in result.stderr
    retarget(unpacked, name=f"linux-{machine}", machine=machine, python="3.9")
    result = jetson_install(tmp_path / "b", unpacked, certs, {})
    assert result.returncode != 0 and "the bundle's wheels are for Python 3.9" in result.stderr
    # A Jetson bundle on a box that is no Jetson, and the other way round.
    retarget(unpacked, python=f"{sys.version_info.major}.{sys.version_info.minor}", jetpack=6, name="jetson-jp6")
    result = jetson_install(tmp_path / "c", unpacked, certs, {})
    assert result.returncode != 0 and "for a Jetson on JetPack 6 and this box is not one" in result.stderr
    retarget(unpacked, jetpack=None, name=f"linux-{machine}")
    result = jetson_install(tmp_path / "d", unpacked, certs, fake_jetson(tmp_path))
    assert result.returncode != 0 and "this box is a Jetson (JetPack 6) and the bundle" in result.stderr
    assert "--target jetson-jp6" in result.stderr
    retarget(unpacked, jetpack=7, name="jetson-jp7")
    result = jetson_install(tmp_path / "e", unpacked, certs, fake_jetson(tmp_path))
    assert result.returncode != 0 and "the bundle is for JetPack 7 and this Jetson runs JetPack 6" in result.stderr
    old = fake_jetson(tmp_path, "# R35 (release), REVISION: 5.0")
    result = jetson_install(tmp_path / "f", unpacked, certs, old)
    assert result.returncode != 0 and "JetPack 5 or older" in result.stderr
    assert not any((tmp_path / d / "opt").exists() for d in "abcdef")  # nothing installed


def test_on_a_jetson_missing_jetpack_packages_are_named_before_installing(unpacked, certs, tmp_path):
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is importable here: the engines would really be built")
    except ImportError:
        pass
    machine = os.uname().machine
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    retarget(unpacked, name="jetson-jp7", machine=machine, python=python, jetpack=7)
    prefix = tmp_path / "root"
    result = jetson_install(prefix, unpacked, certs, fake_jetson(tmp_path, "# R38 (release), REVISION: 2.0"))
    assert result.returncode != 0
    assert "Jetson L4T R38.2.0 (JetPack 7)" in result.stdout
    assert "TensorRT's Python bindings (sudo apt install python3-libnvinfer" in result.stderr
    assert "nothing was installed" in result.stderr
    assert not (prefix / "opt").exists() and not (prefix / "etc").exists()


def test_on_a_jetson_the_config_uses_tensorrt_and_a_failed_engine_build_stops_the_install(unpacked, certs, tmp_path):
    """JetPack's packages are checked with the system Python; here stand-ins for `tensorrt` and cuda-python (on
    PYTHONPATH) pass those checks, and the real engine build then fails on them: the install stops, clearly."""
    machine = os.uname().machine
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    retarget(unpacked, name="jetson-jp6", machine=machine, python=python, jetpack=6)
    fake = tmp_path / "fake-jetpack"
    fake.mkdir()
    (fake / "tensorrt.py").write_text("__version__ = '0-not-tensorrt'\n")
    (fake / "cuda" / "bindings").mkdir(parents=True)
    (fake / "cuda" / "__init__.py").write_text("")
    (fake / "cuda" / "bindings" / "__init__.py").write_text("")
    (fake / "cuda" / "bindings" / "runtime.py").write_text("def cudaGetDeviceCount():\n    return 0, 1\n")
    env = {**fake_jetson(tmp_path), "PYTHONPATH": str(fake)}
    prefix = tmp_path / "root"
    result = jetson_install(prefix, unpacked, certs, env)
    assert result.returncode != 0
    config = load(prefix / "etc/revisit/edge.toml")
    assert config.engine.backend.type == "tensorrt"
    assert config.engine.backend.cache_dir == prefix / "var/lib/revisit-edge/engines"
    assert "the TensorRT engine build failed: AttributeError" in result.stdout + result.stderr
    assert "building the TensorRT engines failed" in result.stderr
    assert "revisit deploy build-engines --config" in result.stderr
    assert not (prefix / "etc/systemd").exists()


def test_script_help_and_syntax():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    result = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--prefix DIR" in result.stdout
    bad = subprocess.run(["bash", str(SCRIPT), "--frobnicate"], capture_output=True, text=True)
    assert bad.returncode != 0 and "unknown option --frobnicate" in bad.stderr
    if shutil.which("shellcheck"):
        lint = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
        assert lint.returncode == 0, lint.stdout
